"""
DPPO on the one-step target task of the tests (``sb3_ncdpo/toy_envs.py::TargetEnv``: reward ``-|a - 0.8 (s0, -s1)|^2``; a
policy that ignores the observation scores about -0.43, a random one about -1.3) with the settings of
``tests/test_dppo.py::test_target_env_learning``, for several DPPO settings and seeds. Prints the deterministic
evaluation return after 8192 steps (the README's clip-schedule choice comes from this table).

    python benchmarks/dppo_target_task.py
"""

import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_ncdpo import DPPO
from sb3_ncdpo.toy_envs import TargetEnv

POLICY_KWARGS = dict(n_denoising_steps=3, denoiser_hidden_sizes=[64, 64], net_arch=dict(pi=[], vf=[32]))
SETTINGS = {
    "default (clip 0.1 at every step, mean)": ({}, {}),
    "growing clip (clip_range_base=1e-3)": (dict(clip_range_base=1e-3), {}),
    "sum over action dims, clip 0.2": (dict(log_prob_reduction="sum", clip_range=0.2), {}),
    "learned final std (fixed_std=None)": ({}, dict(fixed_std=None, log_std_init=-1.0)),
    "K=6, only the last K'=2 trained": ({}, dict(n_denoising_steps=6, n_finetuned_steps=2)),
}


def main() -> None:
    th.set_num_threads(1)
    print("| DPPO setting | seed 0 | seed 1 | seed 2 |\n|---|---|---|---|")
    for name, (algo_kwargs, policy_kwargs) in SETTINGS.items():
        returns = []
        for seed in range(3):
            env = make_vec_env(TargetEnv, n_envs=4, seed=seed)
            kwargs = dict(n_steps=128, batch_size=384, n_epochs=10, learning_rate=1e-3, gamma=0.0, **algo_kwargs)
            model = DPPO("MlpPolicy", env, seed=seed, policy_kwargs={**POLICY_KWARGS, **policy_kwargs}, **kwargs)
            model.learn(8192)
            returns.append(evaluate_policy(model, make_vec_env(TargetEnv, n_envs=1, seed=1), n_eval_episodes=100)[0])
        print(f"| {name} | " + " | ".join(f"{r:.4f}" for r in returns) + " |", flush=True)


if __name__ == "__main__":
    main()
