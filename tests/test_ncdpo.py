"""NCDPO's own invariants: the replayed noise, gradients through the chain, bad input, learning."""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import BitFlippingEnv, FakeImageEnv
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_ncdpo import NCDPO, DiffusionActorCriticPolicy, NoiseDictRolloutBuffer, NoiseRolloutBuffer
from sb3_ncdpo.toy_envs import TargetEnv

SMALL = dict(n_denoising_steps=3, denoiser_hidden_sizes=[32, 32], net_arch=[16])


def collected(model: NCDPO) -> NCDPO:
    """Fill the model's rollout buffer once, as learn() does before train()."""
    _, callback = model._setup_learn(total_timesteps=model.n_steps * model.n_envs, callback=None)
    assert model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
    return model


def replay(model: NCDPO, noises_fn=None) -> tuple[th.Tensor, th.Tensor, th.Tensor, th.Tensor]:
    """Re-evaluate the whole buffer with stored (or replaced) noise; return new/old log-probs and values."""
    batch = next(model.rollout_buffer.get(batch_size=None))
    noises = batch.noises if noises_fn is None else noises_fn(batch.noises)
    with th.no_grad():
        values, log_prob, _ = model.policy.evaluate_actions(batch.observations, batch.actions, noises)
    return log_prob, batch.old_log_prob, values.flatten(), batch.old_values


CHAINS = [
    SMALL,
    dict(SMALL, n_denoising_steps=1),
    dict(SMALL, n_denoising_steps=10, sampler="ddim", ddim_eta=0.0),
    dict(SMALL, n_denoising_steps=5, sampler="ddim", ddim_eta=1.0, noise_schedule="linear", noise_clip=2.0),
    dict(SMALL, fixed_std=0.2, min_step_std=0.1, residual=True, denoiser_hidden_sizes=[32, 32, 32]),
    dict(SMALL, x0_clip_final=False),
    dict(SMALL, x0_clip=None),
    dict(SMALL, n_denoising_steps=4, prediction_type="sample"),
    dict(SMALL, sampler="ddim", ddim_eta=0.5, prediction_type="sample", x0_clip=None),
    dict(SMALL, chain_noise_scale=0.5),
]


@pytest.mark.parametrize("policy_kwargs", CHAINS)
def test_learn_updates_the_denoiser(policy_kwargs):
    model = NCDPO("MlpPolicy", "Pendulum-v1", n_steps=32, batch_size=16, n_epochs=1, policy_kwargs=policy_kwargs, seed=0)
    before = [p.detach().clone() for p in model.policy.denoiser.parameters()]
    model.learn(64)
    assert all(not th.equal(b, p) for b, p in zip(before, model.policy.denoiser.parameters(), strict=True))
    assert np.isfinite(model.logger.name_to_value["train/loss"])


def assert_stored_noise_replays(model: NCDPO, policy_kwargs: dict) -> None:
    """The stored noise reproduces the rollout's log-probs and values; fresh noise does not."""
    log_prob, old_log_prob, values, old_values = replay(model)
    # Rollout (batch n_envs) and replay (whole buffer) round float32 differently; without the x0 clip the first step
    # amplifies that by 1 / sqrt(alpha_bar_K) ~ 30 (measured 2e-5).
    tolerance = 1e-4 if policy_kwargs.get("x0_clip", 1.0) is None else 1e-5
    assert (log_prob - old_log_prob).abs().max().item() < tolerance
    assert (values - old_values).abs().max().item() < 1e-5
    # With fresh noise the conditional log-probability is a different number: the ratio needs the stored noise.
    fresh_log_prob, *_ = replay(model, lambda noises: th.randn_like(noises))
    assert (fresh_log_prob - old_log_prob).abs().max().item() > 1e-2


@pytest.mark.parametrize("policy_kwargs", CHAINS)
def test_stored_noise_reproduces_old_log_prob(policy_kwargs):
    model = collected(NCDPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=32, policy_kwargs=policy_kwargs, seed=1))
    assert_stored_noise_replays(model, policy_kwargs)


@pytest.mark.parametrize("scale", [0.0, 0.5])
def test_chain_noise_scale_scales_the_stored_noise_and_leaves_the_final_gaussian(scale):
    policy_kwargs = dict(SMALL, chain_noise_scale=scale, fixed_std=0.2)
    model = collected(NCDPO("MlpPolicy", "Pendulum-v1", n_steps=512, batch_size=64, policy_kwargs=policy_kwargs, seed=3))
    noises = model.rollout_buffer.noises
    # 512 transitions x 3 steps x 1 dim of N(0, scale^2): the sample std within 5% of scale (exactly 0 at scale 0)
    assert noises.std() == pytest.approx(scale, rel=0.05, abs=0.0)
    obs = th.as_tensor(model.rollout_buffer.observations.reshape(-1, 3))
    if scale > 0:
        assert_stored_noise_replays(model, policy_kwargs)
    with th.no_grad():
        actions, _, _, noise = model.policy.forward_with_noise(obs)
        deterministic, *_ = model.policy.forward_with_noise(obs, deterministic=True)
    if scale == 0.0:
        # zero chain noise: the sampled action is the deterministic action's mean plus the final step's N(0, 0.2^2)
        assert th.count_nonzero(noise) == 0
        assert (actions - deterministic).std().item() == pytest.approx(0.2, rel=0.1)


@pytest.mark.parametrize("n_draws", [1, 4])
def test_deterministic_draws_act_with_the_mean_of_chain_samples(n_draws, tmp_path):
    model = NCDPO("MlpPolicy", "Pendulum-v1", policy_kwargs=dict(SMALL, deterministic_draws=n_draws), seed=0)
    policy = model.policy
    obs = th.as_tensor(np.random.default_rng(0).normal(size=(3, 3)), dtype=th.float32)
    with th.no_grad():
        th.manual_seed(1)
        actions = policy._predict(obs, deterministic=True)
        th.manual_seed(1)
        noises = policy.sample_noise(3 * n_draws)
        means = policy._final_mean(policy._actor_latent(obs).repeat_interleave(n_draws, 0), noises)
        zero_noise = policy._final_mean(policy._actor_latent(obs), th.zeros_like(noises[:3]))
    expected = means.reshape(3, n_draws, -1).mean(dim=1).clamp(-1.0, 1.0)
    assert (actions - expected).abs().max().item() < 1e-6
    assert (actions - zero_noise.clamp(-1.0, 1.0)).abs().max().item() > 1e-3  # not the zero-noise action
    # only the deterministic action changes: a sampled action still adds the final step's noise to one chain sample
    with th.no_grad():
        th.manual_seed(1)
        sampled = policy._predict(obs, deterministic=False)
        th.manual_seed(1)
        sampled_again = policy._get_action_dist_from_latent(policy._actor_latent(obs), policy.sample_noise(3)).sample()
    assert th.equal(sampled, sampled_again.clamp(-1.0, 1.0))
    policy.save(str(tmp_path / "policy.pkl"))
    assert DiffusionActorCriticPolicy.load(str(tmp_path / "policy.pkl")).deterministic_draws == n_draws


def test_deterministic_draws_take_the_argmax_of_the_mean_logits():
    model = NCDPO("MlpPolicy", "CartPole-v1", policy_kwargs=dict(SMALL, deterministic_draws=3), seed=0)
    policy = model.policy
    obs = th.as_tensor(np.random.default_rng(0).normal(size=(16, 4)), dtype=th.float32)
    with th.no_grad():
        th.manual_seed(2)
        actions = policy._predict(obs, deterministic=True)
        th.manual_seed(2)
        logits = policy._final_mean(policy._actor_latent(obs).repeat_interleave(3, 0), policy.sample_noise(16 * 3))
    assert th.equal(actions, logits.reshape(16, 3, -1).mean(dim=1).argmax(dim=1))


def test_deterministic_draws_average_out_the_chain_noise():
    """The mean of many chain samples varies ~1/sqrt(n) as much as one sample between calls."""
    model = NCDPO("MlpPolicy", "Pendulum-v1", policy_kwargs=SMALL, seed=0)
    obs = np.zeros((1, 3), dtype=np.float32)

    def spread(n_draws: int) -> float:
        model.policy.deterministic_draws = n_draws
        return float(np.std([model.predict(obs, deterministic=True)[0] for _ in range(50)]))

    one, many = spread(1), spread(64)
    assert one > 1e-3
    assert many < one / 3


def test_stored_noise_reproduces_old_log_prob_with_dict_observations():
    env = make_vec_env(lambda: BitFlippingEnv(n_bits=4, continuous=True, max_steps=4), n_envs=2)
    model = collected(NCDPO("MultiInputPolicy", env, n_steps=32, batch_size=16, policy_kwargs=SMALL, seed=0))
    assert isinstance(model.rollout_buffer, NoiseDictRolloutBuffer)
    log_prob, old_log_prob, values, old_values = replay(model)
    assert (log_prob - old_log_prob).abs().max().item() < 1e-5
    assert (values - old_values).abs().max().item() < 1e-5


def test_buffer_noise_shape_and_alignment():
    model = collected(NCDPO("MlpPolicy", make_vec_env("Pendulum-v1", n_envs=2), n_steps=16, batch_size=8, policy_kwargs=SMALL))
    assert isinstance(model.rollout_buffer, NoiseRolloutBuffer)
    assert model.policy.noise_shape == (3, 1)
    # Batches of any size keep each noise with its own transition: replay minibatch by minibatch.
    for batch in model.rollout_buffer.get(batch_size=5):
        assert batch.noises.shape == (len(batch.actions), 3, 1)
        with th.no_grad():
            _, log_prob, _ = model.policy.evaluate_actions(batch.observations, batch.actions, batch.noises)
        assert (log_prob - batch.old_log_prob).abs().max().item() < 1e-5


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample"])
def test_initial_exploration_of_a_fresh_policy(prediction_type):
    """
    What prediction_type changes at initialisation: with sample-prediction the untrained chain's output barely
    depends on the noise, so a fresh policy explores like SB3's Gaussian policy (action std = the final-step std);
    with epsilon-prediction x0_hat = x_k / sqrt(alpha_bar_k) at the first step is clipped to the bounds, and the
    chain's own noise spreads the actions over most of [-1, 1].
    """
    th.manual_seed(0)
    policy_kwargs = dict(log_std_init=-2.0, prediction_type=prediction_type)
    policy = NCDPO("MlpPolicy", "Pendulum-v1", n_steps=16, batch_size=8, policy_kwargs=policy_kwargs, seed=0).policy
    obs = th.tensor([[0.3, -0.2, 0.5]]).repeat(4000, 1)
    with th.no_grad():
        actions, *_ = policy.forward_with_noise(obs)
    final_std = policy.final_std().item()  # exp(-2) = 0.135
    if prediction_type == "sample":
        assert actions.std().item() == pytest.approx(final_std, rel=0.15)
    else:
        assert actions.std().item() > 4 * final_std


def test_bad_prediction_type_is_named():
    with pytest.raises(ValueError, match=r"prediction_type must be one of \('epsilon', 'sample'\), got 'v'"):
        NCDPO("MlpPolicy", "Pendulum-v1", policy_kwargs=dict(prediction_type="v"))


def test_log_prob_differentiable_wrt_initial_noise():
    policy = NCDPO("MlpPolicy", "Pendulum-v1", n_steps=16, batch_size=8, policy_kwargs=dict(SMALL, x0_clip=None)).policy
    obs = th.randn(6, 3)
    noises = policy.sample_noise(6).requires_grad_(True)
    actions = th.zeros(6, 1)
    _, log_prob, _ = policy.evaluate_actions(obs, actions, noises)
    log_prob.sum().backward()
    assert noises.grad is not None
    assert th.all(noises.grad[:, 0].abs() > 0)  # x_K
    assert th.all(noises.grad[:, 1:].abs() > 0)  # every z_k


def test_denoiser_gets_gradient_from_every_step():
    """Keep the parameters attached to the graph at one denoising step only: each step alone gives them gradient."""
    n_steps = 4
    policy = NCDPO(
        "MlpPolicy",
        "Pendulum-v1",
        n_steps=16,
        batch_size=8,
        policy_kwargs=dict(SMALL, n_denoising_steps=n_steps, x0_clip=None),
    ).policy
    obs, actions, noises = th.randn(8, 3), th.zeros(8, 1), policy.sample_noise(8)
    params = dict(policy.denoiser.named_parameters())
    for live_step in range(1, n_steps + 1):
        policy.zero_grad()
        latent_pi, _ = policy._latents(obs)
        cond = policy.denoiser.project_condition(latent_pi).detach()

        def eps_model(x, k, live_step=live_step, cond=cond):
            weights = params if k == live_step else {name: p.detach() for name, p in params.items()}
            return th.func.functional_call(policy.denoiser, weights, (x, k, cond))

        mean = policy.chain.final_mean(eps_model, noises)
        log_prob = policy.action_dist.proba_distribution(mean, policy.log_std).log_prob(actions)
        log_prob.sum().backward()
        for name in ("output.weight", "input_x.weight", "input_t.weight"):
            grad = params[name].grad
            assert grad is not None and grad.abs().sum().item() > 0, (live_step, name)


@pytest.mark.parametrize("residual", [False, True])
def test_step_predictor_is_the_denoiser_forward(residual):
    """The chain's fast path (time table, precomputed biases, addmm layers) computes DenoiserMLP.forward at every step."""
    from sb3_ncdpo.common.diffusion import DenoiserMLP

    th.manual_seed(0)
    denoiser = DenoiserMLP(action_dim=2, cond_dim=5, hidden_sizes=[32, 32, 32], residual=residual)
    cond = denoiser.project_condition(th.randn(7, 5))
    x = th.randn(7, 2)
    eps_model = denoiser.step_predictor(cond, n_steps=6)
    for k in range(1, 7):
        th.testing.assert_close(eps_model(x, k), denoiser(x, k, cond), rtol=1e-5, atol=1e-6)


def test_default_optimizer_is_fused_adam_and_user_kwargs_are_kept():
    env = "Pendulum-v1"
    assert NCDPO("MlpPolicy", env, policy_kwargs=SMALL).policy.optimizer.defaults["fused"] is True
    custom = NCDPO("MlpPolicy", env, policy_kwargs=dict(SMALL, optimizer_kwargs=dict(eps=1e-7))).policy.optimizer
    assert custom.defaults["eps"] == 1e-7 and not custom.defaults["fused"]


def test_train_logs_std_and_chain_gradient_diagnostic():
    # Without the x0 clip: with it, step K's prediction is almost always clipped (alpha_bar_K ~ 1e-3) and gets no gradient
    policy_kwargs = dict(SMALL, x0_clip=None)
    model = NCDPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=32, n_epochs=2, policy_kwargs=policy_kwargs, seed=0)
    model.learn(128)
    logged = model.logger.name_to_value
    for key in ("train/std", "train/approx_kl", "train/clip_fraction", "train/entropy_loss", "train/grad_norm"):
        assert key in logged, key
    assert logged["train/std"] == pytest.approx(1.0, abs=0.05)  # log_std_init=0, two small epochs
    assert logged["train/eps_grad_norm_first_step"] > 0
    assert logged["train/eps_grad_ratio_first_last"] > 0


def test_deterministic_actions_use_zero_noise():
    model = NCDPO("MlpPolicy", "Pendulum-v1", n_steps=16, batch_size=8, policy_kwargs=SMALL, seed=0)
    policy = model.policy
    obs = th.randn(5, 3)
    with th.no_grad():
        actions, _, _, noises = policy.forward_with_noise(obs, deterministic=True)
        mean = policy.get_distribution(obs, noises=th.zeros(5, 3, 1)).distribution.mean
    assert th.all(noises == 0)
    th.testing.assert_close(actions, mean)
    predicted, _ = model.predict(obs.numpy(), deterministic=True)
    np.testing.assert_allclose(predicted, policy.unscale_action(np.clip(mean.numpy(), -1, 1)), rtol=1e-6)


def test_target_env_learning():
    """
    A learning check that could fail: only a policy that reads the observation scores above -0.43. A fresh
    (sample-prediction) policy acts near 0 whatever the observation, which scores about -0.43.
    """
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
        policy_kwargs=dict(
            n_denoising_steps=3, denoiser_hidden_sizes=[64, 64], log_std_init=-1.0, net_arch=dict(pi=[], vf=[32])
        ),
    )
    before, _ = evaluate_policy(model, make_vec_env(TargetEnv, n_envs=1, seed=1), n_eval_episodes=100)
    model.learn(8192)
    after, _ = evaluate_policy(model, make_vec_env(TargetEnv, n_envs=1, seed=1), n_eval_episodes=100)
    assert before < -0.3
    assert after > -0.05


def test_cnn_policy_on_images():
    env = make_vec_env(lambda: FakeImageEnv(screen_height=36, screen_width=36, n_channels=1, discrete=False))
    model = NCDPO(
        "CnnDiffusionPolicy",
        env,
        n_steps=16,
        batch_size=8,
        n_epochs=1,
        policy_kwargs=dict(SMALL, features_extractor_kwargs=dict(features_dim=32)),
    )
    log_prob, old_log_prob, *_ = replay(collected(model))
    assert (log_prob - old_log_prob).abs().max().item() < 1e-5
    model.learn(32)
    action, _ = model.predict(env.observation_space.sample(), deterministic=True)
    assert action.shape == env.action_space.shape and np.all(np.abs(action) <= 1)


class CountingEnv(gym.Env):
    created = 0

    def __init__(self) -> None:
        CountingEnv.created += 1
        self.observation_space = spaces.Box(-1, 1, (2,))
        self.action_space = spaces.Box(-1, 1, (1,))


gym.register("sb3_ncdpo_tests/Counting-v0", entry_point=CountingEnv)


@pytest.mark.parametrize(
    "policy_kwargs, match",
    [
        (dict(n_denoising_steps=0), "n_denoising_steps must be an int >= 1, got 0"),
        (dict(n_denoising_steps=2.0), "n_denoising_steps must be an int >= 1"),
        (dict(sampler="dpm"), r"sampler must be one of \('ddpm', 'ddim'(, '[a-z]+')*\), got 'dpm'"),
        (dict(noise_schedule="quadratic"), r"noise_schedule must be one of \('cosine', 'linear'\)"),
        (dict(ddim_eta=2.0), r"ddim_eta must be a float in \[0, 1\], got 2.0"),
        (dict(fixed_std=0.0), "fixed_std must be a float > 0"),
        (dict(fixed_std=-1.0), "fixed_std must be a float > 0"),
        (dict(min_std=0.0), "min_std must be a float > 0"),
        (dict(denoiser_hidden_sizes=[]), "denoiser_hidden_sizes must be a non-empty list"),
        (dict(residual=True, denoiser_hidden_sizes=[32, 64, 32]), "with residual=True"),
        (dict(use_sde=True), "use_sde=True is not supported"),
    ],
)
def test_bad_policy_kwargs_fail_before_the_env_is_built(policy_kwargs, match):
    CountingEnv.created = 0
    with pytest.raises(ValueError, match=match):
        NCDPO("MlpPolicy", "sb3_ncdpo_tests/Counting-v0", policy_kwargs=policy_kwargs)
    assert CountingEnv.created == 0


def test_bad_algorithm_arguments():
    with pytest.raises(ValueError, match="Policy NotAPolicy unknown"):
        NCDPO("NotAPolicy", "Pendulum-v1")
    with pytest.raises(ValueError, match="policy must be a DiffusionActorCriticPolicy"):
        NCDPO(DiffusionActorCriticPolicy.__mro__[1], "Pendulum-v1")  # SB3's ActorCriticPolicy
    with pytest.raises(ValueError, match="batch_size must be > 1 when normalize_advantage=True"):
        NCDPO("MlpPolicy", "Pendulum-v1", batch_size=1)
    with pytest.warns(
        UserWarning, match=r"batch_size=64 is larger than the rollout buffer \(n_steps \* n_envs = 32 \* 1 = 32\): each"
    ):
        NCDPO("MlpPolicy", "Pendulum-v1", n_steps=32, batch_size=64)
    with pytest.raises(ValueError, match="clip_range_vf must be > 0"):
        NCDPO("MlpPolicy", "Pendulum-v1", n_steps=32, batch_size=32, clip_range_vf=0.0)


def test_unbounded_box_action_space():
    class Unbounded(CountingEnv):
        def __init__(self) -> None:
            super().__init__()
            self.action_space = spaces.Box(-np.inf, np.inf, (1,))

    # Discrete spaces: tests/test_discrete.py
    with pytest.raises(ValueError, match=r"action_space must be a Box with finite bounds, Discrete or MultiDiscrete"):
        NCDPO("MlpPolicy", Unbounded())
    policy_args = (spaces.Box(-1, 1, (2,)), spaces.Box(-np.inf, np.inf, (1,)), lambda _: 1e-3)
    with pytest.raises(ValueError, match=r"Box bounds are mapped to \[-1, 1\]"):
        DiffusionActorCriticPolicy(*policy_args)


@pytest.mark.skipif(not th.cuda.is_available(), reason="no CUDA device")
def test_cuda_invariant():
    model = collected(NCDPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=32, policy_kwargs=SMALL, device="cuda"))
    log_prob, old_log_prob, *_ = replay(model)
    assert (log_prob - old_log_prob).abs().max().item() < 1e-5


def test_constructor_parameters_carry_every_argument():
    """A saved policy is rebuilt from _get_constructor_parameters: it must hold every argument, with its value."""
    import inspect

    kwargs = dict(
        n_denoising_steps=4,
        sampler="ddim",
        ddim_eta=0.3,
        noise_schedule="linear",
        x0_clip=2.0,
        x0_clip_final=False,
        noise_clip=3.0,
        min_step_std=0.05,
        denoiser_hidden_sizes=[8, 8, 8],
        denoiser_activation_fn=th.nn.ReLU,
        time_embed_dim=8,
        residual=True,
        fixed_std=0.3,
        min_std=0.01,
        log_std_init=-1.0,
        share_features_extractor=False,
        normalize_images=False,
        net_arch=dict(pi=[4], vf=[6]),
    )
    policy = DiffusionActorCriticPolicy(spaces.Box(-1, 1, (3,)), spaces.Box(-2, 2, (2,)), lambda _: 1e-3, **kwargs)
    data = policy._get_constructor_parameters()
    expected = set(inspect.signature(DiffusionActorCriticPolicy.__init__).parameters) - {"self", "lr_schedule"}
    assert expected <= set(data)
    for name, value in kwargs.items():
        assert data[name] == value, name
    rebuilt = DiffusionActorCriticPolicy(**data)
    assert rebuilt.chain.config == policy.chain.config
    assert rebuilt.final_std().tolist() == pytest.approx([0.3, 0.3])


def eager(policy: DiffusionActorCriticPolicy):
    """Context in which the policy runs its eager code (its traces disabled)."""
    return policy.traces.eager()


def gradients(policy: DiffusionActorCriticPolicy, obs, actions, noises) -> tuple[list[th.Tensor], tuple[th.Tensor, ...]]:
    policy.zero_grad()
    values, log_prob, entropy = policy.evaluate_actions(obs, actions, noises)
    (log_prob.sum() + values.sum() + entropy.sum()).backward()
    return [p.grad.clone() for p in policy.parameters() if p.grad is not None], (values, log_prob, entropy)


@pytest.mark.parametrize(
    "policy_kwargs",
    [
        dict(SMALL, n_denoising_steps=10, denoiser_hidden_sizes=[256, 256]),
        dict(SMALL, n_denoising_steps=10, denoiser_hidden_sizes=[256, 256], x0_clip=None, prediction_type="epsilon"),
        dict(SMALL, prediction_type="epsilon", sampler="ddim", ddim_eta=0.3),
        dict(SMALL, residual=True, denoiser_hidden_sizes=[32, 32, 32], min_step_std=0.1),
        dict(SMALL, share_features_extractor=False),
    ],
)
def test_traced_code_is_bit_identical_to_the_eager_code(policy_kwargs):
    """
    Rollouts, predict and updates run through traces of the policy's code: the chain's means, the log-probs, values
    and entropies, and the gradients of an update must equal the eager code's bit for bit.
    """
    model = NCDPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=32, n_epochs=1, policy_kwargs=policy_kwargs, seed=0)
    policy = model.policy
    assert policy.traces.actor_critic is not None  # SB3's own encoders: the whole call is traced

    def compare(batch: int) -> None:
        obs, actions, noises = th.randn(batch, 3), th.rand(batch, 1) * 2 - 1, 2 * policy.sample_noise(batch)
        latent_pi = policy._actor_latent(obs)
        with th.no_grad():
            traced_mean = policy._get_action_dist_from_latent(latent_pi, noises).distribution.mean
            with eager(policy):
                eager_mean = policy._get_action_dist_from_latent(latent_pi, noises).distribution.mean
        assert th.equal(traced_mean, eager_mean), (batch, (traced_mean - eager_mean).abs().max().item())
        traced_grads, traced_outputs = gradients(policy, obs, actions, noises)
        with eager(policy):
            eager_grads, eager_outputs = gradients(policy, obs, actions, noises)
        assert all(th.equal(a, b) for a, b in zip(traced_outputs, eager_outputs, strict=True))
        assert all(th.equal(a, b) for a, b in zip(traced_grads, eager_grads, strict=True))

    for batch in (1, 4, 64):
        compare(batch)
    assert len(policy.traces.chain.traces) == 3 and len(policy.traces.actor_critic.traces) == 3  # one per batch size (grad)
    # The traces share the parameters: after updates (in place) they still compute the updated policy.
    model.learn(64)
    compare(64)


def test_traced_chain_is_neither_saved_nor_copied():
    import copy
    import pickle

    model = NCDPO("MlpPolicy", "Pendulum-v1", n_steps=16, batch_size=8, policy_kwargs=SMALL, seed=0)
    state = model.policy.state_dict()
    keys = set(state)
    # The traced modules share the policy's parameters without being its submodules: no key aliases another.
    assert len({tensor.data_ptr() for tensor in state.values()}) == len(state)
    model.predict(np.zeros(3), deterministic=True)
    assert model.policy.traces.chain.traces and set(model.policy.state_dict()) == keys
    for clone in (copy.deepcopy(model.policy), pickle.loads(pickle.dumps(model.policy))):
        assert clone.traces.chain.traces == {}
        assert clone.traces.chain.module.denoiser is clone.denoiser  # the copy's chain runs the copy's weights
        expected = model.predict(np.ones(3), deterministic=True)[0]
        np.testing.assert_array_equal(clone.predict(np.ones(3), deterministic=True)[0], expected)


def test_chain_runs_eagerly_where_tracing_fails(monkeypatch):
    model = NCDPO("MlpPolicy", "Pendulum-v1", n_steps=16, batch_size=8, policy_kwargs=SMALL, seed=0)
    expected = model.predict(np.ones(3), deterministic=True)[0]
    model.policy.traces.chain.traces.clear()

    def broken(*args, **kwargs):
        raise RuntimeError("no TorchScript here")

    monkeypatch.setattr(th.jit, "trace", broken)
    with pytest.warns(UserWarning, match="could not be traced"):
        np.testing.assert_array_equal(model.predict(np.ones(3), deterministic=True)[0], expected)


@pytest.mark.parametrize("n_envs", [1, 4])
def test_traced_rollout_call_is_bit_identical_to_the_eager_call(n_envs):
    """With SB3's own encoders the whole rollout call is traced: same actions, values, log-probs and noise as eager."""
    model = NCDPO("MlpPolicy", make_vec_env("Pendulum-v1", n_envs=n_envs), n_steps=16, batch_size=16, seed=0)
    policy = model.policy
    obs = th.randn(n_envs, 3)
    outputs = []
    for traced in (True, False):
        th.manual_seed(7)
        with th.no_grad():
            if traced:
                outputs.append(policy.forward_with_noise(obs))
            else:
                with eager(policy):
                    outputs.append(policy.forward_with_noise(obs))
    for traced_output, eager_output in zip(*outputs, strict=True):
        assert th.equal(traced_output, eager_output)


@pytest.mark.parametrize("policy_kwargs", [{}, dict(log_std_init=-2.0), dict(fixed_std=0.05, min_std=0.1)])
@pytest.mark.parametrize("n_envs", [1, 4])
def test_rollout_call_gives_the_numbers_of_sb3_gaussian(policy_kwargs, n_envs):
    """
    A Box policy's rollout call computes its final Gaussian inside the trace (GaussianActCall): the same actions (same
    random draws), values, log-probs and noise as SB3's DiagGaussianDistribution, bit for bit, stochastic or not.
    """
    model = NCDPO("MlpPolicy", make_vec_env("Hopper-v5", n_envs=n_envs), policy_kwargs=policy_kwargs, seed=0)
    policy = model.policy
    assert policy.traces.act is not None
    obs, traced_act = th.randn(n_envs, 11), policy.traces.act
    for deterministic in (False, True):
        outputs = []
        for act in (traced_act, None):  # None: the chain's mean, then SB3's distribution
            policy.traces.act = act
            th.manual_seed(3)
            with th.no_grad():
                outputs.append(policy.forward_with_noise(obs, deterministic=deterministic))
        policy.traces.act = traced_act
        for fast, sb3 in zip(*outputs, strict=True):
            assert th.equal(fast, sb3)


def test_time_projections_are_reused_only_while_the_parameters_are_unchanged():
    model = NCDPO("MlpPolicy", "Pendulum-v1", n_steps=32, batch_size=16, n_epochs=1, policy_kwargs=SMALL, seed=0)
    policy = model.policy
    denoiser, n_steps = policy.denoiser, policy.chain.n_steps

    def fresh() -> th.Tensor:
        with th.no_grad():
            return denoiser.time_projections(n_steps)

    with th.no_grad():
        cached = policy.time_projections()
        assert policy.time_projections() is cached and th.equal(cached, fresh())
        next(denoiser.time_mlp.parameters()).add_(0.1)  # in place: its version counter moves
        assert policy.time_projections() is not cached
        assert th.equal(policy.time_projections(), fresh()) and not th.equal(cached, fresh())
    # With gradient: computed anew, part of the graph.
    assert policy.time_projections().grad_fn is not None
    # After updates, load_state_dict, or set_training_mode (start of every rollout and predict), never stale.
    with th.no_grad():
        before = policy.time_projections()
    model.learn(64)
    with th.no_grad():
        assert th.equal(policy.time_projections(), fresh()) and not th.equal(before, fresh())
        before = policy.time_projections()
    state = {k: v + 0.5 if "time_mlp" in k else v for k, v in policy.state_dict().items()}
    policy.load_state_dict(state)
    with th.no_grad():
        assert th.equal(policy.time_projections(), fresh()) and not th.equal(before, fresh())
        before = policy.time_projections()
        denoiser.input_t.weight.data.mul_(2.0)  # through .data: no version change, but a new rollout starts
    policy.set_training_mode(False)
    with th.no_grad():
        assert th.equal(policy.time_projections(), fresh()) and not th.equal(before, fresh())


def test_user_encoders_are_not_traced():
    """A custom features extractor may have data-dependent control flow: only the chain is traced then."""
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

    class Doubling(BaseFeaturesExtractor):
        def __init__(self, observation_space):
            super().__init__(observation_space, features_dim=3)

        def forward(self, obs):
            return obs * 2 if obs.sum() > 0 else obs  # traced, this branch would be frozen

    model = NCDPO("MlpPolicy", "Pendulum-v1", policy_kwargs=dict(SMALL, features_extractor_class=Doubling), seed=0)
    policy = model.policy
    assert policy.traces.actor_critic is None
    for sign in (1.0, -1.0):
        obs, noises = sign * th.ones(1, 3), th.zeros(1, 3, 1)
        with th.no_grad():
            traced = policy.evaluate_actions(obs, th.zeros(1, 1), noises)
            with eager(policy):
                expected = policy.evaluate_actions(obs, th.zeros(1, 1), noises)
        assert all(th.equal(a, b) for a, b in zip(traced, expected, strict=True))
