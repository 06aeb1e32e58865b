"""
Stable-Baselines3's generic algorithm tests, ported to NCDPO as local versions with small on-policy settings:
test_run.py, test_predict.py, test_spaces.py (float64), test_callbacks.py, test_deterministic.py,
test_train_eval_mode.py, test_tensorboard.py and test_custom_policy.py.
"""

import os

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.callbacks import (
    BaseCallback,
    CallbackList,
    CheckpointCallback,
    EvalCallback,
    EveryNTimesteps,
    StopTrainingOnMaxEpisodes,
)
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.preprocessing import get_flattened_obs_dim
from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import DummyVecEnv
from torch import nn

from sb3_ncdpo import NCDPO
from sb3_ncdpo.toy_envs import HIGH, LOW, BoxEnv, DictBoxEnv, reward_of

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not th.cuda.is_available(), reason="CUDA not available"))]

N_STEPS = 16
ALGO_KWARGS = dict(n_steps=N_STEPS, batch_size=16, n_epochs=1)
POLICY_KWARGS = dict(n_denoising_steps=2, denoiser_hidden_sizes=[16, 16], net_arch=[16])


def make_model(env=None, policy_kwargs=None, **kwargs) -> NCDPO:
    env = BoxEnv() if env is None else env
    kwargs = {**ALGO_KWARGS, **kwargs}
    return NCDPO("MlpPolicy", env, policy_kwargs={**POLICY_KWARGS, **(policy_kwargs or {})}, **kwargs)


def state_dict_copy(model: NCDPO) -> dict[str, th.Tensor]:
    return {key: value.detach().cpu().clone() for key, value in model.policy.state_dict().items()}


def optimizer_steps(model: NCDPO) -> set[int]:
    """Number of optimizer steps each trained parameter has seen (Adam / RMSprop keep a ``step`` count)."""
    return {int(state["step"]) for state in model.policy.optimizer.state_dict()["state"].values()}


# --- test_run.py ---


@pytest.mark.parametrize(
    "kwargs, expected_key",
    [
        (dict(), "train/policy_gradient_loss"),
        (dict(clip_range_vf=0.2), "train/clip_range_vf"),
        (dict(normalize_advantage=False, ent_coef=0.01, vf_coef=1.0), "train/entropy_loss"),
        (dict(learning_rate=lambda p: 1e-3 * (0.5 + 0.5 * p), clip_range=lambda p: 0.1 + 0.1 * p), "train/clip_range"),
        (dict(gae_lambda=1.0, gamma=0.9, max_grad_norm=10.0), "train/grad_norm"),
    ],
)
def test_run(kwargs, expected_key):
    """Two iterations with PPO's options; every mini-batch of every epoch makes one optimizer step."""
    model = make_model(DummyVecEnv([BoxEnv, BoxEnv]), n_steps=N_STEPS, batch_size=16, n_epochs=2, **kwargs)
    before = state_dict_copy(model)
    model.learn(total_timesteps=4 * N_STEPS)
    assert model.num_timesteps == 4 * N_STEPS
    assert model._n_updates == 4  # n_epochs per iteration
    # 2 iterations * 2 epochs * (2 * N_STEPS / batch_size) mini-batches
    assert optimizer_steps(model) == {8}
    after = state_dict_copy(model)
    assert all(th.isfinite(value).all() for value in after.values())
    assert any(not th.equal(before[key], after[key]) for key in before)
    # The last train() records are not dumped yet
    values = model.logger.name_to_value
    assert expected_key in values and np.isfinite(values[expected_key])
    assert np.isfinite(values["train/eps_grad_norm_first_step"])
    if "clip_range" in kwargs:
        # Schedules are evaluated at the progress remaining of the last iteration, 0
        assert values["train/clip_range"] == pytest.approx(0.1)
        assert model.policy.optimizer.param_groups[0]["lr"] == pytest.approx(5e-4)


def test_run_pendulum():
    """Registered env ids (as SB3's tests use), alone and through make_vec_env."""
    model = make_model("Pendulum-v1", seed=0)
    model.learn(total_timesteps=N_STEPS)
    assert model.num_timesteps == N_STEPS
    assert model.rollout_buffer.full
    # (n_steps * n_envs, K, action_dim) once flattened for training
    assert model.rollout_buffer.noises.shape == (N_STEPS, 2, 1)
    assert np.abs(model.rollout_buffer.noises).sum() > 0

    model = make_model(make_vec_env("Pendulum-v1", n_envs=2, seed=0), seed=0)
    model.learn(total_timesteps=2 * N_STEPS)
    assert model.num_timesteps == 2 * N_STEPS
    assert model.rollout_buffer.noises.shape == (2 * N_STEPS, 2, 1)


def test_target_kl_early_stop():
    """With a tiny target_kl training stops early: fewer optimizer steps than n_epochs * n_batches."""
    model = make_model(n_epochs=5, target_kl=1e-10)
    model.learn(total_timesteps=N_STEPS)
    # One mini-batch per epoch: at most the first update happens before the KL exceeds the target
    assert optimizer_steps(model) <= {1}
    assert model._n_updates < 5
    assert model.logger.name_to_value["train/approx_kl"] > 1.5e-10


def test_batch_size_checks():
    """batch_size 1 with normalised advantages is refused; one above the buffer (as in SB3's PPO) or a non-divisor warns."""
    with pytest.warns(UserWarning, match="each minibatch is the whole of it"):
        make_model(n_steps=8, batch_size=16)
    with pytest.raises(ValueError, match="batch_size"):
        make_model(batch_size=1)
    with pytest.warns(UserWarning, match="does not divide"):
        make_model(n_steps=16, batch_size=12)
    with pytest.raises(ValueError, match="clip_range_vf"):
        make_model(clip_range_vf=-0.1)


# --- test_predict.py ---


@pytest.mark.parametrize("device", DEVICES)
def test_predict_shapes(device):
    env = BoxEnv()
    model = make_model(env, device=device)
    obs, _ = env.reset(seed=0)
    action, state = model.predict(obs)
    assert state is None
    assert isinstance(action, np.ndarray)
    assert action.shape == env.action_space.shape
    assert env.action_space.contains(action)

    batch = np.stack([env.observation_space.sample() for _ in range(5)])
    actions, _ = model.predict(batch)
    assert actions.shape == (5, *env.action_space.shape)

    vec_env = DummyVecEnv([BoxEnv, BoxEnv])
    vec_obs = vec_env.reset()
    actions, _ = model.predict(vec_obs, deterministic=True)
    assert actions.shape == (2, *env.action_space.shape)

    with pytest.raises(ValueError, match="Unexpected observation shape"):
        model.predict(np.zeros(4, dtype=np.float32))


def test_predict_multidim_action():
    """A Box action of shape (2, 2) is flattened for the chain and reshaped back."""
    env = BoxEnv(action_shape=(2, 2))
    model = make_model(env)
    assert model.policy.noise_shape == (2, 4)
    model.learn(total_timesteps=N_STEPS)
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs)
    assert action.shape == (2, 2)
    actions, _ = model.predict(np.stack([obs, obs, obs]))
    assert actions.shape == (3, 2, 2)


def test_predict_within_asymmetric_bounds():
    """Actions are mapped to Box(low=[-3, 0], high=[1, 5]), not clipped to it nor left in [-1, 1]."""
    env = BoxEnv()
    model = make_model(env, seed=0)
    model.learn(total_timesteps=N_STEPS)  # BoxEnv.step asserts that every training action is in the Box
    observations = np.stack([env.observation_space.sample() for _ in range(200)])
    for deterministic in (True, False):
        actions, _ = model.predict(observations, deterministic=deterministic)
        assert np.all(actions >= LOW) and np.all(actions <= HIGH)
    # A wide final Gaussian saturates the normalised actions at -1 and 1: they must land exactly on the bounds
    with th.no_grad():
        model.policy.log_std.fill_(np.log(3.0))
    actions, _ = model.predict(observations, deterministic=False)
    assert np.all(actions >= LOW) and np.all(actions <= HIGH)
    np.testing.assert_allclose(actions.min(axis=0), LOW)
    np.testing.assert_allclose(actions.max(axis=0), HIGH)
    # Some actions are strictly inside, where a plain clip of [-1, 1] samples could not be
    assert np.any(actions[:, 1] > 1.0) and np.any((actions[:, 0] > -3.0) & (actions[:, 0] < -1.0))


def test_predict_deterministic():
    env = BoxEnv()
    model = make_model(env, seed=0)
    observations = np.stack([env.observation_space.sample() for _ in range(8)])
    first, _ = model.predict(observations, deterministic=True)
    second, _ = model.predict(observations, deterministic=True)
    np.testing.assert_array_equal(first, second)
    # forward(deterministic=True) agrees with predict
    with th.no_grad():
        actions, _, _ = model.policy(th.as_tensor(observations), deterministic=True)
    np.testing.assert_allclose(model.policy.unscale_action(actions.clamp(-1, 1).numpy()), first, rtol=1e-6)

    samples = np.stack([model.predict(observations, deterministic=False)[0] for _ in range(3)])
    assert not np.allclose(samples[0], samples[1]) and not np.allclose(samples[1], samples[2])


# --- test_spaces.py (float64) ---


@pytest.mark.parametrize("env_class", [BoxEnv, DictBoxEnv])
def test_float64_spaces(env_class):
    if env_class is BoxEnv:
        env, policy = BoxEnv(obs_dtype=np.float64, action_dtype=np.float64), "MlpPolicy"
    else:
        env, policy = DictBoxEnv(), "MultiInputPolicy"
    model = NCDPO(policy, env, **ALGO_KWARGS, policy_kwargs=POLICY_KWARGS, seed=0)
    model.learn(total_timesteps=2 * N_STEPS)
    assert model.num_timesteps == 2 * N_STEPS
    obs, _ = env.reset(seed=1)
    for deterministic in (True, False):
        action, _ = model.predict(obs, deterministic=deterministic)
        assert action.dtype == env.action_space.dtype == np.float64
        assert env.action_space.contains(action)


# --- test_callbacks.py ---


class LocalsCallback(BaseCallback):
    """Reads the rollout loop's locals, as user callbacks do."""

    def __init__(self):
        super().__init__()
        self.rewards: list[np.ndarray] = []
        self.n_dones = 0
        self.n_terminal_obs = 0
        self.rollout_starts = 0
        self.rollout_ends = 0

    def _on_rollout_start(self) -> None:
        self.rollout_starts += 1

    def _on_step(self) -> bool:
        n_envs = self.training_env.num_envs
        new_obs, dones, infos, rewards = (self.locals[key] for key in ("new_obs", "dones", "infos", "rewards"))
        assert new_obs.shape == (n_envs, 3)
        assert dones.shape == (n_envs,) and rewards.shape == (n_envs,)
        assert len(infos) == n_envs
        # The rewards are those of the actions sent to the env (mapped to the Box bounds)
        clipped_actions = self.locals["clipped_actions"]
        np.testing.assert_allclose(rewards, [reward_of(action) for action in clipped_actions], rtol=1e-5)
        self.rewards.append(rewards.copy())
        self.n_dones += int(dones.sum())
        self.n_terminal_obs += sum("terminal_observation" in info for info, done in zip(infos, dones, strict=True) if done)
        return True

    def _on_rollout_end(self) -> None:
        self.rollout_ends += 1
        assert self.locals["rollout_buffer"].full


def test_callback_locals():
    model = make_model(DummyVecEnv([BoxEnv, BoxEnv]))
    callback = LocalsCallback()
    model.learn(total_timesteps=4 * N_STEPS, callback=callback)
    # 2 iterations of N_STEPS steps of 2 envs; episodes of 10 steps
    assert callback.n_calls == 2 * N_STEPS
    assert callback.rollout_starts == callback.rollout_ends == 2
    assert len(callback.rewards) == 2 * N_STEPS
    assert callback.n_dones == callback.n_terminal_obs == 2 * (2 * N_STEPS // 10)
    assert all(np.all(reward <= 0) for reward in callback.rewards)


def test_callbacks_stop_and_every_n(tmp_path):
    model = make_model()
    # Stops the rollout after 2 episodes of 10 steps
    model.learn(total_timesteps=1000, callback=StopTrainingOnMaxEpisodes(max_episodes=2))
    assert model.num_timesteps == 20

    event_callback = EveryNTimesteps(n_steps=8, callback=CheckpointCallback(save_freq=1, save_path=str(tmp_path)))
    callback = CallbackList([LocalsCallback(), event_callback])
    model.learn(total_timesteps=2 * N_STEPS, callback=callback)
    assert callback.callbacks[0].n_calls == 2 * N_STEPS
    saved = sorted(os.listdir(tmp_path))
    assert saved == [f"rl_model_{steps}_steps.zip" for steps in (16, 24, 32, 8)]


def test_eval_and_checkpoint_callbacks(tmp_path):
    model = make_model(seed=0)
    eval_callback = EvalCallback(
        Monitor(BoxEnv()),
        eval_freq=N_STEPS,
        n_eval_episodes=2,
        best_model_save_path=str(tmp_path / "best"),
        log_path=str(tmp_path / "logs"),
        warn=False,
    )
    checkpoint_callback = CheckpointCallback(save_freq=N_STEPS, save_path=str(tmp_path / "checkpoints"), name_prefix="ncdpo")
    model.learn(total_timesteps=2 * N_STEPS, callback=[eval_callback, checkpoint_callback])

    assert eval_callback.evaluations_timesteps == [N_STEPS, 2 * N_STEPS]
    evaluations = np.load(tmp_path / "logs" / "evaluations.npz")
    assert evaluations["results"].shape == (2, 2)
    assert np.all(evaluations["ep_lengths"] == 10)
    assert np.all(evaluations["results"] <= 0)
    assert np.isfinite(eval_callback.best_mean_reward)
    assert (tmp_path / "best" / "best_model.zip").is_file()

    for steps in (N_STEPS, 2 * N_STEPS):
        assert (tmp_path / "checkpoints" / f"ncdpo_{steps}_steps.zip").is_file()
    checkpoint = NCDPO.load(tmp_path / "checkpoints" / f"ncdpo_{2 * N_STEPS}_steps.zip")
    assert checkpoint.num_timesteps == 2 * N_STEPS
    assert checkpoint.policy.chain.config == model.policy.chain.config


# --- test_deterministic.py ---


def test_deterministic_training():
    """Same seed: identical parameters, rollouts and predictions; another seed: different parameters."""

    def train(seed: int) -> NCDPO:
        model = make_model(BoxEnv(), seed=seed, n_steps=32, batch_size=16, n_epochs=2)
        return model.learn(total_timesteps=64)

    model_1, model_2, model_3 = train(3), train(3), train(4)
    params_1, params_2, params_3 = state_dict_copy(model_1), state_dict_copy(model_2), state_dict_copy(model_3)
    assert params_1.keys() == params_2.keys()
    for key in params_1:
        assert th.equal(params_1[key], params_2[key]), f"{key} differs between two runs with the same seed"
    assert any(not th.equal(params_1[key], params_3[key]) for key in params_1)

    buffer_1, buffer_2 = model_1.rollout_buffer, model_2.rollout_buffer
    for name in ("observations", "actions", "rewards", "noises", "log_probs"):
        np.testing.assert_array_equal(getattr(buffer_1, name), getattr(buffer_2, name))

    observations = np.random.default_rng(0).uniform(-1, 1, (8, 3)).astype(np.float32)
    np.testing.assert_array_equal(
        model_1.predict(observations, deterministic=True)[0], model_2.predict(observations, deterministic=True)[0]
    )
    model_1.set_random_seed(5)
    stochastic_1, _ = model_1.predict(observations, deterministic=False)
    model_2.set_random_seed(5)
    np.testing.assert_array_equal(model_2.predict(observations, deterministic=False)[0], stochastic_1)


# --- test_train_eval_mode.py ---


class FlattenBatchNormDropoutExtractor(BaseFeaturesExtractor):
    """Features extractor with batch norm and dropout, as in SB3's test_train_eval_mode."""

    def __init__(self, observation_space: spaces.Box):
        super().__init__(observation_space, get_flattened_obs_dim(observation_space))
        self.flatten = nn.Flatten()
        self.batch_norm = nn.BatchNorm1d(self._features_dim)
        self.dropout = nn.Dropout(0.5)

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return self.dropout(self.batch_norm(self.flatten(observations)))


def batch_norm_stats(model: NCDPO) -> tuple[th.Tensor, ...]:
    batch_norm = model.policy.features_extractor.batch_norm
    return batch_norm.bias.clone(), batch_norm.running_mean.clone(), batch_norm.running_var.clone()


def test_train_eval_mode_batch_norm():
    """Rollouts and predict run in eval mode (batch norm stats unchanged, dropout off); train() in train mode."""
    model = make_model(seed=1, policy_kwargs=dict(features_extractor_class=FlattenBatchNormDropoutExtractor))
    stats_before = batch_norm_stats(model)

    # Rollout collection does not touch the batch norm statistics
    _, callback = model._setup_learn(total_timesteps=N_STEPS, callback=None)
    assert model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=N_STEPS)
    assert not model.policy.training
    for before, after in zip(stats_before, batch_norm_stats(model), strict=True):
        assert th.equal(before, after)

    # predict: eval mode, so deterministic actions are reproducible despite dropout
    observations = model.rollout_buffer.observations[:8, 0]
    first, _ = model.predict(observations, deterministic=True)
    for _ in range(3):
        np.testing.assert_array_equal(model.predict(observations, deterministic=True)[0], first)
    for before, after in zip(stats_before, batch_norm_stats(model), strict=True):
        assert th.equal(before, after)

    # train() updates the running statistics and the affine parameters
    model.train()
    assert model.policy.training
    bias_after, mean_after, var_after = batch_norm_stats(model)
    assert not th.isclose(stats_before[0], bias_after).all()
    assert not th.isclose(stats_before[1], mean_after).any()
    assert not th.isclose(stats_before[2], var_after).any()
    assert model.policy.features_extractor.batch_norm.num_batches_tracked.item() == 1


# --- test_tensorboard.py ---


def test_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = make_model("Pendulum-v1", tensorboard_log=str(tmp_path), seed=0)
    model.learn(total_timesteps=2 * N_STEPS)
    model.learn(total_timesteps=N_STEPS)
    assert (tmp_path / "NCDPO_1").is_dir()
    assert (tmp_path / "NCDPO_2").is_dir()
    # Continuing a run logs into the same folder
    model.learn(total_timesteps=N_STEPS, reset_num_timesteps=False)
    assert not (tmp_path / "NCDPO_3").exists()
    model.learn(total_timesteps=N_STEPS, tb_log_name="custom")
    assert (tmp_path / "custom_1").is_dir()

    accumulator = EventAccumulator(str(tmp_path / "NCDPO_1"))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    expected = {"train/policy_gradient_loss", "train/approx_kl", "train/std", "train/eps_grad_ratio_first_last", "time/fps"}
    assert expected <= tags
    assert "train/n_updates" not in tags  # excluded from tensorboard


# --- test_custom_policy.py ---


@pytest.mark.parametrize(
    "policy_kwargs, latent_pi, latent_vf",
    [
        (dict(net_arch=[]), 3, 3),
        (dict(net_arch=[16]), 16, 16),
        (dict(net_arch=dict(pi=[8], vf=[16])), 8, 16),
        (dict(net_arch=dict(pi=[8], vf=[16]), share_features_extractor=False), 8, 16),
        (dict(net_arch=[8, 8], activation_fn=nn.ReLU, ortho_init=False), 8, 8),
    ],
)
def test_flexible_net_arch(policy_kwargs, latent_pi, latent_vf):
    model = make_model(policy_kwargs=policy_kwargs, seed=0)
    policy = model.policy
    assert policy.mlp_extractor.latent_dim_pi == latent_pi
    assert policy.mlp_extractor.latent_dim_vf == latent_vf
    assert policy.denoiser.input_c.in_features == latent_pi
    assert policy.value_net.in_features == latent_vf
    share = policy_kwargs.get("share_features_extractor", True)
    assert (policy.pi_features_extractor is policy.vf_features_extractor) == share
    if "activation_fn" in policy_kwargs:
        assert any(isinstance(module, nn.ReLU) for module in policy.mlp_extractor.modules())
    before = state_dict_copy(model)
    model.learn(total_timesteps=N_STEPS)
    after = state_dict_copy(model)
    for key in before:
        if key.startswith(("denoiser.", "value_net.", "mlp_extractor.")):
            assert not th.equal(before[key], after[key]), f"{key} was not trained"


@pytest.mark.parametrize(
    "optimizer_class, optimizer_kwargs",
    [
        (th.optim.RMSprop, None),
        (th.optim.RMSprop, dict(alpha=0.9, eps=1e-5, weight_decay=0.0)),
        (RMSpropTFLike, dict(eps=1e-5)),
        (th.optim.SGD, dict(momentum=0.9)),
    ],
)
def test_custom_optimizer(optimizer_class, optimizer_kwargs):
    policy_kwargs = dict(optimizer_class=optimizer_class, optimizer_kwargs=optimizer_kwargs)
    model = make_model(policy_kwargs=policy_kwargs, learning_rate=1e-3, seed=0)
    optimizer = model.policy.optimizer
    assert type(optimizer) is optimizer_class
    for key, value in (optimizer_kwargs or {}).items():
        assert optimizer.param_groups[0][key] == value
    before = state_dict_copy(model)
    model.learn(total_timesteps=N_STEPS)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    after = state_dict_copy(model)
    assert any(not th.equal(before[key], after[key]) for key in before)
    assert all(th.isfinite(value).all() for value in after.values())
