"""
``sb3-ncdpo compare``: NCDPO against SB3 PPO (or any algorithm of :data:`COMPARED`) at equal budgets.

One module per job, each importing only those listed before it:

- :mod:`~sb3_ncdpo.compare.results`: what a run is (:class:`RunSpec`) and its files in ``<out>/runs``
- :mod:`~sb3_ncdpo.compare.runs`: building a model, training and evaluating runs (:func:`run_one`, :func:`execute`)
- :mod:`~sb3_ncdpo.compare.stats`: the metric over seeds, its bootstrap interval and the summary table
- :mod:`~sb3_ncdpo.compare.plots`: the learning curves
- :mod:`~sb3_ncdpo.compare.reporting`: ``results.csv``, the curves and ``summary.md`` from the finished runs
- :mod:`~sb3_ncdpo.compare.cli`: the command line (:func:`parse_args`, :func:`main`), where the command is described
"""

from sb3_ncdpo.compare.cli import main, parse_args
from sb3_ncdpo.compare.plots import plot_curves
from sb3_ncdpo.compare.reporting import commands, report
from sb3_ncdpo.compare.results import (
    COMPARED,
    FIELDS,
    RunSpec,
    file_stem,
    finished_specs,
    load_rows,
    missing_runs,
    training_summary,
)
from sb3_ncdpo.compare.runs import Failure, algorithm_class, execute, make_model, plan, pretrained_path, run_one
from sb3_ncdpo.compare.stats import (
    METRICS,
    checkpoint_table,
    final_rows,
    interval,
    standings,
    standings_markdown,
    summary_table,
    versus_table,
)

__all__ = [
    "COMPARED",
    "FIELDS",
    "METRICS",
    "Failure",
    "RunSpec",
    "algorithm_class",
    "checkpoint_table",
    "commands",
    "execute",
    "file_stem",
    "final_rows",
    "finished_specs",
    "interval",
    "load_rows",
    "main",
    "make_model",
    "missing_runs",
    "parse_args",
    "plan",
    "plot_curves",
    "pretrained_path",
    "report",
    "run_one",
    "standings",
    "standings_markdown",
    "summary_table",
    "training_summary",
    "versus_table",
]
