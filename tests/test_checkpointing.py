"""``gradient_checkpointing``: the update's memory hardly grows with K, and its gradients are the plain ones."""

import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from sb3_ncdpo import NCDPO, DiffusionActorCriticPolicy
from sb3_ncdpo.common.memory import saved_tensor_bytes


def make_policy(k: int, **kwargs) -> DiffusionActorCriticPolicy:
    th.manual_seed(0)
    box = spaces.Box(-1.0, 1.0, (3,))
    return DiffusionActorCriticPolicy(spaces.Box(-1.0, 1.0, (11,)), box, lambda _: 1e-3, n_denoising_steps=k, **kwargs)


def loss_of(policy: DiffusionActorCriticPolicy, batch: int = 256) -> th.Tensor:
    generator = th.Generator().manual_seed(1)
    obs, actions = th.randn(batch, 11, generator=generator), th.rand(batch, 3, generator=generator) * 2 - 1
    noises = th.randn(batch, *policy.noise_shape, generator=generator)
    values, log_prob, entropy = policy.evaluate_actions(obs, actions, noises)
    return log_prob.mean() + values.mean() + entropy.mean()


@pytest.mark.parametrize("kwargs", [{}, dict(prediction_type="epsilon", sampler="ddim", ddim_eta=0.5, residual=True,
                                             denoiser_hidden_sizes=[64, 64, 64])])  # fmt: skip
def test_checkpointed_gradients_equal_the_plain_ones(kwargs):
    plain, checkpointed = make_policy(10, **kwargs), make_policy(10, gradient_checkpointing=True, **kwargs)
    checkpointed.load_state_dict(plain.state_dict())
    for policy in (plain, checkpointed):
        policy.zero_grad()
        loss_of(policy).backward()
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters(), strict=True):
        assert a.grad is not None and b.grad is not None, name
        th.testing.assert_close(b.grad, a.grad, rtol=1e-6, atol=1e-7, msg=name)


def test_the_update_s_memory_hardly_grows_with_k():
    plain = {k: saved_tensor_bytes(lambda k=k: loss_of(make_policy(k)))[0] for k in (1, 20)}
    checkpointed = {
        k: saved_tensor_bytes(lambda k=k: loss_of(make_policy(k, gradient_checkpointing=True)))[0] for k in (1, 20)
    }
    assert plain[20] > 8 * plain[1]  # without it: linear in K
    assert checkpointed[20] < 2 * plain[1], (plain, checkpointed)


def test_ncdpo_trains_with_checkpointing_and_keeps_its_diagnostics_and_invariant():
    kwargs = dict(n_denoising_steps=5, gradient_checkpointing=True)
    model = NCDPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=32, n_epochs=2, policy_kwargs=kwargs, seed=0)
    model.learn(128)
    ratio = model.logger.name_to_value["train/eps_grad_ratio_first_last"]
    assert np.isfinite(ratio) and ratio > 0  # the gradient hooks see every step's gradient through the checkpoints
    model.collect_rollouts(model.env, model._init_callback(None), model.rollout_buffer, n_rollout_steps=64)
    data = next(model.rollout_buffer.get(None))
    with th.no_grad():
        _, log_prob, _ = model.policy.evaluate_actions(data.observations, data.actions, data.noises)
    assert (log_prob - data.old_log_prob).abs().max().item() < 1e-5
    assert model.policy.traces.pick(model.policy.traces.actor_critic, data.observations) is None  # with gradient: eager
