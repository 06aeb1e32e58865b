"""
NCDPO's speed against SB3 PPO, side by side: env-steps/s, time in rollouts and in updates, time per minibatch and
peak memory, for several numbers of denoising steps K.

Every configuration uses PPO's packaged hyperparameters for the env (same n_envs, n_steps, batch size, epochs,
network sizes and normalisation); NCDPO only swaps the policy for the diffusion policy with K steps (and the diffusion
settings of ``--policy-kwargs``, if given). Each
configuration runs in its own fresh process (so that its peak RSS is its own), one at a time, one torch thread.

Example::

    python benchmarks/speed.py --env Hopper-v5 --ks 1 2 5 10 20 --timesteps 4096 --repeats 3

Prints a table and writes it to ``<out>/speed_<env>.md`` with the command; raw rows go to ``<out>/speed_<env>.csv``.
To measure an older version of the package (the "before" of a speed change), put a worktree of it first on the path::

    git worktree add /tmp/before 83742e0
    PYTHONPATH=/tmp/before python benchmarks/speed.py --env Hopper-v5 --ks 10 --out benchmarks/results/speed/before
"""

import argparse
import csv
import os
import resource
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import yaml

FIELDS = ["algo", "k", "repeat", "timesteps", "fps", "rollout_s", "update_s", "minibatch_ms", "peak_rss_mb"]


def measure(algo: str, env_id: str, k: int, timesteps: int, repeat: int, policy_kwargs: str = "") -> dict[str, Any]:
    """Train one model for ``timesteps`` steps and time its rollouts and updates (runs in a fresh process)."""
    import torch as th
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize
    from torch import nn

    from sb3_ncdpo import NCDPO

    th.set_num_threads(1)
    # Read from this checkout's file, not through the package, so that the script also measures older versions of
    # the package (PYTHONPATH=<a worktree of an older commit>): the "before" of a speed change.
    with open(Path(__file__).resolve().parent.parent / "hyperparams" / "ppo.yml") as file:
        hyperparams = dict(yaml.safe_load(file)[env_id])
    for key in ("n_timesteps", "policy"):
        hyperparams.pop(key, None)
    env = make_vec_env(env_id, n_envs=hyperparams.pop("n_envs", 1), seed=repeat)
    if hyperparams.pop("normalize", False):
        env = VecNormalize(env, gamma=hyperparams.get("gamma", 0.99))
    if isinstance(hyperparams.get("policy_kwargs"), str):
        hyperparams["policy_kwargs"] = eval(hyperparams["policy_kwargs"], {"dict": dict, "nn": nn, "th": th})
    if algo == "ncdpo":
        overrides = eval(policy_kwargs, {"dict": dict, "nn": nn, "th": th}) if policy_kwargs else {}
        hyperparams["policy_kwargs"] = {**hyperparams.get("policy_kwargs", {}), **overrides, "n_denoising_steps": k}
        model: Any = NCDPO("MlpPolicy", env, seed=repeat, device="cpu", **hyperparams)
    else:
        model = PPO("MlpPolicy", env, seed=repeat, device="cpu", **hyperparams)

    timers = {"collect_rollouts": 0.0, "train": 0.0}
    calls = {"collect_rollouts": 0, "train": 0}

    def timed(name: str) -> Any:
        method = getattr(model, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                timers[name] += time.perf_counter() - start
                calls[name] += 1

        return wrapper

    model.collect_rollouts = timed("collect_rollouts")
    model.train = timed("train")
    start = time.perf_counter()
    model.learn(timesteps)
    seconds = time.perf_counter() - start
    # The buffer's rows: env steps for PPO, decisions for NCDPO (fewer with action chunks: one per n_action_steps)
    samples = model.rollout_buffer.buffer_size * model.n_envs
    minibatches = calls["train"] * model.n_epochs * max(samples // model.batch_size, 1)
    return dict(
        algo=algo,
        k=k if algo == "ncdpo" else 0,
        repeat=repeat,
        timesteps=model.num_timesteps,
        fps=round(model.num_timesteps / seconds, 1),
        rollout_s=round(timers["collect_rollouts"], 3),
        update_s=round(timers["train"], 3),
        minibatch_ms=round(1000 * timers["train"] / minibatches, 3),
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    )


def summarise(rows: list[dict[str, Any]]) -> str:
    ppo = [r for r in rows if r["algo"] == "ppo"]
    ppo_fps = statistics.median(r["fps"] for r in ppo) if ppo else None
    ppo_mb = statistics.median(r["minibatch_ms"] for r in ppo) if ppo else None
    ppo_by_repeat = {int(r["repeat"]): float(r["fps"]) for r in ppo}
    lines = [
        "| algo | K | fps (median) | fps / PPO | paired fps / PPO, median [min, max] | rollout s / 1k steps "
        "| update s / 1k steps | ms per minibatch | minibatch / PPO | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for algo, k in sorted({(r["algo"], int(r["k"])) for r in rows}, key=lambda ak: (ak[0] != "ppo", ak[1])):
        runs = [r for r in rows if r["algo"] == algo and int(r["k"]) == k]

        def med(key: str, runs: list[dict[str, Any]] = runs) -> float:
            return statistics.median(float(r[key]) for r in runs)

        per_k = 1000 / med("timesteps")
        fps_ratio = f"{med('fps') / ppo_fps:.2f}" if ppo_fps else "n/a"
        mb_ratio = f"{med('minibatch_ms') / ppo_mb:.1f}" if ppo_mb else "n/a"
        # Each repeat runs PPO and every configuration back to back: the ratio within a repeat is the least exposed to
        # the slow drifts of a shared machine's speed.
        paired = [float(r["fps"]) / ppo_by_repeat[int(r["repeat"])] for r in runs if int(r["repeat"]) in ppo_by_repeat]
        spread = f"{statistics.median(paired):.2f} [{min(paired):.2f}, {max(paired):.2f}]" if paired else "n/a"
        lines.append(
            f"| {algo} | {k if algo == 'ncdpo' else '-'} | {med('fps'):.0f} | {fps_ratio} | {spread} "
            f"| {med('rollout_s') * per_k:.3f} | {med('update_s') * per_k:.3f} | {med('minibatch_ms'):.2f} | {mb_ratio} "
            f"| {med('peak_rss_mb'):.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="Hopper-v5", help="an env with an entry in hyperparams/ppo.yml")
    parser.add_argument("--ks", nargs="+", type=int, default=[10], help="numbers of denoising steps to measure")
    parser.add_argument("--timesteps", type=int, default=16384, help="per run; long enough to amortise start-up and tracing")
    parser.add_argument("--repeats", type=int, default=3, help="repeats (seeds) per configuration; medians are quoted")
    parser.add_argument("--no-ppo", action="store_true", help="skip the PPO reference")
    parser.add_argument("--policy-kwargs", default="", help='NCDPO policy kwargs on top of PPO\'s: "dict(residual=True)"')
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/speed"))
    args = parser.parse_args()

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    configs = [] if args.no_ppo else [("ppo", 0)]
    configs += [("ncdpo", k) for k in args.ks]
    # Interleaved repeats: a slow spell of the machine then hits every configuration alike.
    jobs = [(algo, k, r) for r in range(args.repeats) for algo, k in configs]
    rows = []
    for algo, k, repeat in jobs:
        with ProcessPoolExecutor(max_workers=1) as pool:  # a fresh process per run: its own peak RSS
            row = pool.submit(measure, algo, args.env, k, args.timesteps, repeat, args.policy_kwargs).result()
        rows.append(row)
        print(", ".join(f"{key}={row[key]}" for key in FIELDS), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"speed_{args.env}"
    with open(args.out / f"{stem}.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    table = summarise(rows)
    import sb3_ncdpo

    reproduce = "python benchmarks/speed.py " + shlex.join(sys.argv[1:])
    source = Path(sb3_ncdpo.__file__).resolve().parent.parent
    git = subprocess.run(["git", "-C", str(source), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    where = f"sb3_ncdpo from commit {git.stdout.strip() or 'unknown'}"
    (args.out / f"{stem}.md").write_text(f"{table}\n\nReproduce (nothing else running; {where}):\n\n    {reproduce}\n")
    print(table)


if __name__ == "__main__":
    main()
