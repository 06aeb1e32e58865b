"""
How the quality of scripted-expert demonstrations and the length of behaviour cloning set a Meta-World clone's
success rate (a pilot for choosing the fine-tuning benchmark's tasks and data): per task, ``collect_policy_demos``
records the scripted expert (``metaworld.policies``) with Gaussian action noise on every episode and a larger noise on
a share of them; a diffusion policy with 4-action chunks (DPPO's Gym setting; K=10, epsilon prediction, 256-256
denoiser) is cloned on them (``--seeds`` clones, BC seeds 0, 1, ..., on the same demonstrations; with
``--bc-patience``, until the validation loss stops improving); each clone's success rate and return are measured on
``--n-eval-episodes`` deterministic episodes (evaluation env seeded 100). One line of JSON per task and BC seed is
printed and appended to ``--out``.

    python benchmarks/metaworld_bc_pilot.py --tasks push-v3 pick-place-v3 --n-episodes 20 --action-noise 0.1 \\
        --noisy-fraction 0.5 --noisy-action-noise 1.0 --bc-steps 3000 --out pilot.jsonl
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecEnv
from torch import nn

from sb3_ncdpo import NCDPO
from sb3_ncdpo.pretrain.bc import BCConfig, pretrain
from sb3_ncdpo.pretrain.demos import GetActionPolicy, collect_policy_demos, dataset_transitions
from sb3_ncdpo.registration import metaworld_id

CLONE_KWARGS = dict(
    net_arch=dict(pi=[], vf=[256, 256]), activation_fn=nn.ReLU, ortho_init=False, prediction_type="epsilon",
    denoiser_hidden_sizes=[256, 256], horizon=4, n_action_steps=4,
)  # fmt: skip


def evaluate_success(model: NCDPO, env: VecEnv, n_episodes: int) -> tuple[float, list[bool]]:
    """:return: The mean return of ``n_episodes`` deterministic episodes and their success flags"""
    successes: list[bool] = []

    def log_success(locals_: dict, globals_: dict) -> None:
        if locals_["done"]:
            successes.append(bool(locals_["info"].get("is_success")))

    mean, _ = evaluate_policy(model, env, n_eval_episodes=n_episodes, deterministic=True, callback=log_success)
    return float(mean), successes


def pilot(task: str, args: argparse.Namespace, work: Path) -> list[dict]:
    """:return: The demonstrations' and each clone's success rate and return for ``task``, one row per BC seed"""
    from metaworld.policies import ENV_POLICY_MAP

    start = time.perf_counter()
    dataset_id = f"pilot/{task.removesuffix('-v3')}-v0"
    dataset = collect_policy_demos(
        GetActionPolicy(ENV_POLICY_MAP[task]()), metaworld_id(task), dataset_id, args.n_episodes,
        action_noise=args.action_noise, noisy_fraction=args.noisy_fraction, noisy_action_noise=args.noisy_action_noise, seed=0,
    )  # fmt: skip
    demos = dataset_transitions(dataset)
    assert demos.episode_successes is not None  # the Meta-World ids report success
    recorded = time.perf_counter()
    demo_seconds = round(recorded - start)
    settings = {
        k: getattr(args, k)
        for k in ("n_episodes", "action_noise", "noisy_fraction", "noisy_action_noise", "bc_steps", "bc_patience")
    }
    rows = []
    for bc_seed in range(args.seeds):
        folder = work / task / f"seed{bc_seed}"
        config = BCConfig(n_steps=args.bc_steps, patience=args.bc_patience, seed=bc_seed)
        result = pretrain(dataset_id, folder, "diffusion", CLONE_KWARGS, config, progress_bar=False)
        cloned = time.perf_counter()
        env = make_vec_env(metaworld_id(task), n_envs=1, seed=100)
        model = NCDPO("MlpDiffusionPolicy", env, pretrained=folder, seed=bc_seed)
        # the model's env: the clone's observation normaliser wraps `env` there
        mean, successes = evaluate_success(model, model.get_env(), args.n_eval_episodes)
        seconds = dict(demos=demo_seconds, bc=round(cloned - recorded), eval=round(time.perf_counter() - cloned))
        rows.append(
            dict(
                task=task,
                **settings,
                bc_seed=bc_seed,
                demo_success=float(demos.episode_successes.mean()),
                demo_return=float(demos.episode_returns.mean()),
                demo_steps=len(demos.actions),
                bc_best_step=result.best_step,
                bc_val_loss=min(r["val_loss"] for r in result.history),
                bc_success=float(np.mean(successes)),
                n_eval_episodes=args.n_eval_episodes,
                bc_return=float(mean),
                seconds=seconds,
            )
        )
        recorded = time.perf_counter()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", required=True, help="Meta-World task names (push-v3, ...)")
    parser.add_argument("--n-episodes", type=int, default=20)
    parser.add_argument("--action-noise", type=float, default=0.1)
    parser.add_argument("--noisy-fraction", type=float, default=0.5)
    parser.add_argument("--noisy-action-noise", type=float, default=1.0)
    parser.add_argument("--bc-steps", type=int, default=3000, help="BC gradient steps (at most, with --bc-patience)")
    parser.add_argument("--bc-patience", type=int, default=0, help="BC early stopping (BCConfig.patience; 0: off)")
    parser.add_argument("--seeds", type=int, default=1, help="BC seeds (clones) per task, on the same demonstrations")
    parser.add_argument("--n-eval-episodes", type=int, default=10)
    parser.add_argument("--out", type=Path, required=True, help="JSON lines, one per task (appended)")
    args = parser.parse_args()
    th.set_num_threads(1)
    with tempfile.TemporaryDirectory() as work:  # datasets and clones are the pilot's own, thrown away after it
        os.environ["MINARI_DATASETS_PATH"] = str(Path(work) / "minari")
        for task in args.tasks:
            for row in pilot(task, args, Path(work) / "clones"):
                print(json.dumps(row), flush=True)
                with open(args.out, "a") as file:
                    file.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
