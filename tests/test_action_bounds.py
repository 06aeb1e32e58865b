"""
The defaults that keep a policy from being trapped at the action bounds, and the update rules beside them: the
gradient clipped per parameter group, the KL-adapted learning rate.
"""

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.env_util import make_vec_env

from sb3_ncdpo import DPPO, NCDPO
from sb3_ncdpo.common.update_rules import LR_SCALE_RANGE, LR_STEP, adapted_lr_scale, clip_gradients, parameter_groups
from sb3_ncdpo.toy_envs import TargetEnv

TRAP_POLICY = dict(n_denoising_steps=3, denoiser_hidden_sizes=[64, 64], log_std_init=-1.0, net_arch=dict(pi=[], vf=[32]))


def model_at_the_bound(**policy_kwargs) -> NCDPO:
    """An NCDPO policy whose predicted clean action starts at 1.25 in every state and dimension, past the bound 1."""
    env = make_vec_env(TargetEnv, n_envs=4, seed=0)
    model = NCDPO(
        "MlpDiffusionPolicy",
        env,
        n_steps=128,
        batch_size=128,
        n_epochs=10,
        learning_rate=1e-3,
        gamma=0.0,
        seed=0,
        policy_kwargs={**TRAP_POLICY, **policy_kwargs},
    )
    with th.no_grad():
        model.policy.denoiser.output.weight.mul_(0.01)
        model.policy.denoiser.output.bias.fill_(1.25)
    return model


def deterministic_means(model: NCDPO, n_states: int = 200) -> np.ndarray:
    """:return: The zero-noise final means (normalised, before any clip) on random TargetEnv observations"""
    obs = th.as_tensor(np.random.default_rng(0).uniform(-1, 1, (n_states, 2)), dtype=th.float32)
    with th.no_grad():
        noise = th.zeros(n_states, *model.policy.noise_shape)
        return model.policy.get_distribution(obs, noise).get_actions(deterministic=True).numpy()


def test_default_final_mean_comes_back_from_the_bound():
    """TargetEnv rewards actions inside [-0.8, 0.8]: a policy that starts past the bound must move back inside."""
    model = model_at_the_bound()
    assert (deterministic_means(model) > 1.0).all()
    model.learn(8192)
    means = deterministic_means(model)
    assert np.mean(np.abs(means) < 0.95) > 0.9, f"still at the bound: {np.mean(np.abs(means) >= 0.95):.2f} of components"


def test_clipped_final_mean_stays_at_the_bound():
    """The old default, kept as an option: the clipped mean gets no gradient, so it never leaves the bound."""
    model = model_at_the_bound(x0_clip_final=True)
    assert (deterministic_means(model) == 1.0).all()
    model.learn(8192)
    assert (deterministic_means(model) == 1.0).all()


@pytest.mark.parametrize("algo", [NCDPO, DPPO])
def test_parameter_groups_partition_the_trainable_parameters(algo):
    model = algo("MlpDiffusionPolicy", "Pendulum-v1", n_steps=64, batch_size=64, policy_kwargs=dict(n_denoising_steps=2))
    groups = parameter_groups(model.policy)
    ids = [id(p) for params in groups.values() for p in params]
    assert sorted(ids) == sorted(id(p) for p in model.policy.parameters() if p.requires_grad)
    assert len(set(ids)) == len(ids)
    log_std = model.policy.log_std  # DPPO's default std is fixed, so not trained
    assert groups["std"] == ([log_std] if algo is NCDPO else [])
    assert log_std.requires_grad == (algo is NCDPO)
    assert {id(p) for p in model.policy.denoiser.parameters()} <= {id(p) for p in groups["actor"]}
    assert {id(p) for p in model.policy.value_net.parameters()} <= {id(p) for p in groups["critic"]}


def test_gradient_clipped_per_group():
    """Each group's norm is clipped on its own: a large critic gradient leaves the actor's and the std's whole."""
    actor, critic, std = (th.nn.Parameter(th.zeros(n)) for n in (4, 3, 2))
    actor.grad, critic.grad, std.grad = th.full((4,), 0.1), th.full((3,), 100.0), th.full((2,), 0.3)
    before = {name: p.grad.clone() for name, p in dict(actor=actor, critic=critic, std=std).items()}
    total, norms = clip_gradients(dict(actor=[actor], critic=[critic], std=[std]), max_grad_norm=0.5)
    assert norms == pytest.approx(dict(actor=0.2, critic=100 * 3**0.5, std=0.3 * 2**0.5), rel=1e-6)
    assert total.item() == pytest.approx((0.04 + 30000 + 0.18) ** 0.5, rel=1e-6)
    th.testing.assert_close(actor.grad, before["actor"])
    th.testing.assert_close(std.grad, before["std"])
    assert th.linalg.vector_norm(critic.grad).item() == pytest.approx(0.5, rel=1e-5)


def test_adapted_lr_scale_rule():
    low, high = LR_SCALE_RANGE
    assert adapted_lr_scale(0.5, approx_kl=0.03, desired_kl=0.01) == pytest.approx(0.5 / LR_STEP)
    assert adapted_lr_scale(0.5, approx_kl=0.004, desired_kl=0.01) == pytest.approx(0.5 * LR_STEP)
    assert adapted_lr_scale(0.5, approx_kl=0.01, desired_kl=0.01) == 0.5
    assert adapted_lr_scale(high, approx_kl=0.0, desired_kl=0.01) == high
    assert adapted_lr_scale(low, approx_kl=1.0, desired_kl=0.01) == low


def test_desired_kl_lowers_a_learning_rate_that_moves_the_policy_too_far():
    """With a learning rate far too large the KL exceeds twice the target, so the rate goes down and is logged."""
    model = NCDPO(
        "MlpDiffusionPolicy",
        "Pendulum-v1",
        n_steps=256,
        batch_size=64,
        n_epochs=4,
        learning_rate=3e-2,
        desired_kl=0.001,
        clip_grad_per_group=True,
        seed=0,
        policy_kwargs=dict(n_denoising_steps=2),
    )
    model.learn(512)  # two updates: the first at the given rate, the second at 1 / 1.5 of it
    logged = model.logger.name_to_value
    assert logged["train/approx_kl"] > 2 * 0.001
    assert model.lr_scale == pytest.approx(1 / LR_STEP**2)
    assert logged["train/learning_rate"] == pytest.approx(3e-2 / LR_STEP)
    assert model.policy.optimizer.param_groups[0]["lr"] == pytest.approx(3e-2 / LR_STEP)
    assert {"train/grad_norm_actor", "train/grad_norm_critic", "train/grad_norm_std"} <= set(logged)


@pytest.mark.parametrize("algo", [NCDPO, DPPO])
def test_critic_learning_rate_trains_the_critic_at_its_own_rate(algo, tmp_path):
    """Actor at rate 0, critic at 1e-3: only the critic moves, the rates are logged, and a saved model keeps them."""
    kwargs = dict(n_steps=64, batch_size=32, n_epochs=2, learning_rate=0.0, critic_learning_rate=1e-3, seed=0)
    model = algo("MlpDiffusionPolicy", "Pendulum-v1", policy_kwargs=dict(n_denoising_steps=2), **kwargs)
    groups = parameter_groups(model.policy)
    before = {name: [p.detach().clone() for p in params] for name, params in groups.items()}
    model.learn(128)
    for name, params in groups.items():
        moved = [not th.equal(p, q) for p, q in zip(params, before[name], strict=True)]
        assert all(moved) if name == "critic" else not any(moved), name
    rates = sorted(group["lr"] for group in model.policy.optimizer.param_groups)
    assert rates == [0.0, 1e-3]
    assert model.logger.name_to_value["train/critic_learning_rate"] == 1e-3
    model.save(tmp_path / "model")
    loaded = algo.load(tmp_path / "model", env=model.get_env())
    assert sorted(group["lr"] for group in loaded.policy.optimizer.param_groups) == [0.0, 1e-3]
    th.testing.assert_close(loaded.policy.optimizer.state_dict()["state"], model.policy.optimizer.state_dict()["state"])
    loaded.learn(64)  # the optimizer state fits the loaded groups


@pytest.mark.parametrize("value", [0.0, -1e-3, "1e-3", True])
def test_a_bad_critic_learning_rate_is_refused(value):
    with pytest.raises(ValueError, match=r"critic_learning_rate must be a float > 0 .* got"):
        NCDPO("MlpDiffusionPolicy", "Pendulum-v1", critic_learning_rate=value)
