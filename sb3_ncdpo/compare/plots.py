"""
Learning curves of a comparison, the metric over seeds with 95% bootstrap bands (rliable): per env, one PNG against env
steps and one against wall-clock training time, of the success rate where every run of the env reports one (a
manipulation benchmark's metric), else of the return.
"""

from pathlib import Path
from typing import Any

import numpy as np

from sb3_ncdpo.common.atomic import atomic_file
from sb3_ncdpo.compare.results import file_stem
from sb3_ncdpo.compare.stats import algos_in_order, iqm_or_mean, seeded_interval_estimates


def plot_curves(rows: list[dict[str, Any]], out: Path, metric: str = "iqm") -> list[Path]:
    """
    Per env, ``curves_<env>.png``: the metric over seeds of the evaluated quantity (:func:`curve_key`) vs env steps,
    with 95% bootstrap bands (rliable), at the evaluation points that every run of the env has; and
    ``curves_<env>_wallclock.png``: the same against training time (evaluation excluded), each algorithm on its own
    time grid (:func:`wallclock_scores`).

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
        key = curve_key(env_rows)
        quantity = "success rate" if key == "eval_success_rate" else "return"
        ylabel = f"evaluation {quantity} ({metric.upper() if metric == 'iqm' else metric}, 95% CI)"
        scores = {}
        for algo in algos_in_order({r["algo"] for r in env_rows}):
            table = {(r["seed"], r["timesteps"]): r[key] for r in env_rows if r["algo"] == algo}
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
            ylabel=ylabel,
            ax=ax,
            labelsize="large",
            ticklabelsize="large",
        )
        counts = {len(s) for s in scores.values()}
        per_algo = ", ".join(f"{a}: {len(s)}" for a, s in scores.items())
        ax.set_title(f"{env_id} ({counts.pop()} seeds each)" if len(counts) == 1 else f"{env_id} (seeds: {per_algo})")
        ax.legend()
        paths.append(_save(fig, out / f"curves_{file_stem(env_id)}.png"))
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for algo in scores:
            minutes, timed = wallclock_scores([r for r in env_rows if r["algo"] == algo], key=key)
            if len(minutes) == 0:
                continue
            (point,), (ci,) = (
                d.values()
                for d in seeded_interval_estimates(
                    {algo: timed}, lambda s: np.array([aggregate(s[..., i]) for i in range(s.shape[-1])]), reps=2000
                )
            )
            (line,) = ax.plot(minutes, point, label=algo, linewidth=2)
            ax.fill_between(minutes, ci[0], ci[1], color=line.get_color(), alpha=0.2)
        ax.set_xlabel("training time (minutes, one CPU thread per run; evaluation excluded)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{env_id}, against wall-clock")
        ax.legend()
        paths.append(_save(fig, out / f"curves_{file_stem(env_id)}_wallclock.png"))
    return paths


def curve_key(rows: list[dict[str, Any]]) -> str:
    """
    :param rows: Evaluation rows of the runs of one env
    :return: ``"eval_success_rate"`` where every row has a success rate (Meta-World's ids, goal-conditioned envs),
        else ``"eval_return_mean"``
    """
    with_success = bool(rows) and all(r.get("eval_success_rate") is not None for r in rows)
    return "eval_success_rate" if with_success else "eval_return_mean"


def wallclock_scores(
    rows: list[dict[str, Any]], n_points: int = 50, key: str = "eval_return_mean"
) -> tuple[np.ndarray, np.ndarray]:
    """
    Put the runs of one algorithm on one time grid: at each time, a run's score is its latest evaluation made by then
    (after its end, its final one). The grid starts when every run has been evaluated once and ends with the slowest
    run's end, so no point needs a score from before a run's first evaluation.

    :param rows: Evaluation rows of one algorithm's runs on one env (``seed``, ``wall_time_s`` and ``key``)
    :param n_points: Points of the grid
    :param key: The evaluated quantity
    :return: ``(minutes, scores)``: the grid, and the scores with shape ``(runs, 1 task, points)`` (empty if the runs
        share no time)
    """
    by_seed: dict[int, list[tuple[float, float]]] = {}
    for r in rows:
        by_seed.setdefault(r["seed"], []).append((r["wall_time_s"], r[key]))
    curves = [sorted(points) for _, points in sorted(by_seed.items())]
    if not curves:
        return np.array([]), np.zeros((0, 1, 0))
    start, end = max(c[0][0] for c in curves), max(c[-1][0] for c in curves)
    grid = np.linspace(start, end, n_points)
    scores = []
    for curve in curves:
        times, values = np.array([t for t, _ in curve]), np.array([v for _, v in curve])
        scores.append([values[np.searchsorted(times, grid, side="right") - 1]])
    return grid / 60, np.array(scores)


def _save(fig: Any, path: Path) -> Path:
    """Write ``fig`` to ``path`` atomically, close it, return ``path``."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
