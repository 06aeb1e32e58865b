"""
The one-step target task of the tests (``sb3_ncdpo/toy_envs.py::TargetEnv``: reward ``-|a - 0.8 (s0, -s1)|^2``; a policy
that ignores the observation scores about -0.43, a random one about -1.3) with the settings of
``tests/test_ncdpo.py::test_target_env_learning``, for several chain settings and seeds. Prints the deterministic
evaluation return after 8192 steps.

    python benchmarks/target_task.py
"""

import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_ncdpo import NCDPO
from sb3_ncdpo.toy_envs import TargetEnv

SETTINGS = {"default (x0_clip=1)": {}, "x0_clip_final=False": dict(x0_clip_final=False), "x0_clip=None": dict(x0_clip=None)}


def main() -> None:
    th.set_num_threads(1)
    print("| chain | seed 0 | seed 1 | seed 2 |\n|---|---|---|---|")
    for name, overrides in SETTINGS.items():
        returns = []
        for seed in range(3):
            policy_kwargs = dict(n_denoising_steps=3, denoiser_hidden_sizes=[64, 64], log_std_init=-1.0, **overrides)
            policy_kwargs["net_arch"] = dict(pi=[], vf=[32])
            env = make_vec_env(TargetEnv, n_envs=4, seed=seed)
            model = NCDPO("MlpPolicy", env, n_steps=128, batch_size=128, n_epochs=10, learning_rate=1e-3, gamma=0.0, seed=seed,
                          policy_kwargs=policy_kwargs)  # fmt: skip
            model.learn(8192)
            returns.append(evaluate_policy(model, make_vec_env(TargetEnv, n_envs=1, seed=1), n_eval_episodes=100)[0])
        print(f"| {name} | " + " | ".join(f"{r:.4f}" for r in returns) + " |", flush=True)


if __name__ == "__main__":
    main()
