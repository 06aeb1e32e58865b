"""
The drop-in test: NCDPO in place of PPO, the user changing nothing but the class name. Two value sets, each run for
both algorithms with ``sb3-ncdpo compare`` (resumable, one folder per set): PPO's packaged entries unchanged
(``--hyperparams ppo``: rl-zoo3's tuned PPO values, learning rate included) on the envs that have one, and SB3's bare
defaults (``--hyperparams defaults``) on those and on envs with no packaged entry. The table gives, per env and set,
the final deterministic return's IQM with its 95% interval for both, every seed, the untrained policy's return (a
fresh NCDPO policy, deterministic, same evaluation), and the verdict: NCDPO's IQM within PPO's interval or above it,
and no NCDPO seed below the untrained policy.

Example (the README's drop-in table; ``--n-jobs 2`` on this 2-core machine)::

    python benchmarks/drop_in.py --timesteps 100000 --seeds 3 --n-jobs 2 --out benchmarks/results/drop_in
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch as th
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import sync_envs_normalization

from sb3_ncdpo.common.atomic import atomic_file
from sb3_ncdpo.compare import RunSpec, execute, final_rows, interval, load_rows, make_model, report

PACKAGED = ["Pendulum-v1", "InvertedDoublePendulum-v5", "Hopper-v5", "Walker2d-v5", "HalfCheetah-v5"]
#: Envs with no packaged entry, not used to choose the defaults (Reacher-v5 was: benchmarks/action_bounds.py)
UNPACKAGED = ["Pusher-v5", "MountainCarContinuous-v0"]
SETS = {"ppo": PACKAGED, "defaults": PACKAGED + UNPACKAGED}


def untrained_return(env_id: str, hyperparams: str, seed: int, n_eval_episodes: int, out: Path) -> float:
    """:return: The deterministic return of a fresh NCDPO policy (cached in ``out/untrained.json``)"""
    cache_path = out / "untrained.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    key = f"{hyperparams}/{env_id}/{seed}/{n_eval_episodes}"
    if key not in cache:
        model, eval_env = make_model("ncdpo", env_id, seed, hyperparams=hyperparams)
        sync_envs_normalization(model.get_env(), eval_env)
        cache[key] = float(evaluate_policy(model, eval_env, n_eval_episodes, deterministic=True)[0])
        with atomic_file(cache_path) as tmp:
            tmp.write_text(json.dumps(cache, indent=1, sort_keys=True))
    return cache[key]


def table(out: Path, seeds: list[int], n_eval_episodes: int, specs: dict[str, list[RunSpec]]) -> str:
    """:return: The drop-in table of the finished runs"""
    lines = [
        "| values | env | NCDPO IQM [95% CI] | PPO IQM [95% CI] | NCDPO seeds | PPO seeds | untrained (seeds) | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for hyperparams, envs in SETS.items():
        finals = final_rows(load_rows(out / hyperparams, specs[hyperparams]))
        for env_id in envs:
            ordered = sorted(finals, key=lambda r: r["seed"])
            scores = {
                a: [r["eval_return_mean"] for r in ordered if (r["algo"], r["env"]) == (a, env_id)] for a in ("ncdpo", "ppo")
            }
            if len(scores["ncdpo"]) < len(seeds) or len(scores["ppo"]) < len(seeds):
                lines.append(f"| {hyperparams} | {env_id} | not finished | | | | | |")
                continue
            (n, n_lo, n_hi), (p, p_lo, p_hi) = (interval(np.array(scores[a]), "iqm") for a in ("ncdpo", "ppo"))
            untrained = [untrained_return(env_id, hyperparams, s, n_eval_episodes, out) for s in seeds]
            below = [s for s, score, floor in zip(seeds, scores["ncdpo"], untrained, strict=True) if score < floor]
            verdict = "within or above PPO's interval" if n >= p_lo else "below PPO's interval"
            verdict += f"; seed(s) {below} below the untrained policy" if below else "; no seed below the untrained policy"
            lines.append(
                f"| {hyperparams} | {env_id} | {n:.1f} [{n_lo:.1f}, {n_hi:.1f}] | {p:.1f} [{p_lo:.1f}, {p_hi:.1f}] | "
                + " / ".join(f"{v:.0f}" for v in scores["ncdpo"])
                + " | "
                + " / ".join(f"{v:.0f}" for v in scores["ppo"])
                + " | "
                + " / ".join(f"{v:.0f}" for v in untrained)
                + f" | {verdict} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timesteps", type=int, default=100_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--n-eval-episodes", type=int, default=10)
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS), help="value sets to run now")
    parser.add_argument("--env", nargs="+", help="run only these envs now, in this order (the table covers all)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--table-only", action="store_true", help="run nothing, write the table of what is finished")
    args = parser.parse_args()
    th.set_num_threads(1)
    seeds = list(range(args.seeds))
    specs = {
        hyperparams: [
            RunSpec(algo, env_id, seed, args.timesteps, args.timesteps // 10, args.n_eval_episodes, hyperparams=hyperparams)
            for env_id in envs
            for seed in seeds
            for algo in ("ncdpo", "ppo")
        ]
        for hyperparams, envs in SETS.items()
    }
    if not args.table_only:
        for hyperparams in args.sets:
            todo = [s for s in specs[hyperparams] if args.env is None or s.env in args.env]
            todo.sort(key=lambda s: 0 if args.env is None else args.env.index(s.env))
            failures = execute(todo, args.out / hyperparams, args.n_jobs)
            for failure in failures:
                print(f"failed: {failure.spec.name}: {failure.error}")
            report(args.out / hyperparams)  # summary.md, curves (env steps) and results.csv of the finished runs
    text = table(args.out, seeds, args.n_eval_episodes, specs)
    command = f"python benchmarks/drop_in.py --timesteps {args.timesteps} --seeds {args.seeds} --n-jobs 2 --out {args.out}"
    print(text)
    with atomic_file(args.out / "drop_in.md") as tmp:
        tmp.write_text(
            f"{text}\n\nFinal deterministic return after {args.timesteps} env steps, {args.n_eval_episodes} episodes; "
            f"IQM over seeds {seeds} with rliable's 95% stratified-bootstrap interval; one torch thread per run.\n\n"
            f"Reproduce:\n\n    {command}\n"
        )


if __name__ == "__main__":
    main()
