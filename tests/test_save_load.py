"""
Save / load tests for NCDPO, ported from Stable-Baselines3's ``tests/test_save_load.py`` (local versions with small
on-policy settings, no reliance on SB3's branches for A2C/PPO).
"""

import io
import pathlib
from copy import deepcopy

import numpy as np
import pytest
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.utils import get_device
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv
from torch import nn

from sb3_ncdpo import NCDPO, DiffusionActorCriticPolicy
from sb3_ncdpo.common.diffusion import ChainConfig
from sb3_ncdpo.toy_envs import BoxEnv

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not th.cuda.is_available(), reason="CUDA not available"))]

N_STEPS = 16
ALGO_KWARGS = dict(n_steps=N_STEPS, batch_size=16, n_epochs=1)
POLICY_KWARGS = dict(n_denoising_steps=2, denoiser_hidden_sizes=[16, 16], net_arch=[16])
# Non-default chain settings: a loaded policy that fell back to the defaults would not compare equal.
DIFFUSION_KWARGS = dict(
    n_denoising_steps=3,
    sampler="ddim",
    ddim_eta=0.5,
    noise_schedule="linear",
    x0_clip=0.9,
    noise_clip=2.0,
    min_step_std=0.01,
    denoiser_hidden_sizes=[16, 16],
    net_arch=[16],
)


def make_model(env=None, seed: int = 0, device: str = "cpu", **policy_kwargs) -> NCDPO:
    env = DummyVecEnv([BoxEnv]) if env is None else env
    return NCDPO("MlpPolicy", env, **ALGO_KWARGS, policy_kwargs=policy_kwargs or POLICY_KWARGS, seed=seed, device=device)


def sample_observations(n: int = 10, obs_dim: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (n, obs_dim)).astype(np.float32)


def cpu_state_dict(module: nn.Module) -> dict[str, th.Tensor]:
    return {key: value.detach().cpu().clone() for key, value in module.state_dict().items()}


def policy_outputs(policy: DiffusionActorCriticPolicy, observations: np.ndarray, seed: int = 0) -> np.ndarray:
    """
    Values and log-probabilities of fixed actions given fixed noise: unlike deterministic actions, which often sit
    on the bounds for an untrained chain, they vary continuously with every parameter.
    """
    generator = th.Generator().manual_seed(seed)
    n_obs = len(observations)
    noises = th.randn((n_obs, *policy.noise_shape), generator=generator).to(policy.device)
    actions = th.randn((n_obs, policy.action_dim), generator=generator).to(policy.device)
    policy.set_training_mode(False)
    with th.no_grad():
        values, log_prob, _ = policy.evaluate_actions(th.as_tensor(observations, device=policy.device), actions, noises)
    return th.cat([values.flatten(), log_prob.flatten()]).cpu().numpy()


def assert_same_actions(actions: np.ndarray, expected: np.ndarray, device: str) -> None:
    if device == "cpu":
        np.testing.assert_array_equal(actions, expected)
    else:  # Different kernels on another device
        np.testing.assert_allclose(actions, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_save_load(tmp_path, device):
    """
    save / load keep the parameters, the optimizer state and the deterministic actions; get_parameters /
    set_parameters round-trip; the loaded model can learn.
    """
    env = DummyVecEnv([BoxEnv])
    model = make_model(env)
    model.learn(total_timesteps=2 * N_STEPS)

    observations = sample_observations()
    # Move every parameter to new random values (as SB3 does), then use those
    params = deepcopy(model.policy.state_dict())
    model.policy.load_state_dict({name: 0.3 * th.randn_like(param) for name, param in params.items()})
    new_params = model.policy.state_dict()
    for name in params:
        assert not th.allclose(params[name], new_params[name]), f"{name} did not change"
    params = cpu_state_dict(model.policy)

    selected_actions, _ = model.predict(observations, deterministic=True)
    assert np.ptp(selected_actions, axis=0).min() > 0, "actions should depend on the observation"
    outputs = policy_outputs(model.policy, observations)
    optimizer_state = deepcopy(model.policy.optimizer.state_dict()["state"])
    assert len(optimizer_state) > 0

    model.save(tmp_path / "test_save.zip")
    del model
    model = NCDPO.load(tmp_path / "test_save.zip", env=env, device=device)
    assert model.policy.device.type == get_device(device).type
    assert model.device.type == get_device(device).type

    # Same parameters
    loaded_params = cpu_state_dict(model.policy)
    assert loaded_params.keys() == params.keys()
    for name in params:
        assert th.equal(params[name], loaded_params[name]), f"{name} differs after save/load"
    # Same optimizer state (Adam moments and step counts)
    loaded_state = model.policy.optimizer.state_dict()["state"]
    assert loaded_state.keys() == optimizer_state.keys()
    for idx, state in optimizer_state.items():
        for key, value in state.items():
            assert th.equal(value.cpu(), loaded_state[idx][key].cpu()), f"optimizer state {idx}/{key} differs"

    # Same deterministic actions
    loaded_actions, _ = model.predict(observations, deterministic=True)
    assert_same_actions(loaded_actions, selected_actions, device)
    assert_same_actions(policy_outputs(model.policy, observations), outputs, device)

    # get_parameters / set_parameters, as in SB3's test
    # get_parameters() shares storage with the live parameters: copy it to keep the originals
    original_params = deepcopy(model.get_parameters())
    assert set(original_params) == {"policy", "policy.optimizer"}
    invalid_object_params = deepcopy(original_params)
    invalid_object_params["I should not be here"] = {"something": th.rand(5)}
    with pytest.raises(ValueError):
        model.set_parameters(invalid_object_params, exact_match=True)
    with pytest.raises(ValueError, match="invalid object name"):
        model.set_parameters(invalid_object_params, exact_match=False)
    missing_object_params = {name: value for name, value in original_params.items() if name != "policy.optimizer"}
    with pytest.raises(ValueError):
        model.set_parameters(missing_object_params, exact_match=True)
    model.set_parameters(missing_object_params, exact_match=False)
    invalid_shape_params = deepcopy(original_params)
    invalid_shape_params["policy"]["log_std"] = th.zeros(7, device=model.device)
    with pytest.raises(RuntimeError):
        model.set_parameters(invalid_shape_params, exact_match=True)

    # New random policy parameters change the actions, the original ones bring them back
    random_policy = {name: 0.3 * th.randn_like(value) for name, value in original_params["policy"].items()}
    model.set_parameters({"policy": random_policy}, exact_match=False)
    for name, value in model.policy.state_dict().items():
        assert th.equal(value, random_policy[name])
    random_actions, _ = model.predict(observations, deterministic=True)
    assert not np.allclose(random_actions, loaded_actions)
    assert not np.allclose(policy_outputs(model.policy, observations), outputs)
    model.set_parameters(original_params, exact_match=True)
    np.testing.assert_array_equal(model.predict(observations, deterministic=True)[0], loaded_actions)
    assert_same_actions(policy_outputs(model.policy, observations), outputs, device)
    # ... and so does set_parameters from the saved file
    model.set_parameters({"policy": random_policy}, exact_match=False)
    model.set_parameters(str(tmp_path / "test_save.zip"), exact_match=True, device=device)
    np.testing.assert_array_equal(model.predict(observations, deterministic=True)[0], loaded_actions)
    assert_same_actions(policy_outputs(model.policy, observations), outputs, device)

    # Learning still works after loading, and changes the parameters
    before = cpu_state_dict(model.policy)
    model.learn(total_timesteps=N_STEPS)
    assert model.num_timesteps == N_STEPS
    after = cpu_state_dict(model.policy)
    assert any(not th.equal(before[name], after[name]) for name in before)
    assert all(th.isfinite(value).all() for value in after.values())


@pytest.mark.parametrize("device", DEVICES)
def test_save_load_diffusion_config(tmp_path, device):
    """The loaded model rebuilds the policy with the saved diffusion settings, not the defaults."""
    model = make_model(**DIFFUSION_KWARGS)
    config = model.policy.chain.config
    assert config != ChainConfig()
    assert (config.n_denoising_steps, config.sampler, config.ddim_eta) == (3, "ddim", 0.5)
    observations = sample_observations()
    actions, _ = model.predict(observations, deterministic=True)
    outputs = policy_outputs(model.policy, observations)
    model.save(tmp_path / "ddim.zip")

    loaded = NCDPO.load(tmp_path / "ddim.zip", device=device)  # no env: the config comes from the file alone
    assert loaded.get_env() is None
    assert loaded.policy.chain.config == config
    assert loaded.policy_kwargs == model.policy_kwargs
    assert loaded.policy.denoiser_hidden_sizes == [16, 16]
    assert loaded.policy.noise_shape == (3, 2)
    assert loaded.rollout_buffer.noise_shape == (3, 2)
    assert th.equal(loaded.policy.chain.step_std, model.policy.chain.step_std)
    assert_same_actions(loaded.predict(observations, deterministic=True)[0], actions, device)
    assert_same_actions(policy_outputs(loaded.policy, observations), outputs, device)

    # Stochastic actions drawn from the same generator state are the same too (same noise clip, same step stds)
    if device == "cpu":
        th.manual_seed(7)
        stochastic, _ = model.predict(observations, deterministic=False)
        th.manual_seed(7)
        np.testing.assert_array_equal(loaded.predict(observations, deterministic=False)[0], stochastic)


@pytest.mark.parametrize("device", DEVICES)
def test_save_load_policy(tmp_path, device):
    """policy.save / DiffusionActorCriticPolicy.load round-trip, with non-default denoiser and std settings."""
    policy_kwargs = dict(
        DIFFUSION_KWARGS,
        denoiser_hidden_sizes=[16, 16, 16],
        residual=True,
        time_embed_dim=8,
        denoiser_activation_fn=nn.ReLU,
        fixed_std=0.3,
        min_std=0.01,
        chain_noise_scale=0.25,
        net_arch=dict(pi=[8], vf=[16]),
        share_features_extractor=False,
    )
    model = make_model(**policy_kwargs)
    model.learn(total_timesteps=N_STEPS)
    policy = model.policy
    observations = sample_observations()
    actions, _ = policy.predict(observations, deterministic=True)
    outputs = policy_outputs(policy, observations)
    params = cpu_state_dict(policy)
    config = policy.chain.config

    policy.save(tmp_path / "policy.pkl")
    del model, policy
    policy = DiffusionActorCriticPolicy.load(tmp_path / "policy.pkl", device=device)

    assert type(policy) is DiffusionActorCriticPolicy
    assert policy.device.type == get_device(device).type
    assert policy.chain.config == config
    assert (policy.denoiser_hidden_sizes, policy.residual, policy.time_embed_dim) == ([16, 16, 16], True, 8)
    assert policy.denoiser_activation_fn is nn.ReLU
    assert (policy.fixed_std, policy.min_std, policy.chain_noise_scale) == (0.3, 0.01, 0.25)
    assert not policy.log_std.requires_grad
    assert not policy.share_features_extractor
    assert policy.pi_features_extractor is not policy.vf_features_extractor
    np.testing.assert_allclose(policy.final_std().detach().cpu().numpy(), 0.3, rtol=1e-6)
    loaded_params = cpu_state_dict(policy)
    assert loaded_params.keys() == params.keys()
    for name in params:
        assert th.equal(params[name], loaded_params[name]), f"{name} differs after policy save/load"
    assert_same_actions(policy.predict(observations, deterministic=True)[0], actions, device)
    assert_same_actions(policy_outputs(policy, observations), outputs, device)


def test_set_env(tmp_path):
    """set_env with a compatible env (vectorised or not), and its refusals; load with another number of envs."""
    env = DummyVecEnv([BoxEnv])
    model = make_model(env)
    model.learn(total_timesteps=N_STEPS)

    env2 = DummyVecEnv([BoxEnv])
    model.set_env(env2)
    assert model.get_env() is env2
    assert model._last_obs is None  # force_reset
    model.learn(total_timesteps=N_STEPS, reset_num_timesteps=False)
    assert model.num_timesteps == 2 * N_STEPS

    # A gym env is wrapped into a VecEnv
    model.set_env(BoxEnv())
    assert isinstance(model.get_env(), VecEnv)
    model.learn(total_timesteps=N_STEPS, reset_num_timesteps=False)
    assert model.num_timesteps == 3 * N_STEPS

    # Different observation or action space
    with pytest.raises(ValueError, match="Observation spaces do not match"):
        model.set_env(BoxEnv(obs_dim=4))
    with pytest.raises(ValueError, match="Action spaces do not match"):
        model.set_env(BoxEnv(low=(-1.0, -1.0), high=(1.0, 1.0)))

    # Another number of envs: refused by set_env, accepted by load (the rollout buffer is rebuilt for it)
    env4 = DummyVecEnv([BoxEnv, BoxEnv])
    with pytest.raises(AssertionError, match="number of environments"):
        model.set_env(env4)
    model.save(tmp_path / "model.zip")
    with pytest.raises(ValueError, match="Observation spaces do not match"):
        NCDPO.load(tmp_path / "model.zip", env=BoxEnv(obs_dim=4))
    loaded = NCDPO.load(tmp_path / "model.zip", env=env4)
    assert loaded.n_envs == 2
    assert loaded.rollout_buffer.noises.shape == (N_STEPS, 2, 2, 2)
    loaded.learn(total_timesteps=2 * N_STEPS)
    assert loaded.num_timesteps == 2 * N_STEPS
    assert loaded.rollout_buffer.full
    assert np.abs(loaded.rollout_buffer.noises).sum() > 0


def test_exclude_include_saved_params(tmp_path):
    """As SB3's test: exclude drops an attribute from the file, include keeps it."""
    model = NCDPO("MlpPolicy", DummyVecEnv([BoxEnv]), **ALGO_KWARGS, policy_kwargs=POLICY_KWARGS, verbose=2)
    model.save(tmp_path / "test_save", exclude=["verbose"])
    del model
    model = NCDPO.load(str(tmp_path / "test_save.zip"))
    # verbose was not saved
    assert model.verbose != 2

    model.verbose = 2
    model.save(tmp_path / "test_save", exclude=["verbose"], include=["verbose"])
    del model
    model = NCDPO.load(str(tmp_path / "test_save.zip"))
    assert model.verbose == 2
    # The excluded attributes of the algorithm itself are never saved
    model.save(tmp_path / "test_save")
    model = NCDPO.load(tmp_path / "test_save.zip")
    assert model.get_env() is None
    assert model.n_steps == N_STEPS and model.batch_size == 16


def test_save_load_file_objects(tmp_path):
    """Save to / load from a str path, a pathlib path and a file object (SB3's test_open_file_str_pathlib)."""
    model = make_model()
    observations = sample_observations()
    actions, _ = model.predict(observations, deterministic=True)
    outputs = policy_outputs(model.policy, observations)

    model.save(str(tmp_path / "str_model"))
    model.save(pathlib.Path(tmp_path / "path_model"))
    buffer = io.BytesIO()
    model.save(buffer)
    buffer.seek(0)
    for source in (str(tmp_path / "str_model.zip"), pathlib.Path(tmp_path / "path_model.zip"), buffer):
        loaded = NCDPO.load(source)
        assert loaded.policy.chain.config == model.policy.chain.config
        np.testing.assert_array_equal(loaded.predict(observations, deterministic=True)[0], actions)
        np.testing.assert_array_equal(policy_outputs(loaded.policy, observations), outputs)


def test_load_ppo_file_raises(tmp_path):
    """A zip saved by PPO is not an NCDPO model: NCDPO.load says so instead of building a broken model."""
    ppo = PPO("MlpPolicy", BoxEnv(), n_steps=N_STEPS, batch_size=16, policy_kwargs=dict(net_arch=[16]))
    ppo.save(tmp_path / "ppo.zip")
    with pytest.raises(ValueError, match="not saved by NCDPO"):
        NCDPO.load(tmp_path / "ppo.zip")
    with pytest.raises(ValueError, match="not saved by NCDPO"):
        NCDPO.load(tmp_path / "ppo.zip", env=DummyVecEnv([BoxEnv]))
    ppo.policy.save(tmp_path / "ppo_policy.pt")
    with pytest.raises(ValueError, match="is not a saved diffusion policy"):
        DiffusionActorCriticPolicy.load(tmp_path / "ppo_policy.pt")
