"""
The tuning runs of the Meta-World fine-tuning benchmark, scored: per variant (``<algo>_lr<rate>``, ...), the mean
deterministic success rate over the last ``--last`` evaluations of every tuning task (with 20 episodes an evaluation,
one evaluation's rate moves by ~0.1 from episode draws alone: the mean over several is the score), beside the clone's
(step 0); and from each run's training log (``runs/<run>.progress.csv``) the medians over its policy updates of
``train/approx_kl``, ``train/clip_fraction`` and ``train/explained_variance``, with the stochastic rollouts' success
rate over the run's last third. Prints markdown tables and writes them to ``<out>/tuning.md``.

    python benchmarks/metaworld_tuning_table.py --out benchmarks/results/metaworld_tuning --last 3
"""

import argparse
import csv
from collections import defaultdict
from pathlib import Path

import numpy as np

from sb3_ncdpo.compare import finished_specs, load_rows

#: Training-log keys summarised by their median over the policy updates
DIAGNOSTICS = ("train/approx_kl", "train/clip_fraction", "train/explained_variance")


def diagnostics(progress: Path) -> list[str]:
    """
    :param progress: A run's ``progress.csv``
    :return: The medians of :data:`DIAGNOSTICS` over the updates that trained the policy (those that log
        ``train/approx_kl``: not the critic's warm-up), then the mean rollout success rate over the last third of the
        run's iterations, formatted; ``-`` where the log is missing
    """
    if not progress.exists():
        return ["-"] * (len(DIAGNOSTICS) + 1)
    with progress.open() as f:
        log = list(csv.DictReader(f))
    updates = [row for row in log if row.get("train/approx_kl")]
    cells = [f"{np.median([float(row[key]) for row in updates]):.3g}" if updates else "-" for key in DIAGNOSTICS]
    rollouts = [float(row["rollout/success_rate"]) for row in log if row.get("rollout/success_rate")]
    cells.append(f"{np.mean(rollouts[-max(1, len(rollouts) // 3) :]):.2f}" if rollouts else "-")
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="the tuning runs' compare folder")
    parser.add_argument("--last", type=int, default=3, help="evaluations at the end of each run that make its score")
    args = parser.parse_args()
    if not (args.out / "runs").is_dir():
        parser.error(f"--out: {args.out} holds no compare runs (no runs/ folder)")
    rows = load_rows(args.out)
    envs = sorted({r["env"] for r in rows})
    by_run: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in rows:
        by_run[(row["algo"], row["env"])].append(row)
    lines = [
        "| variant | " + " | ".join(f"{e.split('metaworld-')[-1]}: clone / last {args.last}" for e in envs) + " | score |",
        "|---|" + "---|" * (len(envs) + 1),
    ]
    for variant in sorted({algo for algo, _ in by_run}):
        cells, scores = [], []
        for env in envs:
            run = sorted(by_run.get((variant, env), []), key=lambda r: r["timesteps"])
            if not run:
                cells.append("-")
                continue
            last = [r["eval_success_rate"] for r in run[-args.last :]]
            scores += last
            cells.append(f"{run[0]['eval_success_rate']:.2f} / {' '.join(f'{v:.2f}' for v in last)}")
        score = f"{np.mean(scores):.3f}" if len(scores) == args.last * len(envs) else "incomplete"
        lines.append(f"| {variant} | " + " | ".join(cells) + f" | {score} |")
    lines += [
        "",
        "| variant | task | approx_kl | clip fraction | explained variance | rollout success (last third) |",
        "|---|---|---|---|---|---|",
    ]
    for spec in sorted(finished_specs(args.out).values(), key=lambda s: (s.variant, s.env)):
        cells = diagnostics(args.out / "runs" / f"{spec.name}.progress.csv")
        lines.append(f"| {spec.variant} | {spec.env.split('metaworld-')[-1]} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    (args.out / "tuning.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
