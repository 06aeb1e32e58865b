"""
The report of a comparison, written from its finished runs (every one in the folder, or exactly those asked for):
``results.csv``, the curve PNGs and ``summary.md`` (the summary table, and the commands that reproduce every run in it).
"""

from collections.abc import Sequence
from pathlib import Path

from sb3_ncdpo.compare.plots import plot_curves
from sb3_ncdpo.compare.results import RunSpec, finished_specs, load_rows, to_csv, write_atomically
from sb3_ncdpo.compare.stats import algos_in_order, final_rows, summary_table


def commands(out: Path, specs: Sequence[RunSpec] | None = None) -> list[str]:
    """
    :param out: Output directory of the comparison
    :param specs: Only these runs (those of them finished with the same settings); ``None``: every finished run
    :return: Commands that re-run those finished runs of ``out``, one per group of shared settings
    """
    groups: dict[tuple[int, int, int, int, str, str, str, str, str], list[RunSpec]] = {}
    for spec in finished_specs(out, specs).values():
        key = (
            spec.timesteps,
            spec.eval_freq,
            spec.n_eval_episodes,
            spec.n_threads,
            spec.policy_kwargs,
            spec.label,
            spec.pretrained,
            spec.hyperparams,
            spec.algo_kwargs,
        )
        groups.setdefault(key, []).append(spec)
    lines = []
    for key, specs in sorted(groups.items()):
        timesteps, eval_freq, n_eval_episodes, n_threads, policy_kwargs, label, pretrained, hyperparams, algo_kwargs = key
        envs = " ".join(f"--env {e}" for e in sorted({s.env for s in specs}))
        algos = " ".join(algos_in_order({s.algo for s in specs}))
        seeds = sorted({s.seed for s in specs})
        seed_args = f"--seeds {len(seeds)}" + (f" --first-seed {seeds[0]}" if seeds[0] else "")
        if seeds != list(range(seeds[0], seeds[0] + len(seeds))):
            seed_args = f"--seed-list {' '.join(map(str, seeds))}"
        lines.append(
            f"sb3-ncdpo compare {envs} --algos {algos} {seed_args} --timesteps {timesteps} --eval-freq {eval_freq} "
            f"--n-eval-episodes {n_eval_episodes} --threads {n_threads} --out {out}"
            + (f' --policy-kwargs "{policy_kwargs}"' if policy_kwargs else "")
            + (f" --label {label}" if label else "")
            + (f' --pretrained "{pretrained}"' if pretrained else "")
            + (f" --hyperparams {hyperparams}" if hyperparams != "packaged" else "")
            + (f' --algo-kwargs "{algo_kwargs}"' if algo_kwargs else "")
        )
    return lines


def report(out: Path, metric: str = "iqm", specs: Sequence[RunSpec] | None = None) -> str:
    """
    Write ``results.csv``, the curve PNGs and ``summary.md`` from the finished runs of ``out``: every one of them, or
    only those of ``specs`` (the other runs are left out of the report; their files stay as they are).

    :param out: Output directory of the comparison
    :param metric: Aggregate over seeds, one of :data:`~sb3_ncdpo.compare.stats.METRICS`
    :param specs: Report only these runs (those of them finished with the same settings); ``None``: every finished
        run of ``out``
    :return: The summary table
    """
    rows = load_rows(out, specs)
    if not rows:
        return "no finished run"
    rows.sort(key=lambda r: (r["env"], r["algo"], r["seed"], r["timesteps"]))
    write_atomically(out / "results.csv", to_csv(rows))
    table = summary_table(rows, metric)
    images = plot_curves(rows, out, metric)
    cpu_hours = sum(r["wall_time_s"] for r in final_rows(rows)) / 3600
    text = (
        f"{table}\n\nFinal return: deterministic evaluation at the end of training; fps: env steps per second of "
        "training (evaluation time excluded). Learning curves: "
        + ", ".join(f"[{p.name}]({p.name})" for p in images)
        + f".\n\nReproduce (about {cpu_hours:.1f} CPU-hours of training; `--n-jobs` runs in parallel):\n\n"
        + "\n".join(f"    {c}" for c in commands(out, specs))
        + "\n"
    )
    write_atomically(out / "summary.md", text)
    return table
