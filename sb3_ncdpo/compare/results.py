"""
The runs of a comparison and their files: :class:`RunSpec` names a run, a finished run lies in ``<out>/runs`` as
``<run>.csv`` (its evaluations, :data:`FIELDS`), ``<run>.progress.csv`` (its training log, SB3's ``progress.csv``:
every logger key at every update) and ``<run>.json`` (its settings, written last);
:func:`load_rows` reads finished runs back (all of them, or those asked for) and :func:`missing_runs` names the runs
asked for that are not finished.
"""

import csv
import json
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sb3_ncdpo.common.atomic import atomic_file

#: Algorithms that ``compare`` can run, by name; each needs a packaged ``hyperparams/<name>.yml``.
COMPARED = ("ncdpo", "dppo", "ppo")
#: Training-log keys that :func:`training_summary` takes the median of, over the updates that trained the policy
UPDATE_KEYS = (
    "train/approx_kl",
    "train/clip_fraction",
    "train/explained_variance",
    "train/std",
    "train/eps_grad_ratio_first_last",
)
#: Training-log keys that :func:`training_summary` averages over the last third of the iterations
LATE_KEYS = ("rollout/success_rate", "rollout/ep_rew_mean")
#: The columns of a run's evaluations; ``eval_success_rate`` is empty where the env reports no success (``is_success``)
FIELDS = [
    "algo",
    "env",
    "seed",
    "timesteps",
    "eval_return_mean",
    "eval_return_std",
    "eval_success_rate",
    "wall_time_s",
    "fps",
    "peak_rss_mb",
]


@dataclass(frozen=True)
class RunSpec:
    """
    One training run of a comparison.

    :param algo: Algorithm name (one of :data:`COMPARED`)
    :param env: Environment id (an entry of the algorithm's hyperparameter file)
    :param seed: Seed of the model, the training env and (plus 10,000) the evaluation env
    :param timesteps: Training budget in env steps
    :param eval_freq: Env steps between two evaluations
    :param n_eval_episodes: Episodes per evaluation
    :param n_threads: Torch threads of the run
    :param policy_kwargs: Overrides of the entry's ``policy_kwargs``, a Python dict expression (``nn`` and ``th``
        in scope, as in rl-zoo3's files); ``""`` for none
    :param label: Name of the variant in the results (default: ``algo``), so that variants of one algorithm (e.g.
        several K) sit side by side in one comparison
    :param pretrained: Fine-tune from pre-trained folders (``sb3-ncdpo pretrain``): a path template where ``{env}``,
        ``{algo}`` and ``{policy}`` (``gaussian`` for PPO, ``diffusion`` otherwise) are filled in; the run then uses
        the packaged fine-tuning hyperparameters (``<algo>_finetune.yml``) and is also evaluated at step 0.
        ``""``: train from scratch
    :param hyperparams: Which values the run starts from (:data:`~sb3_ncdpo.compare.runs.HYPERPARAMS`): the
        algorithm's packaged entry, PPO's packaged entry, or SB3's defaults
    :param algo_kwargs: Overrides of the entry's algorithm arguments, a dict expression like ``policy_kwargs``
    """

    algo: str
    env: str
    seed: int
    timesteps: int
    eval_freq: int
    n_eval_episodes: int
    n_threads: int = 1
    policy_kwargs: str = ""
    label: str = ""
    pretrained: str = ""
    hyperparams: str = "packaged"
    algo_kwargs: str = ""

    @property
    def variant(self) -> str:
        """The run's name in the results: its label, or its algorithm."""
        return self.label or self.algo

    @property
    def name(self) -> str:
        """File stem of the run in ``<out>/runs``."""
        return f"{self.variant}__{file_stem(self.env)}__seed{self.seed}"


def file_stem(env_id: str) -> str:
    """:return: ``env_id`` usable in a file name (a namespaced id such as ``sb3_ncdpo/simple_spread_v3`` has a ``/``)"""
    return env_id.replace("/", "-")


def write_atomically(path: Path, text: str) -> None:
    """
    Write ``text`` to ``path`` atomically (:func:`~sb3_ncdpo.common.atomic.atomic_file`), so that ``path`` is never
    half-written.

    :param path: File to write
    :param text: Its content
    """
    with atomic_file(path) as tmp:
        tmp.write_text(text)


def to_csv(rows: list[dict[str, Any]]) -> str:
    """
    :param rows: Evaluation rows, with the keys :data:`FIELDS`
    :return: The rows as CSV text, with a header
    """
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def finished_specs(out: Path, specs: Iterable[RunSpec] | None = None) -> dict[str, RunSpec]:
    """
    :param out: Output directory of the comparison (it may not exist)
    :param specs: Only these runs, each counted when it is finished with the same settings; ``None``: every run
    :return: The finished runs in ``out`` (those with their JSON written), by name
    """
    done = {}
    for path in sorted((out / "runs").glob("*.json")):
        spec = RunSpec(**json.loads(path.read_text()))
        if (out / "runs" / f"{spec.name}.csv").exists():
            done[spec.name] = spec
    if specs is None:
        return done
    return {spec.name: spec for spec in specs if done.get(spec.name) == spec}


def missing_runs(out: Path, specs: Iterable[RunSpec]) -> list[tuple[RunSpec, RunSpec | None]]:
    """
    :param out: Output directory of the comparison (it may not exist)
    :param specs: The runs asked for
    :return: Each run of ``specs`` (once, in order) that is not finished in ``out`` with the same settings, with the
        finished run of the same name and other settings, or ``None`` where there is none
    """
    done = finished_specs(out)
    return [(spec, done.get(spec.name)) for spec in dict.fromkeys(specs) if done.get(spec.name) != spec]


def load_rows(out: Path, specs: Iterable[RunSpec] | None = None) -> list[dict[str, Any]]:
    """
    :param out: Output directory of the comparison
    :param specs: Read only these runs (those of them finished with the same settings); ``None``: every finished run
    :return: The evaluation rows of the finished runs in ``out``, typed (``eval_success_rate``: ``None`` where empty)
    """
    rows = []
    for spec in finished_specs(out, specs).values():
        with open(out / "runs" / f"{spec.name}.csv", newline="") as file:
            for row in csv.DictReader(file):
                typed: dict[str, Any] = {k: float(v) for k, v in row.items() if k not in ("algo", "env", "eval_success_rate")}
                typed.update(algo=row["algo"], env=row["env"], seed=int(row["seed"]), timesteps=int(row["timesteps"]))
                success = row.get("eval_success_rate") or ""  # files written before the column, or no success reported
                typed["eval_success_rate"] = float(success) if success else None
                rows.append(typed)
    return rows


def training_log(out: Path, spec: RunSpec) -> list[dict[str, str]]:
    """
    :param out: Output directory of the comparison
    :param spec: A finished run of it
    :return: The rows of the run's training log (SB3's ``progress.csv``); ``[]`` for a run without one (runs finished
        before compare kept it)
    """
    path = out / "runs" / f"{spec.name}.progress.csv"
    if not path.exists():
        return []
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def training_summary(out: Path, spec: RunSpec) -> dict[str, float]:
    """
    What a run's training log says of its updates, for finding out why a method falls short: the medians of
    :data:`UPDATE_KEYS` over the updates that trained the policy (those that log ``train/approx_kl``: not the critic's
    warm-up) and the means of :data:`LATE_KEYS` over the last third of the iterations (the stochastic rollouts).

    :param out: Output directory of the comparison
    :param spec: A finished run of it
    :return: Each key the log has, with its value; ``{}`` for a run without a training log (runs finished before
        compare kept one)
    """
    log = training_log(out, spec)
    summary = {}
    updates = [row for row in log if row.get("train/approx_kl")]
    for key in UPDATE_KEYS:
        values = [float(row[key]) for row in updates if row.get(key)]
        if values:
            summary[key] = statistics.median(values)
    for key in LATE_KEYS:
        values = [float(row[key]) for row in log if row.get(key)]
        if values:
            summary[key] = statistics.fmean(values[-max(1, len(values) // 3) :])
    return summary
