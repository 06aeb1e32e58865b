"""
The stored-noise invariant, measured: right after a rollout, re-evaluating the buffer with the stored noise must give
back the rollout's log-probabilities; with fresh noise it must not. Prints the max abs error for several chain
settings on Pendulum-v1 (2048 transitions each).

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
}


def main() -> None:
    th.set_num_threads(1)
    print("| chain | max abs error, stored noise | max abs error, fresh noise |")
    print("|---|---|---|")
    for name, policy_kwargs in SETTINGS.items():
        env = make_vec_env("Pendulum-v1", n_envs=4, seed=0)
        model = NCDPO("MlpPolicy", env, n_steps=512, seed=0, policy_kwargs=policy_kwargs)
        _, callback = model._setup_learn(total_timesteps=2048, callback=None)
        model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)  # type: ignore[arg-type]
        batch = next(model.rollout_buffer.get(batch_size=None))
        with th.no_grad():
            _, stored, _ = model.policy.evaluate_actions(batch.observations, batch.actions, batch.noises)
            _, fresh, _ = model.policy.evaluate_actions(batch.observations, batch.actions, th.randn_like(batch.noises))
        stored_error = (stored - batch.old_log_prob).abs().max().item()
        fresh_error = (fresh - batch.old_log_prob).abs().max().item()
        print(f"| {name} | {stored_error:.2e} | {fresh_error:.2f} |")


if __name__ == "__main__":
    main()
