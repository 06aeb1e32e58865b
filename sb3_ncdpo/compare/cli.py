"""
``sb3-ncdpo compare``: NCDPO against SB3 PPO (or any algorithm of :data:`COMPARED`) at equal budgets.

Every (algo, env, seed) run trains with the packaged ``hyperparams/<algo>.yml`` entry (``--hyperparams ppo``: PPO's
entry for every algorithm, the drop-in test; ``--hyperparams defaults``: SB3's defaults), in its own fresh process with
torch pinned to one thread, and is evaluated on a schedule on a separate env (deterministic actions, VecNormalize
statistics synced, rewards not normalised). A finished run is written to ``<out>/runs/<run>.csv`` (its evaluations),
``<out>/runs/<run>.progress.csv`` (its training log: SB3's logger keys at every update) and ``<out>/runs/<run>.json``
(its settings), atomically; runs already finished with the same settings are reused, so
an interrupted comparison continues where it stopped and a broken run never erases another one. From all finished
runs in ``<out>`` (those of earlier commands too, e.g. variants added with ``--label``) the command writes
``<out>/results.csv`` (tidy: one row per evaluation), ``<out>/curves_<env>.png`` (IQM or mean over seeds with 95%
stratified-bootstrap bands, from rliable) and ``<out>/summary.md``. With ``--report-only`` it runs nothing and writes
the report of exactly the runs that the same command would run, leaving the other runs of ``<out>`` out of it; if one
of them is not finished with the same settings, it exits with status 1, naming each missing run, and writes nothing.

Example::

    sb3-ncdpo compare --env Pendulum-v1 --env Hopper-v5 --algos ncdpo ppo --seeds 3 --timesteps 100000 --out cmp
"""

import argparse
import importlib.util
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from sb3_ncdpo.common.policy_settings import check_policy_kwargs
from sb3_ncdpo.compare.ray_runs import execute_on_ray
from sb3_ncdpo.compare.reporting import report
from sb3_ncdpo.compare.results import COMPARED, RunSpec, finished_specs, missing_runs
from sb3_ncdpo.compare.runs import HYPERPARAMS, entry_values, execute, pretrained_path
from sb3_ncdpo.compare.stats import METRICS
from sb3_ncdpo.zoo import ALGORITHMS, eval_policy_kwargs


def _run_problem(algo: str, env_id: str, pretrained: str, check_folder: bool, hyperparams: str = "packaged") -> str:
    """:return: Why (algo, env) cannot run with these settings, or ``""``"""
    try:
        entry_values(algo, env_id, hyperparams, pretrained=bool(pretrained))
    except ValueError as error:
        return f"--env {env_id} with --algos {algo} and --hyperparams {hyperparams}: {error}"
    if not pretrained or not check_folder:
        return ""
    try:
        folder = pretrained_path(pretrained, algo, env_id)
    except (KeyError, IndexError, ValueError) as error:
        return f"--pretrained {pretrained!r}: only {{env}}, {{algo}} and {{policy}} can be filled in ({error})"
    if not (Path(folder) / "policy.pth").is_file():
        return f"--pretrained: {folder} (for {algo} on {env_id}) is not a folder written by `sb3-ncdpo pretrain`"
    return ""


#: The command-line option of each :class:`RunSpec` field whose name differs from it
_OPTIONS = {"algo": "algos", "n_threads": "threads"}


def _missing_message(out: Path, n_asked: int, missing: Sequence[tuple[RunSpec, RunSpec | None]]) -> str:
    """
    :param out: Output directory of the comparison
    :param n_asked: Number of runs asked for
    :param missing: The runs asked for that are not finished, each with the finished run of the same name and other
        settings, or ``None`` (as :func:`~sb3_ncdpo.compare.results.missing_runs` returns them)
    :return: Why ``--report-only`` writes nothing: each missing run on its own line, and how to produce them
    """
    if not out.exists():
        why = f"{out} does not exist, so none of the {n_asked} run(s) asked for is finished"
    elif not finished_specs(out):
        why = f"{out} holds no finished run, so none of the {n_asked} run(s) asked for is finished"
    else:
        why = f"{len(missing)} of the {n_asked} run(s) asked for {'is' if len(missing) == 1 else 'are'} not finished in {out}"
    lines = []
    for spec, found in missing:
        line = f"  {spec.algo} on {spec.env}, seed {spec.seed}, {spec.timesteps} timesteps"
        line += f", label {spec.label}" if spec.label else ""
        if found is not None:
            asked, done = asdict(spec), asdict(found)
            other = ", ".join(
                f"--{_OPTIONS.get(key, key).replace('_', '-')} {done[key]!r} instead of {value!r}"
                for key, value in asked.items()
                if done[key] != value
            )
            line += f" (finished with other settings: {other})"
        lines.append(line)
    how = "Run the same command without --report-only to train them (the finished ones are reused)"
    if any(found is not None for _, found in missing):
        how += f"; a run finished with other settings is refused there too: delete its files in {out / 'runs'} first"
    return f"--report-only: {why}; nothing was written. Missing:\n" + "\n".join(lines) + f"\n{how}."


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse and validate the command line (every check happens before anything runs)."""
    parser = argparse.ArgumentParser(
        prog="sb3-ncdpo compare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env", action="extend", nargs="+", required=True, help="env id(s); repeat or list several")
    parser.add_argument("--algos", nargs="+", default=["ncdpo", "ppo"], help=f"algorithms, among {COMPARED}")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds per (algo, env)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--seed-list", type=int, nargs="+", help="explicit seeds (instead of --seeds/--first-seed)")
    parser.add_argument("--timesteps", type=int, required=True, help="training budget per run, in env steps")
    parser.add_argument("--eval-freq", type=int, help="env steps between evaluations (default: timesteps / 10)")
    parser.add_argument("--n-eval-episodes", type=int, default=10)
    parser.add_argument("--n-jobs", type=int, default=1, help="runs in parallel processes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--policy-kwargs", default="", help='overrides, a dict expression: "dict(n_denoising_steps=5)"')
    parser.add_argument(
        "--hyperparams",
        choices=HYPERPARAMS,
        default="packaged",
        help="values to start from: each algorithm's packaged hyperparams/<algo>.yml entry (default), PPO's entry "
        "hyperparams/ppo.yml for every algorithm (the drop-in test), or SB3's defaults (no entry needed)",
    )
    parser.add_argument(
        "--algo-kwargs", default="", help='overrides of the algorithm\'s arguments: "dict(learning_rate=1e-4)"'
    )
    parser.add_argument("--label", default="", help="name of this variant in the results (needs a single --algos)")
    parser.add_argument(
        "--pretrained",
        default="",
        help="fine-tune from pre-trained folders: a path template with {env}, {algo}, {policy} (gaussian for ppo, "
        "diffusion otherwise), e.g. 'pretrained/{env}/{policy}'; uses hyperparams/<algo>_finetune.yml",
    )
    parser.add_argument("--metric", choices=METRICS, default="iqm", help="aggregate over seeds")
    parser.add_argument("--out", type=Path, required=True, help="output directory (finished runs in it are reused)")
    parser.add_argument(
        "--ray-address",
        default="",
        help="run on this existing Ray cluster (HOST:PORT of its head, or auto), one task per run, instead of local "
        "processes; the files are written here as the runs finish",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: report exactly the runs this command names, which must all be finished (else exit 1)",
    )
    args = parser.parse_args(argv)
    for name in ("seeds", "timesteps", "n_eval_episodes", "n_jobs", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be an int >= 1, got {getattr(args, name)}")
    if args.eval_freq is None:
        args.eval_freq = max(args.timesteps // 10, 1)
    elif args.eval_freq < 1:
        parser.error(f"--eval-freq must be an int >= 1, got {args.eval_freq}")
    unknown = [a for a in args.algos if a not in COMPARED]
    if unknown:
        parser.error(f"--algos must be among {list(COMPARED)}, got {unknown}")
    if args.label and len(args.algos) != 1:
        parser.error(f"--label names one variant: give a single --algos, got {args.algos}")
    if "__" in args.label:
        parser.error(f"--label must not contain '__' (it separates the parts of run file names), got {args.label!r}")
    try:
        overrides = eval_policy_kwargs(args.policy_kwargs)
        if set(args.algos) & set(ALGORITHMS):
            check_policy_kwargs(overrides)
    except Exception as error:
        parser.error(f"--policy-kwargs: {error}")
    try:
        eval_policy_kwargs(args.algo_kwargs)
    except Exception as error:
        parser.error(f"--algo-kwargs: {error}")

    for algo in args.algos:
        for env_id in args.env:
            problem = _run_problem(algo, env_id, args.pretrained, not args.report_only, args.hyperparams)
            if problem:
                parser.error(problem)
    where_problem = _where_problem(args)
    if where_problem:
        parser.error(where_problem)
    return args


def _where_problem(args: argparse.Namespace) -> str | None:
    """:return: Why the runs cannot go where the arguments send them (``--out``, ``--ray-address``), or ``None``"""
    if args.ray_address and args.n_jobs != 1:
        return "--n-jobs applies to local runs: with --ray-address the cluster's CPUs decide how many runs go at once"
    if args.ray_address and importlib.util.find_spec("ray") is None:
        return '--ray-address needs Ray: pip install "sb3-ncdpo[ray]"'
    return None if args.report_only else _out_problem(args.out)


def _out_problem(out: Path) -> str | None:
    """:return: Why ``--out`` cannot be created and written, or ``None``"""
    if out.exists() and not out.is_dir():
        return f"--out {str(out)!r} is a file, not a folder"
    ancestor = out
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"--out {str(out)!r} cannot be created: {str(ancestor)!r} is a file"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"--out {str(out)!r} cannot be created or written: no write permission in {str(ancestor)!r}"
    return None


def main(argv: Sequence[str] | None = None) -> None:
    """
    Run the comparison, then report every finished run of ``--out``; with ``--report-only``, run nothing and report
    exactly the runs asked for, or exit with status 1 naming those that are not finished (and write nothing).

    :param argv: Arguments after ``compare`` (``sys.argv[1:]`` by default)
    """
    args = parse_args(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    seeds = args.seed_list or list(range(args.first_seed, args.first_seed + args.seeds))
    specs = [
        RunSpec(
            algo,
            env_id,
            seed,
            args.timesteps,
            args.eval_freq,
            args.n_eval_episodes,
            args.threads,
            args.policy_kwargs,
            args.label,
            args.pretrained,
            args.hyperparams,
            args.algo_kwargs,
        )
        for env_id in args.env
        for seed in seeds
        for algo in args.algos
    ]
    if args.report_only:
        missing = missing_runs(args.out, specs)
        if missing:
            sys.exit(_missing_message(args.out, len(dict.fromkeys(specs)), missing))
        print(report(args.out, args.metric, specs))
        return
    try:
        if args.ray_address:
            failures = execute_on_ray(specs, args.out, args.ray_address)
        else:
            failures = execute(specs, args.out, args.n_jobs)
    except KeyboardInterrupt:
        finished = len(finished_specs(args.out, specs)) if args.out.is_dir() else 0
        sys.exit(
            f"interrupted: {finished} of the {len(dict.fromkeys(specs))} run(s) asked for are finished in "
            f"{args.out / 'runs'} (kept); run the same command again to resume"
        )
    print(report(args.out, args.metric))
    if failures:
        lines = "\n".join(f"  {f.spec.name}: {f.error}" for f in failures)
        sys.exit(f"{len(failures)} run(s) failed (finished runs are kept; re-run the command to retry):\n{lines}")
