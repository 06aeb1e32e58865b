"""
How far each run's policy updates moved the policy, from the training logs of a ``compare`` folder: per finished run
(variant, env, seed), the medians of ``train/approx_kl`` and ``train/clip_fraction`` over the first and the second
half of its policy updates, its final-step std and learning rate at the end (the rate moves with ``desired_kl``), and
its final deterministic return. For reading a gap between two methods run with the same values: an update rule that
moves one policy much further than the other at the same learning rate shows here. Prints a markdown table and writes
it to ``<out>/update_diagnostics.md``.

    python benchmarks/update_diagnostics.py --out benchmarks/results/million --env Walker2d-v5
"""

import argparse
import statistics
from pathlib import Path

from sb3_ncdpo.compare import final_rows, finished_specs, load_rows
from sb3_ncdpo.compare.results import training_log, write_atomically

#: Training-log keys whose medians the table shows, per half of the run
KEYS = ("train/approx_kl", "train/clip_fraction")


def halves(log: list[dict[str, str]], key: str) -> tuple[float, float]:
    """
    :param log: A run's training log rows
    :param key: A logged key
    :return: The medians of ``key`` over the first and the second half of the rows that log it
    """
    values = [float(row[key]) for row in log if row.get(key)]
    if len(values) < 2:
        return float("nan"), float("nan")
    middle = len(values) // 2
    return statistics.median(values[:middle]), statistics.median(values[middle:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="a compare folder")
    parser.add_argument("--env", nargs="*", default=None, help="only these env ids (default: every env of the folder)")
    args = parser.parse_args()
    if not (args.out / "runs").is_dir():
        parser.error(f"--out: {args.out} holds no compare runs (no runs/ folder)")
    specs = [s for s in finished_specs(args.out).values() if args.env is None or s.env in args.env]
    if not specs:
        parser.error(f"--env: no finished run of {args.env} in {args.out}")
    final = {(r["algo"], r["env"], r["seed"]): r["eval_return_mean"] for r in final_rows(load_rows(args.out, specs))}
    lines = [
        "| env | variant | seed | approx_kl, 1st / 2nd half | clip fraction, 1st / 2nd half | std at the end"
        " | learning rate at the end | final return |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for spec in sorted(specs, key=lambda s: (s.env, s.variant, s.seed)):
        log = training_log(args.out, spec)
        if not log:
            continue
        cells = [" / ".join(f"{v:.3g}" for v in halves(log, key)) for key in KEYS]
        for key, fmt in (("train/std", ".2f"), ("train/learning_rate", ".3g")):
            logged = [row[key] for row in log if row.get(key)]
            cells.append(f"{float(logged[-1]):{fmt}}" if logged else "-")
        cells.append(f"{final[(spec.variant, spec.env, spec.seed)]:.0f}")
        lines.append(f"| {spec.env} | {spec.variant} | {spec.seed} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    write_atomically(args.out / "update_diagnostics.md", text + "\n")
    print(text)


if __name__ == "__main__":
    main()
