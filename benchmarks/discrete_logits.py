"""
How the chain's clean-sample clip limits a categorical policy, measured on the one-step sector task
(``sb3_ncdpo/toy_envs.py::SectorEnv``: reward 1 for the action whose sector contains the observation; a policy that ignores
the observation scores ``1 / n``). The stochastic return is the policy's probability of the right action: with the
logits clipped to ``[-c, c]`` it can never exceed ``e^{2c} / (e^{2c} + n - 1)`` (0.65 for n=5, 0.13 for n=50 at c=1).
Prints, per chain setting, the stochastic and deterministic returns and the mean entropy after training, and writes the
table to ``--out``.

    python benchmarks/discrete_logits.py --out benchmarks/results/discrete/logit_clip.md
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_ncdpo import NCDPO
from sb3_ncdpo.toy_envs import SectorEnv

SETTINGS = {
    "epsilon, x0_clip=1 at every step": dict(prediction_type="epsilon", x0_clip_final=True),
    "epsilon, x0_clip_final=False": dict(prediction_type="epsilon", x0_clip_final=False),
    "sample, x0_clip=1 at every step": dict(prediction_type="sample", x0_clip_final=True),
    "sample, x0_clip_final=False": dict(prediction_type="sample", x0_clip_final=False),
    "sample, x0_clip=None": dict(prediction_type="sample", x0_clip=None),
}


def run(n_actions: int, overrides: dict, seed: int, timesteps: int) -> tuple[float, float, float]:
    policy_kwargs = dict(n_denoising_steps=5, denoiser_hidden_sizes=[64, 64], net_arch=dict(pi=[64], vf=[32]), **overrides)
    env = make_vec_env(SectorEnv, n_envs=4, seed=seed, env_kwargs=dict(n_actions=n_actions))
    model = NCDPO("MlpPolicy", env, n_steps=128, batch_size=128, n_epochs=10, learning_rate=1e-3, gamma=0.0, seed=seed,
                  policy_kwargs=policy_kwargs)  # fmt: skip
    model.learn(timesteps)
    eval_env = make_vec_env(SectorEnv, n_envs=1, seed=seed + 100, env_kwargs=dict(n_actions=n_actions))
    stochastic, _ = evaluate_policy(model, eval_env, n_eval_episodes=500, deterministic=False)
    deterministic, _ = evaluate_policy(model, eval_env, n_eval_episodes=500, deterministic=True)
    obs = th.as_tensor(np.random.default_rng(seed).uniform(-1, 1, (500, 2)), dtype=th.float32)
    with th.no_grad():
        entropy = model.policy.get_distribution(obs).entropy().mean().item()
    return float(stochastic), float(deterministic), entropy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-actions", type=int, nargs="+", default=[5, 50])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--timesteps", type=int, default=8192)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    th.set_num_threads(1)
    lines = [
        f"NCDPO on SectorEnv, K=5, {args.timesteps} steps, seeds 0..{args.seeds - 1}; stochastic / deterministic return "
        "(500 episodes each) and mean entropy of the final categorical after training, per seed.",
        "",
        "| n actions | chain | stochastic return | deterministic return | entropy | cap on the stochastic return |",
        "|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for n_actions in args.n_actions:
        for name, overrides in SETTINGS.items():
            start = time.perf_counter()
            results = [run(n_actions, overrides, seed, args.timesteps) for seed in range(args.seeds)]
            clipped = overrides.get("x0_clip", 1.0) is not None and overrides.get("x0_clip_final", True)
            cap = f"{np.exp(2) / (np.exp(2) + n_actions - 1):.2f}" if clipped else "none"
            cells = [", ".join(f"{r[i]:.3f}" for r in results) for i in range(3)]
            lines.append(f"| {n_actions} | {name} | {cells[0]} | {cells[1]} | {cells[2]} | {cap} |")
            print(lines[-1], f"({time.perf_counter() - start:.0f} s)", flush=True)
    command = "python benchmarks/discrete_logits.py " + " ".join(sys.argv[1:])
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + f"\n\nCommand:\n\n    {command}\n")


if __name__ == "__main__":
    main()
