"""
Does a policy get trapped at the action bounds? One variant (policy / algorithm overrides) on one env, some seeds:
every ``--check-freq`` env steps, the share of deterministic action components at the bounds (``|a| >= 1`` in the
normalised action space, on up to 500 states of the latest rollout), the deterministic evaluation return, and the
update's diagnostics (gradient norm before clipping, approx KL, clip fraction, the final std, the learning rate).
Each run is written to ``<out>/<label>__<env>__seed<seed>.json`` when it finishes; finished runs are skipped, so the
command resumes. The table covers every run in ``<out>``.

Example (the measurements behind the defaults; docs/benchmarks/defaults.md, "Action bounds")::

    python benchmarks/action_bounds.py --env Reacher-v5 --hyperparams defaults --label old \\
        --policy-kwargs "dict(x0_clip_final=True)" --out benchmarks/results/action_bounds
"""

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import sync_envs_normalization

from sb3_ncdpo.common.atomic import atomic_file
from sb3_ncdpo.compare import make_model
from sb3_ncdpo.compare.runs import HYPERPARAMS
from sb3_ncdpo.zoo import eval_policy_kwargs

DIAGNOSTICS = ("train/grad_norm", "train/approx_kl", "train/clip_fraction", "train/std", "train/learning_rate")


class BoundsCallback(BaseCallback):
    """Records one row every ``check_freq`` env steps, at the end of a rollout."""

    def __init__(self, eval_env: Any, check_freq: int, n_eval_episodes: int) -> None:
        super().__init__()
        self.eval_env, self.check_freq, self.n_eval_episodes = eval_env, check_freq, n_eval_episodes
        self.rows: list[dict[str, float]] = []
        self.next_check = check_freq

    def _on_rollout_start(self) -> None:
        # The logger still holds the previous update's values here (SB3 dumps them after the rollout).
        if self.num_timesteps < self.next_check or self.num_timesteps == 0:
            return
        self.next_check += self.check_freq
        obs = self.model.rollout_buffer.observations.reshape(-1, *self.model.observation_space.shape)
        obs = th.as_tensor(obs[np.linspace(0, len(obs) - 1, min(500, len(obs))).astype(int)])
        policy = self.model.policy
        with th.no_grad():
            if hasattr(policy, "get_distribution") and hasattr(policy, "sample_noise"):
                noise = th.zeros(len(obs), *policy.noise_shape)
                mean = policy.get_distribution(obs, noise).get_actions(deterministic=True)
            else:  # SB3's Gaussian policy: its mean, which the env's clip meets at the bounds
                mean = policy.get_distribution(obs).get_actions(deterministic=True)
                low, high = (th.as_tensor(b) for b in (self.model.action_space.low, self.model.action_space.high))
                mean = 2 * (mean - low) / (high - low) - 1
        sync_envs_normalization(self.model.get_env(), self.eval_env)
        returns, _ = evaluate_policy(self.model, self.eval_env, self.n_eval_episodes, deterministic=True)
        logged = self.model.logger.name_to_value
        row = dict(
            timesteps=self.num_timesteps,
            eval_return=float(returns),
            at_bound=float((mean.abs() >= 1 - 1e-6).float().mean()),
            outside=float((mean.abs() > 1 + 1e-6).float().mean()),
        )
        row.update({key.split("/")[1]: float(logged.get(key, float("nan"))) for key in DIAGNOSTICS})
        self.rows.append(row)
        print(" ".join(f"{k}={v:.4g}" for k, v in row.items()), flush=True)

    def _on_step(self) -> bool:
        return True


def run(args: argparse.Namespace, seed: int, path: Path) -> None:
    """Train one seed and write its JSON."""
    policy_kwargs, algo_kwargs = eval_policy_kwargs(args.policy_kwargs), eval_policy_kwargs(args.algo_kwargs)
    model, eval_env = make_model(args.algo, args.env, seed, policy_kwargs, algo_kwargs, hyperparams=args.hyperparams)
    callback = BoundsCallback(eval_env, args.check_freq, args.n_eval_episodes)
    start = time.perf_counter()
    model.learn(args.timesteps, callback=callback)
    callback.next_check = 0
    callback._on_rollout_start()  # the final policy
    result = dict(
        label=args.label,
        algo=args.algo,
        env=args.env,
        seed=seed,
        hyperparams=args.hyperparams,
        policy_kwargs=args.policy_kwargs,
        algo_kwargs=args.algo_kwargs,
        timesteps=args.timesteps,
        seconds=round(time.perf_counter() - start, 1),
        rows=callback.rows,
    )
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(result, indent=1))


def table(out: Path) -> str:
    """:return: One line per finished run of ``out``: final return, at-bound share over the checks, diagnostics"""
    lines = [
        "| env | label | seed | final return | best return | at bound (first → last check) | max at bound | "
        "grad norm (median) | approx_kl (median, max) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for path in sorted(out.glob("*.json")):
        r = json.loads(path.read_text())
        rows = r["rows"]
        bound = [row["at_bound"] for row in rows]
        kl = [row["approx_kl"] for row in rows if not np.isnan(row["approx_kl"])]
        grad = [row["grad_norm"] for row in rows if not np.isnan(row["grad_norm"])]
        lines.append(
            f"| {r['env']} | {r['label']} | {r['seed']} | {rows[-1]['eval_return']:.1f} | "
            f"{max(row['eval_return'] for row in rows):.1f} | {bound[0]:.2f} → {bound[-1]:.2f} | {max(bound):.2f} | "
            f"{np.median(grad) if grad else float('nan'):.3g} | {np.median(kl) if kl else float('nan'):.3g}, "
            f"{max(kl) if kl else float('nan'):.3g} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", required=True)
    parser.add_argument("--algo", default="ncdpo")
    parser.add_argument("--hyperparams", choices=HYPERPARAMS, default="packaged")
    parser.add_argument("--label", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--timesteps", type=int, default=100_000)
    parser.add_argument("--check-freq", type=int, default=10_000)
    parser.add_argument("--n-eval-episodes", type=int, default=10)
    parser.add_argument("--policy-kwargs", default="")
    parser.add_argument("--algo-kwargs", default="")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args()
    th.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.table_only:
        for seed in args.seeds:
            path = args.out / f"{args.label}__{args.env.replace('/', '-')}__seed{seed}.json"
            if not path.exists():
                run(args, seed, path)
    text = table(args.out)
    print(text)
    with atomic_file(args.out / "table.md") as tmp:
        tmp.write_text(text + "\n")


if __name__ == "__main__":
    main()
