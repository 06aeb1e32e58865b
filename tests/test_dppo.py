"""DPPO's own invariants: the stored chain, per-step log-probabilities, the trained steps only, bad input, learning."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import BitFlippingEnv, IdentityEnvMultiBinary
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_ncdpo import DPPO, NCDPO, ChainDictRolloutBuffer, ChainRolloutBuffer
from sb3_ncdpo.dppo.denoising_mdp import DenoisingMDP
from sb3_ncdpo.toy_envs import TargetEnv

SMALL = dict(n_denoising_steps=4, denoiser_hidden_sizes=[32, 32], net_arch=[16])


def collected(model: DPPO) -> DPPO:
    """Fill the model's rollout buffer once, as learn() does before train()."""
    _, callback = model._setup_learn(total_timesteps=model.n_steps * model.n_envs, callback=None)
    assert model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
    return model


def replay(model: DPPO, batch) -> tuple[th.Tensor, th.Tensor]:
    """Each pair's log-probability recomputed from its stored step input and output, and the value."""
    with th.no_grad():
        values, means = model.policy.denoising_step_means(batch.observations, batch.x_k, batch.steps)
        log_prob = model.denoising_mdp.log_prob(batch.x_prev, means, model.policy.step_stds()[batch.steps - 1])
    return log_prob, values.flatten()


CHAINS = [
    SMALL,
    dict(SMALL, n_denoising_steps=1),
    dict(SMALL, n_denoising_steps=6, n_finetuned_steps=3),
    dict(SMALL, sampler="ddim", ddim_eta=1.0, noise_schedule="linear"),
    dict(SMALL, fixed_std=None, log_std_init=-1.0, min_step_std=0.0, noise_clip=None),
    dict(SMALL, prediction_type="sample", x0_clip=None),
    dict(SMALL, residual=True, denoiser_hidden_sizes=[32, 32, 32], x0_clip_final=False),
]


@pytest.mark.parametrize("policy_kwargs", CHAINS)
def test_stored_chain_reproduces_old_log_probs_of_every_step(policy_kwargs):
    env = make_vec_env("Pendulum-v1", n_envs=2, seed=0)
    model = collected(DPPO("MlpPolicy", env, n_steps=32, batch_size=64, policy_kwargs=policy_kwargs, seed=1))
    n_trained = model.policy.trained_steps
    batch = next(model.rollout_buffer.get(batch_size=None))
    # Every (environment step, trained denoising step) pair once, and no pair of a frozen step
    assert len(batch.steps) == 32 * 2 * n_trained
    assert sorted(th.bincount(batch.steps).tolist()) == [0] + [64] * n_trained
    log_prob, values = replay(model, batch)
    for k in range(1, n_trained + 1):
        rows = batch.steps == k
        assert (log_prob[rows] - batch.old_log_prob[rows]).abs().max().item() < 1e-5, k
    assert (values - batch.old_values).abs().max().item() < 1e-5
    # A chain read one step off is a different number: the pairs must be aligned with their steps
    shifted = batch._replace(steps=th.where(batch.steps == 1, 2, batch.steps - 1)) if n_trained > 1 else None
    if shifted is not None:
        assert (replay(model, shifted)[0] - batch.old_log_prob).abs().max().item() > 1e-2


def test_chain_layout():
    """x_K is the initial noise, x_0 the stored (unclipped) action, each x_{k-1} drawn around mu(x_k, k, s)."""
    model = collected(DPPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=64, policy_kwargs=SMALL, seed=0))
    buffer = model.rollout_buffer
    assert isinstance(buffer, ChainRolloutBuffer)
    chains = buffer.chains[:, 0]  # (n_steps, K + 1, dim)
    assert chains.shape == (64, 5, 1)
    np.testing.assert_array_equal(chains[:, -1], buffer.actions[:, 0])
    assert np.abs(chains[:, 0]).max() <= 3.0  # DPPO's noise clip (DEFAULT_POLICY_KWARGS)
    assert buffer.actions.std() > 0.05  # sampled actions (final std 0.1), not the means
    # The per-step log-probs sum to SB3's log_prob field
    np.testing.assert_allclose(buffer.step_log_probs.sum(-1), buffer.log_probs, rtol=1e-5, atol=1e-5)


def test_chain_is_ncdpo_chain_with_the_same_noise():
    """Given the same random draws, DPPO's recorded chain ends in the action NCDPO's noise-conditioned chain makes."""
    policy = DPPO("MlpPolicy", "Pendulum-v1", n_steps=16, batch_size=16, policy_kwargs=SMALL, seed=0).policy
    obs = th.randn(7, 3)
    with th.no_grad():
        th.manual_seed(3)
        actions, values, _, noises = policy.forward_with_noise(obs)
        th.manual_seed(3)
        chain_actions, chain_values, chain, means = policy.sample_chain(obs)
    th.testing.assert_close(chain_actions, actions)
    th.testing.assert_close(chain_values, values)
    th.testing.assert_close(chain[:, 0], noises[:, 0])  # x_K
    # x_{k-1} = mu_k + noise_std(k) * z_k for k >= 2
    for i, k in enumerate(range(policy.chain.n_steps, 1, -1)):
        th.testing.assert_close(chain[:, i + 1], means[:, i] + policy.chain.noise_std(k) * noises[:, i + 1])


@pytest.mark.parametrize("batch_size", [1, 5])
@pytest.mark.parametrize(
    "policy_kwargs", [SMALL, dict(SMALL, sampler="ddim", ddim_eta=1.0), dict(SMALL, prediction_type="sample")]
)
def test_traced_rollout_chain_is_the_eager_chain(policy_kwargs, batch_size):
    """Rollouts (no gradient) run the chain through a TorchScript trace: bit-identical to the eager chain."""
    policy = DPPO("MlpPolicy", "Pendulum-v1", n_steps=16, batch_size=16, policy_kwargs=policy_kwargs, seed=0).policy
    obs = th.randn(batch_size, 3)
    with th.no_grad():
        with policy.traces.eager():
            th.manual_seed(0)
            eager = policy.sample_chain(obs)
        assert not policy.traces.recorded_chain.traces
        th.manual_seed(0)
        traced = policy.sample_chain(obs)
    assert policy.traces.recorded_chain.traces  # the trace ran
    for a, b in zip(eager, traced, strict=True):
        assert th.equal(a, b)


def test_deterministic_action_is_the_zero_noise_chain():
    model = DPPO("MlpPolicy", "Pendulum-v1", n_steps=16, batch_size=16, policy_kwargs=SMALL, seed=0)
    obs = th.randn(5, 3)
    with th.no_grad():
        actions, _, chain, means = model.policy.sample_chain(obs, deterministic=True)
    th.testing.assert_close(chain[:, 1:], means)  # every step returns its mean
    predicted, _ = model.predict(obs.numpy(), deterministic=True)
    np.testing.assert_allclose(predicted, model.policy.unscale_action(np.clip(actions.numpy(), -1, 1)), rtol=1e-6)


def test_only_the_last_steps_are_trained():
    """
    With K' < K, the loss has terms for the steps k <= K' only; the frozen copy gets no gradient and does not change,
    so the beginning of the chain (x_K .. x_K') is the same before and after training, and its end is not.
    """
    policy_kwargs = dict(SMALL, n_denoising_steps=5, n_finetuned_steps=2)
    model = collected(DPPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=64, policy_kwargs=policy_kwargs, seed=0))
    policy = model.policy
    assert policy.frozen_actor is not None and model.rollout_buffer.step_log_probs.shape == (64, 1, 2)
    batch = next(model.rollout_buffer.get(batch_size=None))
    assert set(batch.steps.tolist()) == {1, 2}
    optimised = {id(p) for group in policy.optimizer.param_groups for p in group["params"]}
    assert not any(id(p) in optimised for p in policy.frozen_actor.parameters())

    # Each trained step's terms alone give the trained denoiser gradient; the frozen copy never gets any
    for k in (1, 2):
        policy.zero_grad()
        rows = batch.steps == k
        _, means = policy.denoising_step_means(batch.observations[rows], batch.x_k[rows], batch.steps[rows])
        stds = policy.step_stds()[batch.steps[rows] - 1]
        model.denoising_mdp.log_prob(batch.x_prev[rows], means, stds).sum().backward()
        assert policy.denoiser.output.weight.grad.abs().sum().item() > 0, k
        assert all(p.grad is None for p in policy.frozen_actor.parameters())

    obs = th.randn(8, 3)
    frozen_before = {k: v.clone() for k, v in policy.frozen_actor.state_dict().items()}
    trained_before = [p.detach().clone() for p in policy.denoiser.parameters()]
    with th.no_grad():
        th.manual_seed(0)
        _, _, chain_before, _ = policy.sample_chain(obs)
    model.train()
    assert all(th.equal(v, policy.frozen_actor.state_dict()[k]) for k, v in frozen_before.items())
    assert all(not th.equal(b, p) for b, p in zip(trained_before, policy.denoiser.parameters(), strict=True))
    with th.no_grad():
        th.manual_seed(0)
        _, _, chain_after, _ = policy.sample_chain(obs)
    # x_5, x_4, x_3, x_2 come from the initial noise and the frozen steps 5, 4, 3; x_1, x_0 from the trained steps 2, 1
    th.testing.assert_close(chain_after[:, :4], chain_before[:, :4], rtol=0, atol=0)
    assert not th.equal(chain_after[:, 4], chain_before[:, 4]) and not th.equal(chain_after[:, 5], chain_before[:, 5])


def test_frozen_steps_run_the_frozen_copy():
    """Changing the trained denoiser changes only the trained steps; reset_frozen_actor copies it to the frozen steps."""
    policy_kwargs = dict(SMALL, n_denoising_steps=5, n_finetuned_steps=2)
    policy = DPPO("MlpPolicy", "Pendulum-v1", n_steps=16, batch_size=16, policy_kwargs=policy_kwargs, seed=0).policy
    obs = th.randn(8, 3)

    def chain() -> th.Tensor:
        with th.no_grad():
            th.manual_seed(0)
            return policy.sample_chain(obs)[2]

    before = chain()
    with th.no_grad():
        for param in policy.denoiser.parameters():
            param.add_(0.1 * th.randn_like(param))
        for param in policy.mlp_extractor.policy_net.parameters():
            param.add_(0.1 * th.randn_like(param))
    edited = chain()
    th.testing.assert_close(edited[:, :4], before[:, :4], rtol=0, atol=0)
    policy.reset_frozen_actor()
    reset = chain()
    # x_3, x_2 now come from the edited network (x_4 does not depend on it: step K's x0 prediction, divided by
    # sqrt(alpha_bar_K) ~ 0.03, is clipped)
    assert all(not th.equal(reset[:, i], before[:, i]) for i in (2, 3))
    for name, param in policy.denoiser.state_dict().items():
        assert th.equal(param, policy.frozen_actor.denoiser.state_dict()[name])


def test_every_step_trained_by_default():
    model = DPPO("MlpPolicy", "Pendulum-v1", n_steps=16, batch_size=16, policy_kwargs=SMALL, seed=0)
    assert model.policy.frozen_actor is None and model.policy.trained_steps == 4
    assert not any(key.startswith("frozen_actor") for key in model.policy.state_dict())


def test_dict_observations():
    env = make_vec_env(lambda: BitFlippingEnv(n_bits=4, continuous=True, max_steps=4), n_envs=2)
    model = collected(DPPO("MultiInputPolicy", env, n_steps=16, batch_size=32, policy_kwargs=SMALL, seed=0))
    assert isinstance(model.rollout_buffer, ChainDictRolloutBuffer)
    for batch in model.rollout_buffer.get(batch_size=50):
        log_prob, values = replay(model, batch)
        assert (log_prob - batch.old_log_prob).abs().max().item() < 1e-5
        assert (values - batch.old_values).abs().max().item() < 1e-5
    model.learn(32)


def test_train_logs():
    model = DPPO("MlpPolicy", "Pendulum-v1", n_steps=32, batch_size=32, n_epochs=2, policy_kwargs=SMALL, seed=0)
    model.learn(64)
    logged = model.logger.name_to_value
    for key in ("train/approx_kl", "train/clip_fraction", "train/entropy_loss", "train/grad_norm", "train/value_loss"):
        assert np.isfinite(logged[key]), key
    assert logged["train/std"] == pytest.approx(0.1)  # DPPO's fixed final-step std
    assert logged["train/clip_range"] == pytest.approx(0.1)
    assert logged["train/clip_range_first_step"] == pytest.approx(0.1)
    assert model._n_updates == 4  # 2 iterations of 2 epochs


def test_target_env_learning():
    """
    A learning check that could fail: only a policy that reads the observation scores above -0.43. A fresh
    (sample-prediction) policy acts near 0 whatever the observation, which scores about -0.43.
    """
    env = make_vec_env(TargetEnv, n_envs=4, seed=0)
    model = DPPO(
        "MlpDiffusionPolicy",
        env,
        n_steps=128,
        batch_size=384,
        n_epochs=10,
        learning_rate=1e-3,
        gamma=0.0,
        seed=0,
        policy_kwargs=dict(n_denoising_steps=3, denoiser_hidden_sizes=[64, 64], net_arch=dict(pi=[], vf=[32])),
    )
    before, _ = evaluate_policy(model, make_vec_env(TargetEnv, n_envs=1, seed=1), n_eval_episodes=100)
    model.learn(8192)
    after, _ = evaluate_policy(model, make_vec_env(TargetEnv, n_envs=1, seed=1), n_eval_episodes=100)
    assert before < -0.3
    assert after > -0.05  # measured -0.012 (seed 0) and -0.007 (seed 1)


# --- The denoising MDP's maths ---


def test_step_log_prob_is_dppos_gaussian():
    mdp = DenoisingMDP()
    x, mean = th.randn(6, 3), th.randn(6, 3)
    std = th.tensor([0.05, 0.3, 1.0])
    expected = th.distributions.Normal(mean, std.clamp(min=0.1)).log_prob(x).clamp(-5, 2).mean(-1)
    th.testing.assert_close(mdp.log_prob(x, mean, std), expected)
    summed = DenoisingMDP(log_prob_reduction="sum", log_prob_clamp=None, min_logprob_std=1e-3)
    th.testing.assert_close(summed.log_prob(x, mean, std), th.distributions.Normal(mean, std).log_prob(x).sum(-1))
    th.testing.assert_close(summed.entropy(std[None]), th.distributions.Normal(0, std).entropy().sum()[None])


def test_denoising_discount_and_clip_schedule():
    mdp = DenoisingMDP(gamma_denoising=0.9, clip_range_base=1e-3, clip_range_rate=3.0)
    steps = th.arange(1, 6)  # K' = 5
    th.testing.assert_close(mdp.discount(steps), th.tensor([1.0, 0.9, 0.81, 0.729, 0.6561]))
    clips = mdp.clip_ranges(steps, 0.01, n_finetuned_steps=5)
    assert clips[-1].item() == pytest.approx(1e-3) and clips[0].item() == pytest.approx(0.01)  # first trained step k = K'
    assert th.all(clips[:-1] > clips[1:])  # grows from the first trained step to the final one
    t = 0.5  # k = 3
    assert clips[2].item() == pytest.approx(1e-3 + (0.01 - 1e-3) * math.expm1(3 * t) / math.expm1(3))
    assert th.all(DenoisingMDP().clip_ranges(steps, 0.2, 5) == 0.2)  # clip_range_base=None: flat
    assert mdp.clip_ranges(th.tensor([1]), 0.2, 1).item() == pytest.approx(0.2)


# --- Bad input ---


class CountingEnv(gym.Env):
    created = 0

    def __init__(self) -> None:
        CountingEnv.created += 1
        self.observation_space = spaces.Box(-1, 1, (2,))
        self.action_space = spaces.Box(-1, 1, (1,))


gym.register("sb3_ncdpo_tests/DPPOCounting-v0", entry_point=CountingEnv)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(gamma_denoising=0.0), r"gamma_denoising must be a float in \(0, 1\], got 0.0"),
        (dict(gamma_denoising=1.5), r"gamma_denoising must be a float in \(0, 1\]"),
        (dict(min_logprob_std=0.0), "min_logprob_std must be a float > 0, got 0.0"),
        (dict(log_prob_clamp=(2.0, -5.0)), r"log_prob_clamp must be None or a pair \(low, high\)"),
        (dict(log_prob_reduction="max"), r"log_prob_reduction must be one of \('mean', 'sum'\), got 'max'"),
        (dict(clip_range_base=0.0), "clip_range_base must be a float > 0 or None"),
        (dict(clip_range_rate=0.0), "clip_range_rate must be a float > 0, got 0.0"),
        (dict(batch_size=0), r"batch_size must be an int >= 1 \(pairs of environment and denoising steps\), got 0"),
        (dict(batch_size=1), "batch_size must be > 1 when normalize_advantage=True"),
        (dict(policy_kwargs=dict(n_finetuned_steps=0)), r"n_finetuned_steps must be an int in \[1, n_denoising_steps=10\]"),
        (dict(policy_kwargs=dict(n_denoising_steps=4, n_finetuned_steps=5)), r"n_finetuned_steps must be an int in \[1, "),
        (dict(policy_kwargs=dict(n_finetuned_steps=2.0)), "n_finetuned_steps must be an int"),
        (dict(policy_kwargs=dict(sampler="dpm")), r"sampler must be one of \('ddpm', 'ddim'(, '[a-z]+')*\), got 'dpm'"),
        (dict(policy="NotAPolicy"), "Policy NotAPolicy unknown"),
    ],
)
def test_bad_arguments_fail_before_the_env_is_built(kwargs, match):
    CountingEnv.created = 0
    kwargs = {"policy": "MlpPolicy", **kwargs}
    with pytest.raises(ValueError, match=match):
        DPPO(env="sb3_ncdpo_tests/DPPOCounting-v0", **kwargs)
    assert CountingEnv.created == 0


def test_discrete_actions_are_refused_with_a_clear_error():
    with pytest.raises(
        ValueError, match=r"DPPO supports only Box action spaces \(use NCDPO for discrete ones\), got Discrete\(2\)"
    ):
        DPPO("MlpPolicy", "CartPole-v1")
    with pytest.raises(ValueError, match="action_space must be a Box with finite bounds, Discrete or MultiDiscrete"):
        DPPO("MlpPolicy", IdentityEnvMultiBinary(dim=2))


def test_batch_size_counts_pairs():
    with pytest.warns(UserWarning, match=r"n_steps \* n_envs \* K' = 16 \* 1 \* 4 = 64\): each minibatch is the whole"):
        DPPO("MlpPolicy", "Pendulum-v1", n_steps=16, batch_size=65, policy_kwargs=SMALL)
    with pytest.warns(UserWarning, match="truncated mini-batch of 4"):
        DPPO("MlpPolicy", "Pendulum-v1", n_steps=16, batch_size=20, policy_kwargs=SMALL)
    with pytest.raises(ValueError, match="policy must be a DiffusionActorCriticPolicy"):
        DPPO(NCDPO.policy_aliases["MlpPolicy"].__mro__[1], "Pendulum-v1")  # SB3's ActorCriticPolicy
