"""
The tuning runs of a fine-tuning benchmark, scored per variant (``<algo>_lr<rate>``, ...) over every tuning env of a
compare folder, beside the clone's (step 0) evaluation:

- success rate (Meta-World's tuning tasks; the default): the score is the mean deterministic success rate over the
  last ``--last`` evaluations of every task, or with ``--from-step`` every evaluation from that step on (with 20
  episodes an evaluation, one evaluation's rate moves by ~0.1 from episode draws alone: the mean over several is the
  score);
- return, normalised (locomotion's tuning envs; with ``--experts``): per env, the mean return of those evaluations
  minus the clone's, divided by the size of the gap between the expert's return and the clone's (the expert's is the
  ``expert.zip`` row of ``<experts>/<env>/checkpoints.csv``, as ``benchmarks/finetune.py`` writes it); the score is
  its mean over the envs.

From each run's training log (``runs/<run>.progress.csv``) it adds the medians over the run's policy updates of
``train/approx_kl``, ``train/clip_fraction``, ``train/explained_variance`` and ``train/std`` (where logged), with the
stochastic rollouts' success rate or return over the run's last third. Prints markdown tables and writes them to
``<out>/tuning.md``.

    python benchmarks/tuning_table.py --out benchmarks/results/metaworld_tuning --last 3
    python benchmarks/tuning_table.py --out benchmarks/results/locomotion_tuning --from-step 200000 \
        --experts benchmarks/results/locomotion_tuning/models/experts
"""

import argparse
import csv
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from sb3_ncdpo.compare import finished_specs, load_rows, training_summary

#: Training-log keys of the table (:func:`sb3_ncdpo.compare.training_summary`)
DIAGNOSTICS = (
    "train/approx_kl",
    "train/clip_fraction",
    "train/explained_variance",
    "train/std",
    "rollout/success_rate",
    "rollout/ep_rew_mean",
)
#: How a key's value is written where it is not ``.3g``
FORMATS = {"rollout/success_rate": "{:.2f}", "rollout/ep_rew_mean": "{:.0f}"}


def diagnostics(summary: dict[str, float], keys: tuple[str, ...]) -> list[str]:
    """
    :param summary: A run's :func:`~sb3_ncdpo.compare.training_summary`
    :param keys: The training-log keys to format
    :return: Those keys, formatted; ``-`` where the log lacks them
    """
    return ["-" if key not in summary else FORMATS.get(key, "{:.3g}").format(summary[key]) for key in keys]


def expert_return(experts: Path, env: str) -> float:
    """
    :param experts: The experts' folder of ``benchmarks/finetune.py`` (one ``<env>/checkpoints.csv`` per env)
    :param env: The env id
    :return: The final expert's evaluated return (its ``expert.zip`` row)
    :raises FileNotFoundError: Where the env has no expert
    """
    with open(experts / env / "checkpoints.csv") as file:
        rows = [row for row in csv.DictReader(file) if row["model"] == "expert.zip"]
    if not rows:
        raise FileNotFoundError(f"{experts / env / 'checkpoints.csv'} has no expert.zip row")
    return float(rows[-1]["return_mean"])


def short(env: str) -> str:
    """:return: The env's name in a table header (a Meta-World id without its prefix)"""
    return env.split("metaworld-")[-1]


def score_table(rows: list[dict[str, Any]], last: int, from_step: int | None, experts: Path | None) -> list[str]:
    """
    :param rows: The compare folder's evaluation rows (:func:`sb3_ncdpo.compare.load_rows`)
    :param last: Evaluations at the end of each run that make its score
    :param from_step: Instead of ``last``, the evaluations at this env step and later make it (a run's final
        evaluation, at the end of its last rollout, may fall just past the schedule's last)
    :param experts: The experts' folder (normalised return), or ``None`` (success rate)
    :return: The markdown lines of the score table, one row per variant
    """
    key = "eval_success_rate" if experts is None else "eval_return_mean"
    fmt = "{:.2f}" if experts is None else "{:.0f}"
    envs = sorted({r["env"] for r in rows})
    by_run: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_run[(row["algo"], row["env"])].append(row)
    which = f"last {last}" if from_step is None else f"from {from_step}"
    header = " | ".join(f"{short(e)}: clone / {which}" + ("" if experts is None else " (normalised)") for e in envs)
    lines = [f"| variant | {header} | score |", "|---|" + "---|" * (len(envs) + 1)]
    if experts is not None:
        lines.insert(0, "Experts' returns: " + ", ".join(f"{short(e)} {expert_return(experts, e):.0f}" for e in envs) + "\n")
    for variant in sorted({algo for algo, _ in by_run}):
        cells, scores = [], []
        for env in envs:
            run = sorted(by_run.get((variant, env), []), key=lambda r: r["timesteps"])
            scored = run[-last:] if from_step is None else [r for r in run if r["timesteps"] >= from_step]
            if len(run) <= last or not scored:
                cells.append("-")
                continue
            values = [r[key] for r in scored]
            cell = f"{fmt.format(run[0][key])} / {' '.join(fmt.format(v) for v in values)}"
            if experts is None:
                scores += values
            else:
                clone = run[0][key]
                # the gap's size: a clone can score above the expert (a deterministic read-out against the expert's
                # stochastic return), and a signed gap would then turn a fall into a gain
                scores.append((np.mean(values) - clone) / abs(expert_return(experts, env) - clone))
                cell += f" ({scores[-1]:+.3f})"
            cells.append(cell)
        complete = len(cells) == len(envs) and "-" not in cells
        score = f"{np.mean(scores):.3f}" if complete else "incomplete"
        lines.append(f"| {variant} | " + " | ".join(cells) + f" | {score} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="the tuning runs' compare folder")
    parser.add_argument("--last", type=int, default=3, help="evaluations at the end of each run that make its score")
    parser.add_argument("--from-step", type=int, help="score the evaluations from this env step on (not --last)")
    parser.add_argument("--experts", type=Path, help="score the return, normalised by these experts (finetune.py's)")
    args = parser.parse_args()
    if not (args.out / "runs").is_dir():
        parser.error(f"--out: {args.out} holds no compare runs (no runs/ folder)")
    if args.experts is not None and not args.experts.is_dir():
        parser.error(f"--experts: {args.experts} is not a folder")
    if args.last < 1:
        parser.error(f"--last must be at least 1, got {args.last}")
    keys = tuple(k for k in DIAGNOSTICS if k != ("rollout/success_rate" if args.experts else "rollout/ep_rew_mean"))
    lines = score_table(load_rows(args.out), args.last, args.from_step, args.experts)
    lines += [
        "",
        "| variant | env | " + " | ".join(k.split("/")[-1].replace("_", " ") for k in keys) + " |",
        "|---|---|" + "---|" * len(keys),
    ]
    for spec in sorted(finished_specs(args.out).values(), key=lambda s: (s.variant, s.env)):
        cells = diagnostics(training_summary(args.out, spec), keys)
        lines.append(f"| {spec.variant} | {short(spec.env)} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    (args.out / "tuning.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
