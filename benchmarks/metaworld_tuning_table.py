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
from collections import defaultdict
from pathlib import Path

import numpy as np

from sb3_ncdpo.compare import finished_specs, load_rows, training_summary

#: Training-log keys of the table (:func:`sb3_ncdpo.compare.training_summary`)
DIAGNOSTICS = ("train/approx_kl", "train/clip_fraction", "train/explained_variance", "rollout/success_rate")


def diagnostics(summary: dict[str, float]) -> list[str]:
    """
    :param summary: A run's :func:`~sb3_ncdpo.compare.training_summary`
    :return: Its :data:`DIAGNOSTICS`, formatted; ``-`` where the log lacks them
    """
    return [
        "-" if key not in summary else f"{summary[key]:.2f}" if key.startswith("rollout/") else f"{summary[key]:.3g}"
        for key in DIAGNOSTICS
    ]


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
        cells = diagnostics(training_summary(args.out, spec))
        lines.append(f"| {spec.variant} | {spec.env.split('metaworld-')[-1]} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    (args.out / "tuning.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
