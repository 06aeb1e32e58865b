"""
The fine-tuning benchmark: expert -> medium demonstrations (Minari) -> behaviour cloning -> online fine-tuning.

Stages (each one skips what its outputs already hold, so the script resumes where it stopped):

1. ``experts``: PPO with the packaged ``hyperparams/ppo.yml`` values (``sb3_ncdpo.compare.make_model``), with a
   checkpoint (model + VecNormalize statistics) every ``--checkpoint-freq`` steps; every checkpoint is evaluated.
2. ``demos``: the "medium" policy is the checkpoint whose return is closest to ``--medium-ratio`` times the expert's
   (D4RL's medium policies reach about a third of the expert); ``collect_demos`` records its stochastic actions into
   a local Minari dataset ``sb3-ncdpo/<env>/medium-v0``.
3. ``pretrain``: behaviour cloning of a diffusion policy (for NCDPO and DPPO) and of a Gaussian policy with PPO's
   architecture (for PPO) on that dataset.
4. ``finetune``: ``sb3-ncdpo compare`` runs from the pre-trained folders (``--pretrained``), evaluated at step 0 (the
   BC policy) and on a schedule; then the report: compare's CSV / curves / summary, plus ``finetune.md`` (expert,
   demo, BC and fine-tuned returns side by side).

Example (what benchmarks/results/finetune was made with is in its README)::

    python benchmarks/finetune.py --env Hopper-v5 --algos ncdpo ppo --seeds 3 --timesteps 50000
"""

import argparse
import csv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def expert_stage(env_id: str, work: Path, timesteps: int, checkpoint_freq: int, n_eval_episodes: int) -> Path:
    """Train the PPO expert with checkpoints and evaluate each; return the CSV of checkpoint returns."""
    import torch as th
    from stable_baselines3.common.callbacks import CheckpointCallback
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import VecNormalize, sync_envs_normalization

    from sb3_ncdpo.compare import make_model

    folder = work / "experts" / env_id
    table = folder / "checkpoints.csv"
    if table.exists():
        return table
    th.set_num_threads(1)
    model, eval_env = make_model("ppo", env_id, seed=0)
    checkpoint = CheckpointCallback(max(checkpoint_freq // model.n_envs, 1), str(folder), save_vecnormalize=True)
    model.learn(timesteps, callback=checkpoint)
    model.save(folder / "expert.zip")
    vec_normalize = model.get_vec_normalize_env()
    assert vec_normalize is not None
    vec_normalize.save(str(folder / "expert_vecnormalize.pkl"))
    rows = []
    for steps in [*sorted(int(p.stem.split("_")[2]) for p in folder.glob("rl_model_*_steps.zip")), -1]:
        name, stats = (
            ("expert.zip", "expert_vecnormalize.pkl")
            if steps < 0
            else (f"rl_model_{steps}_steps.zip", f"rl_model_vecnormalize_{steps}_steps.pkl")
        )
        from stable_baselines3 import PPO

        policy = PPO.load(folder / name, device="cpu")
        normalizer = VecNormalize.load(str(folder / stats), eval_env.venv)
        normalizer.training, normalizer.norm_reward = False, False
        sync_envs_normalization(normalizer, eval_env)
        mean, std = evaluate_policy(policy, eval_env, n_eval_episodes=n_eval_episodes, deterministic=False)
        rows.append(
            {
                "steps": steps if steps >= 0 else model.num_timesteps,
                "model": name,
                "stats": stats,
                "return_mean": mean,
                "return_std": std,
            }
        )
        print(f"{env_id} {name}: {mean:.1f} +- {std:.1f}", flush=True)
    with open(table, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", nargs="+", default=["Hopper-v5", "Walker2d-v5", "HalfCheetah-v5"])
    parser.add_argument("--stages", nargs="+", default=["experts", "demos", "pretrain", "finetune"])
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "out" / "finetune", help="models and datasets")
    parser.add_argument("--expert-timesteps", type=int, default=300_000)
    parser.add_argument("--checkpoint-freq", type=int, default=25_000)
    parser.add_argument("--n-eval-episodes", type=int, default=10)
    args = parser.parse_args()
    for env_id in args.env:
        if "experts" in args.stages:
            expert_stage(env_id, args.work, args.expert_timesteps, args.checkpoint_freq, args.n_eval_episodes)


if __name__ == "__main__":
    main()
