"""
The statistics of a comparison: the metric over seeds (IQM or mean) with rliable's 95% stratified-bootstrap interval,
the last evaluation of each run and the summary table built from them.
"""

import re
import statistics
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from sb3_ncdpo.compare.results import COMPARED

#: Aggregates over seeds that a comparison reports.
METRICS = ("iqm", "mean")


def iqm_or_mean(metric: str) -> Callable[[np.ndarray], float]:
    """
    :param metric: ``"iqm"`` or ``"mean"``
    :return: rliable's aggregate of that metric, from an array of scores
    """
    from rliable import metrics

    return metrics.aggregate_iqm if metric == "iqm" else metrics.aggregate_mean


def interval(scores: np.ndarray, metric: str, reps: int = 5000) -> tuple[float, float, float]:
    """
    :param scores: Final returns, one per run
    :param metric: ``"iqm"`` or ``"mean"``
    :param reps: Bootstrap repetitions
    :return: ``(point, low, high)``: the metric and its 95% stratified-bootstrap interval (rliable)
    """

    aggregate = iqm_or_mean(metric)
    points, cis = seeded_interval_estimates({"x": scores.reshape(-1, 1)}, lambda s: np.array([aggregate(s)]), reps)
    return float(points["x"][0]), float(cis["x"][0, 0]), float(cis["x"][1, 0])


def seeded_interval_estimates(
    scores: dict[str, np.ndarray], func: Callable[[np.ndarray], np.ndarray], reps: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """
    rliable's stratified bootstrap with a fixed seed, so that a report is reproducible from the same runs.

    :param scores: Scores of each algorithm, ``(runs, tasks)`` or ``(runs, tasks, points)``
    :param func: Aggregate of one algorithm's scores, an array of one value per point
    :param reps: Bootstrap repetitions
    :return: ``(points, cis)``: per algorithm, the aggregate and its 95% interval (low and high rows)
    """
    from rliable import library as rly

    with warnings.catch_warnings():
        # rliable passes its RandomState to arch, which deprecates that argument (rliable 1.2, arch 7)
        warnings.simplefilter("ignore", FutureWarning)
        return rly.get_interval_estimates(scores, func, reps=reps, random_state=np.random.RandomState(0))


def final_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """:return: The last evaluation of each run"""
    last: dict[tuple[str, str, int], dict[str, Any]] = {}
    for row in rows:
        key = (row["algo"], row["env"], row["seed"])
        if key not in last or row["timesteps"] > last[key]["timesteps"]:
            last[key] = row
    return list(last.values())


def algos_in_order(algos: set[str]) -> list[str]:
    """:return: The algorithms of :data:`COMPARED` first, then variants in natural order (``ncdpo-K2`` < ``ncdpo-K10``)"""

    def natural(name: str) -> list[Any]:
        return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]

    return [a for a in COMPARED if a in algos] + sorted(algos - set(COMPARED), key=natural)


def checkpoint_steps(rows: list[dict[str, Any]], n_columns: int) -> list[int]:
    """
    :param rows: Evaluation rows of the runs of one env
    :param n_columns: At most this many checkpoints (>= 2)
    :return: Evaluation steps that every run has, evenly spread from the first to the last, ``n_columns`` at most
    """
    if n_columns < 2:
        raise ValueError(f"n_columns must be an int >= 2, got {n_columns!r}")
    runs: dict[tuple[str, int], set[int]] = {}
    for row in rows:
        runs.setdefault((row["algo"], row["seed"]), set()).add(row["timesteps"])
    common = sorted(set.intersection(*runs.values())) if runs else []
    if len(common) <= n_columns:
        return common
    picks = np.linspace(0, len(common) - 1, n_columns).round().astype(int)
    return [common[i] for i in picks]


def checkpoint_table(rows: list[dict[str, Any]], key: str, metric: str = "iqm", n_columns: int = 5, digits: int = 2) -> str:
    """
    The metric over seeds with its 95% interval at checkpoints of training, per env and algorithm (what a fine-tuning
    benchmark reports: where each method stands at equal budgets, not only at the end).

    :param rows: Evaluation rows of finished runs
    :param key: The evaluated quantity: ``"eval_success_rate"`` or ``"eval_return_mean"``
    :param metric: ``"iqm"`` or ``"mean"``
    :param n_columns: At most this many checkpoints per env (:func:`checkpoint_steps`)
    :param digits: Decimals of the values
    :return: A markdown table per env (one row per algorithm, one column per checkpoint), separated by blank lines
    """
    label = metric.upper() if metric == "iqm" else metric
    tables = []
    for env_id in sorted({r["env"] for r in rows}):
        env_rows = [r for r in rows if r["env"] == env_id and r.get(key) is not None]
        steps = checkpoint_steps(env_rows, n_columns)
        lines = [
            f"| {env_id}: {key}, {label} [95% CI] | runs | " + " | ".join(f"{s:,} steps" for s in steps) + " |",
            "|---|---|" + "---|" * len(steps),
        ]
        for algo in algos_in_order({r["algo"] for r in env_rows}):
            cells = []
            for step in steps:
                values = np.array([r[key] for r in env_rows if r["algo"] == algo and r["timesteps"] == step])
                cells.append("{:.{d}f} [{:.{d}f}, {:.{d}f}]".format(*interval(values, metric), d=digits))
            n_runs = len({r["seed"] for r in env_rows if r["algo"] == algo})
            lines.append(f"| {algo} | {n_runs} | " + " | ".join(cells) + " |")
        tables.append("\n".join(lines))
    return "\n\n".join(tables)


def standing(point: float, low: float, high: float, other: tuple[float, float, float]) -> str:
    """
    :param point: One algorithm's metric
    :param low: Its 95% interval's lower end
    :param high: Its 95% interval's upper end
    :param other: Another algorithm's ``(point, low, high)`` at the same budget
    :return: ``"above, apart"`` / ``"below, apart"`` where the intervals do not overlap, else ``"at or above"`` or
        ``"below"`` by the metric alone
    """
    if low > other[2]:
        return "above, apart"
    if high < other[1]:
        return "below, apart"
    return "at or above" if point >= other[0] else "below"


def standings(
    rows: list[dict[str, Any]], key: str, algo: str, baselines: list[str], metric: str = "iqm", n_columns: int = 5
) -> dict[str, tuple[list[int], dict[str, list[str]]]]:
    """
    Where one algorithm stands against others at the checkpoints of :func:`checkpoint_table`, in the words of
    :func:`standing` (a fine-tuning benchmark's claim is "at or above at every checkpoint", "ahead with intervals apart").

    :param rows: Evaluation rows of finished runs
    :param key: The evaluated quantity: ``"eval_success_rate"`` or ``"eval_return_mean"``
    :param algo: The algorithm (or label) that is compared
    :param baselines: The algorithms (or labels) it is compared with; an env without any of them, or without ``algo``,
        is left out
    :param metric: ``"iqm"`` or ``"mean"``
    :param n_columns: At most this many checkpoints per env (:func:`checkpoint_steps` of the runs compared)
    :return: Per env: the checkpoints and, per baseline present there, the standing at each
    """
    result = {}
    for env_id in sorted({r["env"] for r in rows}):
        env_rows = [r for r in rows if r["env"] == env_id and r.get(key) is not None]
        present = [b for b in baselines if any(r["algo"] == b for r in env_rows)]
        if not present or not any(r["algo"] == algo for r in env_rows):
            continue
        steps = checkpoint_steps([r for r in env_rows if r["algo"] in (algo, *present)], n_columns)
        points = {
            (name, step): interval(
                np.array([r[key] for r in env_rows if r["algo"] == name and r["timesteps"] == step]), metric
            )
            for name in (algo, *present)
            for step in steps
        }
        result[env_id] = (steps, {b: [standing(*points[algo, step], points[b, step]) for step in steps] for b in present})
    return result


def versus_table(
    rows: list[dict[str, Any]], key: str, algo: str, baselines: list[str], metric: str = "iqm", n_columns: int = 5
) -> str:
    """
    :func:`standings` as markdown.

    :param rows: Evaluation rows of finished runs
    :param key: The evaluated quantity: ``"eval_success_rate"`` or ``"eval_return_mean"``
    :param algo: The algorithm (or label) that is compared
    :param baselines: The algorithms (or labels) it is compared with
    :param metric: ``"iqm"`` or ``"mean"``
    :param n_columns: At most this many checkpoints per env
    :return: A markdown table per env (one row per baseline, one column per checkpoint), separated by blank lines
    """
    return standings_markdown(standings(rows, key, algo, baselines, metric, n_columns), key, algo, metric)


def standings_markdown(
    found: dict[str, tuple[list[int], dict[str, list[str]]]], key: str, algo: str, metric: str = "iqm"
) -> str:
    """
    Standings already computed by :func:`standings` as markdown (a report that also reads them computes them once).

    :param found: What :func:`standings` returned
    :param key: The evaluated quantity it was computed on
    :param algo: The algorithm (or label) it compared
    :param metric: The metric it used
    :return: A markdown table per env (one row per baseline, one column per checkpoint), separated by blank lines
    """
    label = metric.upper() if metric == "iqm" else metric
    tables = []
    for env_id, (steps, by_baseline) in found.items():
        lines = [
            f"| {env_id}: {algo} vs ({key}, {label}, 95% CIs) | " + " | ".join(f"{s:,} steps" for s in steps) + " |",
            "|---|" + "---|" * len(steps),
            *(f"| {baseline} | " + " | ".join(words) + " |" for baseline, words in by_baseline.items()),
        ]
        tables.append("\n".join(lines))
    return "\n\n".join(tables)


def summary_table(rows: list[dict[str, Any]], metric: str = "iqm") -> str:
    """
    :param rows: Evaluation rows of finished runs
    :param metric: ``"iqm"`` or ``"mean"``
    :return: A markdown table: final return (metric with 95% CI), its ratio to PPO, the final success rate (where an env
        reports success), fps and its ratio, peak memory
    """
    label = metric.upper() if metric == "iqm" else metric
    finals = final_rows(rows)
    # a success column where some env reports success (info["is_success"]: Meta-World's ids, goal-conditioned envs)
    with_success = any(r.get("eval_success_rate") is not None for r in finals)
    success_header = f" final success rate, {label} [95% CI] |" if with_success else ""
    lines = [
        f"| env | algo | runs | timesteps | final return, {label} [95% CI] | {label} / PPO |{success_header} fps (median) "
        "| fps / PPO | peak RSS MB (median) |",
        "|---|---|---|---|---|---|---|---|---|" + ("---|" if with_success else ""),
    ]
    for env_id in sorted({r["env"] for r in finals}):
        by_algo = {
            algo: [r for r in finals if r["env"] == env_id and r["algo"] == algo]
            for algo in algos_in_order({r["algo"] for r in finals if r["env"] == env_id})
        }
        points = {a: interval(np.array([r["eval_return_mean"] for r in runs]), metric) for a, runs in by_algo.items()}
        fps = {a: statistics.median(r["fps"] for r in runs) for a, runs in by_algo.items()}
        # Returns of order one (GRF's, per agent) need two decimals to be told apart.
        digits = 1 if max(abs(v) for values in points.values() for v in values) >= 10 else 2
        for algo, runs in by_algo.items():
            point, low, high = points[algo]
            ratio, fps_ratio = "n/a", "n/a"
            if "ppo" in points:
                reference = points["ppo"][0]
                # A ratio of returns means something only when both are positive (Pendulum's are negative).
                ratio = f"{point / reference:.2f}" if point > 0 and reference > 0 else "n/a (returns ≤ 0)"
                fps_ratio = f"{fps[algo] / fps['ppo']:.2f}"
            timesteps = "/".join(str(t) for t in sorted({r["timesteps"] for r in runs}))
            memory = statistics.median(r["peak_rss_mb"] for r in runs)
            success = ""
            if with_success:
                rates = [r["eval_success_rate"] for r in runs if r.get("eval_success_rate") is not None]
                success = " {:.2f} [{:.2f}, {:.2f}] |".format(*interval(np.array(rates), metric)) if rates else " - |"
            lines.append(
                f"| {env_id} | {algo} | {len(runs)} | {timesteps} | {point:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}] "
                f"| {ratio} |{success}"
                f" {fps[algo]:.0f} | {fps_ratio} | {memory:.0f} |"
            )
    return "\n".join(lines)
