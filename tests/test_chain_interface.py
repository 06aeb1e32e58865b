"""The chain interface: a new chain (tests/euler_flow_chain.py) plus its registration runs everywhere a chain runs."""

import numpy as np
import pytest
import torch as th
from euler_flow_chain import EulerFlowChain

from sb3_ncdpo import DPPO, NCDPO
from sb3_ncdpo.common.diffusion import ChainConfig, DDIMChain, DDPMChain, DenoisingChain, make_chain, register_chain
from sb3_ncdpo.common.pretrained import load_pretrained, save_pretrained
from sb3_ncdpo.pretrain.bc import BCConfig, behaviour_cloning, denoising_loss
from sb3_ncdpo.pretrain.demos import Transitions
from sb3_ncdpo.toy_envs import TargetEnv

register_chain("euler", EulerFlowChain)
SMALL = dict(n_denoising_steps=4, denoiser_hidden_sizes=[32, 32], net_arch=dict(pi=[32], vf=[32]), sampler="euler")


def test_the_registry_builds_each_sampler_s_chain():
    assert type(make_chain(ChainConfig(sampler="ddpm"))) is DDPMChain
    assert type(make_chain(ChainConfig(sampler="ddim"))) is DDIMChain
    assert type(make_chain(ChainConfig(sampler="euler"))) is EulerFlowChain
    with pytest.raises(ValueError, match=r"sampler must be one of \('ddpm', 'ddim', 'euler'\), got 'heun'"):
        ChainConfig(sampler="heun")
    with pytest.raises(ValueError, match="sampler 'ddpm' is already registered"):
        register_chain("ddpm", EulerFlowChain)
    with pytest.raises(ValueError, match="chain_class must be a subclass of DenoisingChain"):
        register_chain("other", dict)  # type: ignore[arg-type]
    with pytest.raises(TypeError):  # the interface's abstract methods must be implemented
        DenoisingChain(ChainConfig())  # type: ignore[abstract]


def test_recorded_chain_is_the_chain_and_lands_on_the_prediction():
    chain = make_chain(
        ChainConfig(sampler="euler", n_denoising_steps=5, min_step_std=0.3, x0_clip=None, prediction_type="sample")
    )
    weight = th.randn(2, 2, dtype=th.float64)

    def eps_model(x: th.Tensor, k: int) -> th.Tensor:
        return th.tanh(x @ weight) + k

    noise = th.randn(3, 5, 2, dtype=th.float64)
    inputs, means = chain.record(eps_model, noise)
    th.testing.assert_close(means[:, -1], chain.final_mean(eps_model, noise), rtol=0, atol=0)
    th.testing.assert_close(inputs[:, 0], noise[:, 0])
    for i in range(4):  # x_{k-1} = mean_k + std_k z_k
        k = 5 - i
        th.testing.assert_close(inputs[:, i + 1], means[:, i] + chain.noise_std(k) * noise[:, i + 1])
    # the final Euler step of sample-prediction lands on the prediction
    th.testing.assert_close(means[:, -1], eps_model(inputs[:, -1], 1))


def test_ncdpo_trains_a_policy_on_the_new_chain_and_replays_its_noise(tmp_path):
    model = NCDPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=32, n_epochs=2, policy_kwargs=SMALL, seed=0)
    assert isinstance(model.policy.chain, EulerFlowChain)
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(128)
    assert any(not th.equal(a, b) for a, b in zip(before, model.policy.parameters(), strict=True))
    # The stored-noise invariant: a fresh rollout's noise, replayed through the chain, gives the stored log-probabilities.
    model.collect_rollouts(model.env, model._init_callback(None), model.rollout_buffer, n_rollout_steps=64)
    data = next(model.rollout_buffer.get(None))
    with th.no_grad():
        _, log_prob, _ = model.policy.evaluate_actions(data.observations, data.actions, data.noises)
    assert (log_prob - data.old_log_prob).abs().max().item() < 1e-5
    # The chain's settings are saved and rebuilt with the policy.
    model.save(tmp_path / "euler.zip")
    loaded = NCDPO.load(tmp_path / "euler.zip")
    assert isinstance(loaded.policy.chain, EulerFlowChain) and loaded.policy.chain.config == model.policy.chain.config
    obs = np.random.default_rng(0).uniform(-1, 1, (5, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])


def test_behaviour_cloning_and_the_pretrained_folder_use_the_new_chain(tmp_path):
    env = TargetEnv()
    rng = np.random.default_rng(0)
    obs = rng.uniform(-1, 1, (512, 2)).astype(np.float32)
    transitions = Transitions(obs, env.target(obs), np.repeat(np.arange(8), 64), np.zeros(8))
    kwargs = dict(SMALL, prediction_type="sample")
    result = behaviour_cloning(
        transitions, env.observation_space, env.action_space, "diffusion", kwargs, BCConfig(n_steps=300, eval_every=100), False
    )
    policy = result.policy
    assert isinstance(policy.chain, EulerFlowChain)
    first, last = result.history[0]["val_loss"], result.history[-1]["val_loss"]
    assert last < 0.5 * first, result.history
    # the loss is the chain's own: zero for the exact prediction
    actions = th.as_tensor(env.target(obs[:64]))
    exact = policy.chain.training_loss(lambda noisy, steps: actions, actions)
    assert exact.item() == 0.0
    assert denoising_loss(policy, th.as_tensor(obs[:64]), actions).item() > 0
    save_pretrained(tmp_path / "bc", policy, None, {})
    assert isinstance(load_pretrained(tmp_path / "bc").policy.chain, EulerFlowChain)
    model = DPPO("MlpPolicy", env, n_steps=16, batch_size=32, pretrained=str(tmp_path / "bc"), seed=0)
    assert isinstance(model.policy.chain, EulerFlowChain)
    model.learn(32)
    model = NCDPO(
        "MlpPolicy", env, n_steps=16, batch_size=16, pretrained=str(tmp_path / "bc"), policy_kwargs=dict(sampler="ddim")
    )
    assert isinstance(model.policy.chain, DDIMChain)
