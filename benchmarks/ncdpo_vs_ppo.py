"""
NCDPO vs SB3 PPO at equal budgets: final evaluation return and env-steps/s, several seeds, side by side in one run.

Hyperparameters come from the packaged ``hyperparams/<algo>.yml`` (rl-zoo3 format). Each (algo, env, seed) runs in
its own process with torch pinned to one thread; the final policy is evaluated deterministically on a separate env
(VecNormalize statistics copied, reward not normalised).

Example::

    python benchmarks/ncdpo_vs_ppo.py --env Pendulum-v1 InvertedPendulum-v5 --seeds 0 1 2 --timesteps 100000 --n-jobs 2

Writes ``<out>/runs.csv`` (one row per run) and ``<out>/summary.md``; prints the summary table. Rows already in
``<out>/runs.csv`` for other (algo, env, seed) triples are kept, so a part of the table can be re-run alone.
"""

import argparse
import csv
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sb3_ncdpo.zoo import hyperparams_file

FIELDS = ["algo", "env", "seed", "timesteps", "eval_mean", "eval_std", "train_seconds", "fps"]


def load_hyperparams(algo: str, env_id: str) -> dict[str, Any]:
    path = hyperparams_file(algo)
    with open(path) as file:
        table = yaml.safe_load(file)
    if env_id not in table:
        raise ValueError(f"no entry for {env_id!r} in {path}: add one (known: {sorted(table)})")
    return dict(table[env_id])


def make_model(
    algo: str,
    env_id: str,
    seed: int,
    policy_kwargs: dict[str, Any] | None = None,
    algo_kwargs: dict[str, Any] | None = None,
) -> tuple[Any, Any]:
    """
    Build a model with the packaged hyperparameters (plus overrides) and its evaluation env.

    :return: (model, eval_env); call ``sync_eval_env(model, eval_env)`` before evaluating
    """
    import torch as th
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize
    from torch import nn

    from sb3_ncdpo import NCDPO

    th.set_num_threads(1)
    hyperparams = load_hyperparams(algo, env_id)
    n_envs = hyperparams.pop("n_envs", 1)
    normalize = hyperparams.pop("normalize", False)
    hyperparams.pop("n_timesteps", None)
    policy = hyperparams.pop("policy")
    if isinstance(hyperparams.get("policy_kwargs"), str):
        hyperparams["policy_kwargs"] = eval(hyperparams["policy_kwargs"], {"dict": dict, "nn": nn, "th": th})
    hyperparams["policy_kwargs"] = {**hyperparams.get("policy_kwargs", {}), **(policy_kwargs or {})}
    hyperparams.update(algo_kwargs or {})

    env = make_vec_env(env_id, n_envs=n_envs, seed=seed)
    eval_env = make_vec_env(env_id, n_envs=1, seed=seed + 10_000)
    if normalize:
        env = VecNormalize(env, gamma=hyperparams.get("gamma", 0.99))
        eval_env = VecNormalize(eval_env, training=False, norm_reward=False)
    model_class = {"ncdpo": NCDPO, "ppo": PPO}[algo]
    return model_class(policy, env, seed=seed, device="cpu", **hyperparams), eval_env


def sync_eval_env(model: Any, eval_env: Any) -> None:
    """Copy the training env's observation normalisation (if any) to the evaluation env."""
    if hasattr(eval_env, "obs_rms"):
        eval_env.obs_rms = model.get_env().obs_rms


def run_one(algo: str, env_id: str, seed: int, timesteps: int, n_eval_episodes: int) -> dict[str, Any]:
    from stable_baselines3.common.evaluation import evaluate_policy

    model, eval_env = make_model(algo, env_id, seed)
    start = time.perf_counter()
    model.learn(timesteps)
    seconds = time.perf_counter() - start
    sync_eval_env(model, eval_env)
    mean, std = evaluate_policy(model, eval_env, n_eval_episodes=n_eval_episodes, deterministic=True)
    return dict(
        algo=algo,
        env=env_id,
        seed=seed,
        timesteps=model.num_timesteps,
        eval_mean=float(mean),
        eval_std=float(std),
        train_seconds=round(seconds, 1),
        fps=round(model.num_timesteps / seconds, 1),
    )


def summarise(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| env | algo | seeds | final return: median [min, max] | mean ± std over seeds | fps (median) | fps / PPO |",
        "|---|---|---|---|---|---|---|",
    ]
    for env_id in sorted({r["env"] for r in rows}):
        fps_by_algo = {}
        for algo in ("ncdpo", "ppo"):
            runs = [r for r in rows if r["env"] == env_id and r["algo"] == algo]
            if runs:
                fps_by_algo[algo] = statistics.median(r["fps"] for r in runs)
        for algo in ("ncdpo", "ppo"):
            runs = [r for r in rows if r["env"] == env_id and r["algo"] == algo]
            if not runs:
                continue
            returns = [r["eval_mean"] for r in runs]
            fps = fps_by_algo[algo]
            ratio = f"{fps / fps_by_algo['ppo']:.2f}" if "ppo" in fps_by_algo else "n/a"
            spread = f"{statistics.median(returns):.1f} [{min(returns):.1f}, {max(returns):.1f}]"
            lines.append(
                f"| {env_id} | {algo} | {len(runs)} | {spread} | {np.mean(returns):.1f} ± {np.std(returns):.1f} "
                f"| {fps:.0f} | {ratio} |"
            )
    return "\n".join(lines)


def command(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """The command that recomputes every row of the table at once."""
    envs = " ".join(sorted({r["env"] for r in rows}))
    algos = " ".join(sorted({r["algo"] for r in rows}))
    seeds = " ".join(str(s) for s in sorted({int(r["seed"]) for r in rows}))
    return (
        f"python benchmarks/ncdpo_vs_ppo.py --env {envs} --algos {algos} --seeds {seeds} --timesteps {args.timesteps} "
        f"--n-eval-episodes {args.n_eval_episodes} --n-jobs {args.n_jobs} --out {args.out}"
    )


def hours(rows: list[dict[str, Any]]) -> float:
    return sum(float(r["train_seconds"]) for r in rows) / 3600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", nargs="+", default=["Pendulum-v1"], help="env ids (entries of hyperparams/*.yml)")
    parser.add_argument("--algos", nargs="+", default=["ncdpo", "ppo"], choices=["ncdpo", "ppo"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--timesteps", type=int, default=100_000)
    parser.add_argument("--n-eval-episodes", type=int, default=10)
    parser.add_argument("--n-jobs", type=int, default=1, help="runs in parallel processes (one torch thread each)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/ncdpo_vs_ppo"))
    parser.add_argument("--report-only", action="store_true", help="rewrite summary.md from <out>/runs.csv, run nothing")
    args = parser.parse_args()
    for algo in args.algos:  # fail on a missing entry before anything runs
        for env_id in args.env:
            load_hyperparams(algo, env_id)

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    jobs = [] if args.report_only else [(a, e, s) for e in args.env for s in args.seeds for a in args.algos]
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with ProcessPoolExecutor(max_workers=args.n_jobs) as pool:
        futures = [pool.submit(run_one, a, e, s, args.timesteps, args.n_eval_episodes) for a, e, s in jobs]
        for future in futures:
            row = future.result()
            rows.append(row)
            print(", ".join(f"{k}={row[k]}" for k in FIELDS), flush=True)
    kept = []
    if (args.out / "runs.csv").exists():
        with open(args.out / "runs.csv", newline="") as file:
            rerun = set(jobs)
            for row in csv.DictReader(file):
                typed = {k: (v if k in ("algo", "env") else float(v)) for k, v in row.items()}
                typed["seed"], typed["timesteps"] = int(typed["seed"]), int(typed["timesteps"])
                if (typed["algo"], typed["env"], typed["seed"]) not in rerun:
                    kept.append(typed)
    rows = kept + rows
    with open(args.out / "runs.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    table = summarise(rows)
    reproduce = f"Reproduce (about {hours(rows):.1f} CPU-hours of training):\n\n    {command(rows, args)}\n"
    (args.out / "summary.md").write_text(f"{table}\n\n{reproduce}")
    print(table)


if __name__ == "__main__":
    main()
