"""
The stored-noise invariant, measured: right after a rollout, re-evaluating the buffer with the stored noise must give
back the rollout's log-probabilities; with fresh noise it must not. Prints the max abs error for several chain
settings on Pendulum-v1 (2048 transitions each), with rollouts of 1 env (batch-1 policy calls, so float32 rounding
differs from the batched replay) and of 4 envs.

    python benchmarks/invariant_error.py
"""

import torch as th
from stable_baselines3.common.env_util import make_vec_env

from sb3_ncdpo import NCDPO

SETTINGS = {
    "ddpm K=10 (default)": {},
    "ddpm K=1": dict(n_denoising_steps=1),
    "ddpm K=20 linear": dict(n_denoising_steps=20, noise_schedule="linear"),
    "ddim K=10 eta=0": dict(sampler="ddim", ddim_eta=0.0),
    "ddim K=10 eta=1, noise_clip=3": dict(sampler="ddim", ddim_eta=1.0, noise_clip=3.0),
    "ddpm K=10, x0_clip_final=False": dict(x0_clip_final=False),
    "ddpm K=10, x0_clip=None": dict(x0_clip=None),
}


def replay_errors(policy_kwargs: dict, n_envs: int) -> tuple[float, float]:
    """:return: max abs log-prob error with the stored noise and with fresh noise"""
    env = make_vec_env("Pendulum-v1", n_envs=n_envs, seed=0)
    model = NCDPO("MlpPolicy", env, n_steps=2048 // n_envs, seed=0, policy_kwargs=policy_kwargs)
    _, callback = model._setup_learn(total_timesteps=2048, callback=None)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)  # type: ignore[arg-type]
    batch = next(model.rollout_buffer.get(batch_size=None))
    with th.no_grad():
        _, stored, _ = model.policy.evaluate_actions(batch.observations, batch.actions, batch.noises)
        _, fresh, _ = model.policy.evaluate_actions(batch.observations, batch.actions, th.randn_like(batch.noises))
    return (stored - batch.old_log_prob).abs().max().item(), (fresh - batch.old_log_prob).abs().max().item()


def main() -> None:
    th.set_num_threads(1)
    print("| chain | stored noise, 1 env | stored noise, 4 envs | fresh noise, 4 envs |")
    print("|---|---|---|---|")
    for name, policy_kwargs in SETTINGS.items():
        one_env, _ = replay_errors(policy_kwargs, n_envs=1)
        four_envs, fresh = replay_errors(policy_kwargs, n_envs=4)
        print(f"| {name} | {one_env:.1e} | {four_envs:.1e} | {fresh:.2f} |", flush=True)


if __name__ == "__main__":
    main()
