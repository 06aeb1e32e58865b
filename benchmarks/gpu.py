"""
NCDPO and PPO on a CUDA device: training env-steps/s at ``n_envs`` 1, 8 and 64 (Hopper-v5, PPO's packaged Hopper
values with ``n_steps`` chosen so that every run collects the same env steps per rollout; NCDPO at K=10, the policy's
defaults otherwise), and the peak CUDA memory of one NCDPO update minibatch against K, with and without
``gradient_checkpointing``. Prints two tables and writes them to ``--out`` with the card's name. Without CUDA it says
so and exits with status 1 (nothing is measured on the CPU: benchmarks/speed.py and benchmarks/update_memory.py do that).

Example (on a GPU machine)::

    python benchmarks/gpu.py --out benchmarks/results/gpu/gpu.md
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

from sb3_ncdpo import NCDPO, DiffusionActorCriticPolicy
from sb3_ncdpo.common.atomic import atomic_file
from sb3_ncdpo.compare.runs import entry_values

ENV = "Hopper-v5"


def env_steps_per_second(algo: str, n_envs: int, rollout_steps: int, rollouts: int, device: str) -> float:
    """
    :param algo: ``"ncdpo"`` or ``"ppo"``
    :param n_envs: Environments stepped together
    :param rollout_steps: Env steps per rollout (``n_steps = rollout_steps // n_envs``)
    :param rollouts: Rollouts timed, after one untimed rollout (CUDA start-up, first kernels)
    :param device: Torch device
    :return: Env steps per second of training (rollouts and updates)
    """
    values = entry_values(algo, ENV, "ppo")
    for key in ("n_envs", "normalize", "n_timesteps", "policy"):
        values.pop(key, None)
    values["n_steps"] = rollout_steps // n_envs
    values["batch_size"] = min(values.get("batch_size", 64) * n_envs, rollout_steps)
    env = VecNormalize(make_vec_env(ENV, n_envs=n_envs, seed=0))
    algorithm = NCDPO if algo == "ncdpo" else PPO
    policy = "MlpDiffusionPolicy" if algo == "ncdpo" else "MlpPolicy"
    model = algorithm(policy, env, seed=0, device=device, **values)
    model.learn(rollout_steps)
    if device.startswith("cuda"):
        th.cuda.synchronize()
    start = time.perf_counter()
    model.learn(rollout_steps * rollouts, reset_num_timesteps=False)
    if device.startswith("cuda"):
        th.cuda.synchronize()
    return rollout_steps * rollouts / (time.perf_counter() - start)


def update_memory(k: int, batch: int, checkpointing: bool, device: str, repeats: int) -> tuple[float, float]:
    """:return: (peak MB above the inputs, median seconds) of one forward + backward of an update minibatch"""
    th.manual_seed(0)
    policy = DiffusionActorCriticPolicy(
        spaces.Box(-1.0, 1.0, (11,)), spaces.Box(-1.0, 1.0, (3,)), lambda _: 3e-4, n_denoising_steps=k,
        gradient_checkpointing=checkpointing,
    ).to(device)  # fmt: skip
    obs, actions = th.randn(batch, 11, device=device), th.rand(batch, 3, device=device) * 2 - 1
    noises = policy.sample_noise(batch)
    times, peak = [], 0
    for _ in range(repeats):
        policy.zero_grad(set_to_none=True)
        th.cuda.synchronize()
        base = th.cuda.memory_allocated()
        th.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        values, log_prob, entropy = policy.evaluate_actions(obs, actions, noises)
        (log_prob.mean() + values.mean() + entropy.mean()).backward()
        th.cuda.synchronize()
        times.append(time.perf_counter() - start)
        peak = max(peak, th.cuda.max_memory_allocated() - base)
    return peak / 2**20, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-envs", nargs="+", type=int, default=[1, 8, 64])
    parser.add_argument("--rollout-steps", type=int, default=2048, help="env steps per rollout, every n_envs")
    parser.add_argument("--rollouts", type=int, default=3, help="rollouts timed per run")
    parser.add_argument("--ks", nargs="+", type=int, default=[1, 5, 10, 20, 50])
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, help="also write the tables here (markdown, with the card and command)")
    args = parser.parse_args()
    if not th.cuda.is_available():
        sys.exit("no CUDA device: nothing measured (benchmarks/gpu.py measures CUDA only)")
    device, card = "cuda", th.cuda.get_device_name(0)
    th.set_num_threads(1)
    lines = [f"Card: {card}; torch {th.__version__}", "", "| n_envs | NCDPO env-steps/s | PPO env-steps/s | NCDPO / PPO |"]
    lines.append("|---|---|---|---|")
    for n_envs in args.n_envs:
        ncdpo, ppo = (env_steps_per_second(a, n_envs, args.rollout_steps, args.rollouts, device) for a in ("ncdpo", "ppo"))
        lines.append(f"| {n_envs} | {ncdpo:.0f} | {ppo:.0f} | {ncdpo / ppo:.2f} |")
        print(lines[-1], flush=True)
    lines += ["", "| K | peak MB | peak MB, checkpointing | update s | update s, checkpointing |", "|---|---|---|---|---|"]
    for k in args.ks:
        plain_mb, plain_s = update_memory(k, args.batch, False, device, args.repeats)
        check_mb, check_s = update_memory(k, args.batch, True, device, args.repeats)
        lines.append(f"| {k} | {plain_mb:.1f} | {check_mb:.1f} | {plain_s:.4f} | {check_s:.4f} |")
        print(lines[-1], flush=True)
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        command = "python benchmarks/gpu.py " + " ".join(sys.argv[1:])
        with atomic_file(args.out) as tmp:
            tmp.write_text(text + f"\n\nReproduce:\n\n    {command}\n")


if __name__ == "__main__":
    main()
