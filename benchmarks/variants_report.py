"""
One report over the runs of several ``compare`` folders: variants measured beside a benchmark (another evaluation
read-out, other fine-tuning settings) next to its own runs. Per env, the return (or success rate on Meta-World ids) at
checkpoints, IQM over seeds with rliable's 95 % interval, then each folder's training-log table (the medians over
seeds of ``train/approx_kl``, ``train/clip_fraction``, ... and of the stochastic rollouts' late return). A label found
in more than one folder (the same method run with other settings) is reported per folder, as ``label (folder)``.
Writes markdown to ``--out`` and prints it.

    python benchmarks/variants_report.py --env Walker2d-v5 \\
        --results benchmarks/results/locomotion_finetune benchmarks/results/locomotion_diagnosis \\
        --out benchmarks/results/locomotion_diagnosis/variants.md
"""

import argparse
from pathlib import Path

from finetune import metaworld_task, training_table

from sb3_ncdpo.compare import checkpoint_table, load_rows
from sb3_ncdpo.compare.results import write_atomically


def report(results: list[Path], envs: list[str], algos: list[str] | None) -> str:
    """
    :param results: ``compare`` output folders
    :param envs: The env ids reported, in this order
    :param algos: The variants reported (``None``: every variant found)
    :return: Markdown: a checkpoint table per env, then each folder's training-log table
    """
    per_folder = {
        folder: [r for r in load_rows(folder) if r["env"] in envs and (algos is None or r["algo"] in algos)]
        for folder in results
    }
    shared = {
        label
        for label in {r["algo"] for rows in per_folder.values() for r in rows}
        if sum(any(r["algo"] == label for r in rows) for rows in per_folder.values()) > 1
    }
    rows = [
        {**r, "algo": f"{r['algo']} ({folder.name})"} if r["algo"] in shared else r
        for folder, folder_rows in per_folder.items()
        for r in folder_rows
    ]
    parts = []
    for env_id in envs:
        env_rows = [r for r in rows if r["env"] == env_id]
        if env_rows:
            key = "eval_success_rate" if metaworld_task(env_id) else "eval_return_mean"
            parts.append(checkpoint_table(env_rows, key, digits=2 if metaworld_task(env_id) else 0))
    for folder in results:
        table = training_table(folder, envs)
        if table:
            parts.append(f"`{folder.name}`: {table}")
    return "\n\n".join(parts) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, nargs="+", required=True, help="compare output folders")
    parser.add_argument("--env", nargs="+", required=True)
    parser.add_argument("--algos", nargs="+", default=None, help="variants to report (default: all)")
    parser.add_argument("--out", type=Path, required=True, help="markdown file")
    args = parser.parse_args()
    for folder in args.results:
        if not (folder / "runs").is_dir():
            parser.error(f"--results: {folder} has no runs/ folder (not a compare output)")
    text = report(args.results, args.env, args.algos)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
