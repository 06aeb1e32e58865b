"""Learning curves of a comparison: one PNG per env, the metric over seeds with 95% bootstrap bands (rliable)."""

from pathlib import Path
from typing import Any

import numpy as np

from sb3_ncdpo.common.atomic import atomic_file
from sb3_ncdpo.compare.results import file_stem
from sb3_ncdpo.compare.stats import algos_in_order, iqm_or_mean, seeded_interval_estimates


def plot_curves(rows: list[dict[str, Any]], out: Path, metric: str = "iqm") -> list[Path]:
    """
    One PNG per env: the metric over seeds of the evaluation return vs env steps, with 95% bootstrap bands (rliable).
    Only evaluation points that every run of the env has are drawn.

    :param rows: Evaluation rows of finished runs
    :param out: Output directory
    :param metric: ``"iqm"`` or ``"mean"``
    :return: Paths of the written images
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rliable import plot_utils

    aggregate = iqm_or_mean(metric)
    paths = []
    for env_id in sorted({r["env"] for r in rows}):
        env_rows = [r for r in rows if r["env"] == env_id]
        runs = sorted({(r["algo"], r["seed"]) for r in env_rows})
        steps = sorted(set.intersection(*({r["timesteps"] for r in env_rows if (r["algo"], r["seed"]) == k} for k in runs)))
        if not steps:
            continue
        scores = {}
        for algo in algos_in_order({r["algo"] for r in env_rows}):
            table = {(r["seed"], r["timesteps"]): r["eval_return_mean"] for r in env_rows if r["algo"] == algo}
            seeds = sorted({seed for seed, _ in table})
            scores[algo] = np.array([[[table[(seed, t)] for t in steps]] for seed in seeds])  # (runs, 1 task, points)
        points, cis = seeded_interval_estimates(
            scores, lambda s: np.array([aggregate(s[..., i]) for i in range(s.shape[-1])]), reps=2000
        )
        fig, ax = plt.subplots(figsize=(7, 4.5))
        plot_utils.plot_sample_efficiency_curve(
            np.array(steps),
            points,
            cis,
            algorithms=list(scores),
            xlabel="env steps",
            ylabel=f"evaluation return ({metric.upper() if metric == 'iqm' else metric}, 95% CI)",
            ax=ax,
            labelsize="large",
            ticklabelsize="large",
        )
        counts = {len(s) for s in scores.values()}
        per_algo = ", ".join(f"{a}: {len(s)}" for a, s in scores.items())
        ax.set_title(f"{env_id} ({counts.pop()} seeds each)" if len(counts) == 1 else f"{env_id} (seeds: {per_algo})")
        ax.legend()
        fig.tight_layout()
        path = out / f"curves_{file_stem(env_id)}.png"
        with atomic_file(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        plt.close(fig)
        paths.append(path)
    return paths
