"""
One training run with the packaged hyperparameters plus overrides, printing a learning curve: every ``--every``
rollouts, the mean training-episode return (stochastic policy), the deterministic evaluation return, and the PPO
diagnostics that show an unstable update (``approx_kl``, ``clip_fraction``) and the final-step std.

Example (the runs quoted in the README)::

    python benchmarks/learning_curve.py --env Pendulum-v1 --algo-kwargs "dict(learning_rate=1e-3)"
    python benchmarks/learning_curve.py --env Pendulum-v1 --policy-kwargs "dict(x0_clip_final=False)"
"""

import argparse

import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.utils import safe_mean
from stable_baselines3.common.vec_env import sync_envs_normalization

from sb3_ncdpo.compare import COMPARED, make_model
from sb3_ncdpo.zoo import eval_policy_kwargs


class CurveCallback(BaseCallback):
    """Prints one row every ``every`` rollouts (the logged train/* values are those of the previous update)."""

    def __init__(self, eval_env, every: int, n_eval_episodes: int) -> None:
        super().__init__()
        self.eval_env, self.every, self.n_eval_episodes = eval_env, every, n_eval_episodes
        self.n_rollouts = 0

    def _on_rollout_end(self) -> None:
        self.n_rollouts += 1
        if self.n_rollouts % self.every:
            return
        sync_envs_normalization(self.model.get_env(), self.eval_env)
        deterministic, _ = evaluate_policy(self.model, self.eval_env, self.n_eval_episodes, deterministic=True)
        logged = self.model.logger.name_to_value
        keys = ("train/approx_kl", "train/clip_fraction", "train/std")
        diagnostics = " | ".join(f"{logged.get(key, float('nan')):.3f}" for key in keys)
        rollout = safe_mean([info["r"] for info in self.model.ep_info_buffer])
        print(f"| {self.num_timesteps} | {rollout:.0f} | {deterministic:.0f} | {diagnostics} |", flush=True)

    def _on_step(self) -> bool:
        return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--algo", default="ncdpo", choices=COMPARED)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timesteps", type=int, default=102_400)
    parser.add_argument("--every", type=int, default=5, help="rollouts between two rows")
    parser.add_argument("--n-eval-episodes", type=int, default=5)
    parser.add_argument("--policy-kwargs", default="dict()", help="overrides, a Python dict expression")
    parser.add_argument("--algo-kwargs", default="dict()", help="overrides, a Python dict expression")
    args = parser.parse_args()
    th.set_num_threads(1)
    policy_kwargs, algo_kwargs = eval_policy_kwargs(args.policy_kwargs), eval(args.algo_kwargs, {"dict": dict})
    model, eval_env = make_model(args.algo, args.env, args.seed, policy_kwargs, algo_kwargs)
    print(f"{args.algo} on {args.env}, seed {args.seed}, policy overrides {policy_kwargs}, algo overrides {algo_kwargs}")
    print("| timesteps | rollout return | deterministic return | approx_kl | clip_fraction | std |\n|---|---|---|---|---|---|")
    model.learn(args.timesteps, callback=CurveCallback(eval_env, args.every, args.n_eval_episodes))


if __name__ == "__main__":
    main()
