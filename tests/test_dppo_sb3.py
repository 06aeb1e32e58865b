"""
What works for NCDPO as an SB3 algorithm works for DPPO: save / load (with the chain settings and the frozen copy),
callbacks with SB3's local names, tensorboard, determinism, train / eval modes, spaces, rl-zoo3 and ``compare``.
Helpers come from the NCDPO versions of these tests.
"""

import csv
import os

import numpy as np
import pytest
import torch as th
import yaml
from stable_baselines3.common.vec_env import DummyVecEnv
from test_save_load import cpu_state_dict, policy_outputs, sample_observations
from test_sb3_generic import FlattenBatchNormDropoutExtractor, LocalsCallback

from sb3_ncdpo import DPPO, DiffusionActorCriticPolicy
from sb3_ncdpo.cli import default_config, main
from sb3_ncdpo.compare import make_model as make_packaged_model
from sb3_ncdpo.dppo.dppo import DEFAULT_POLICY_KWARGS
from sb3_ncdpo.toy_envs import BoxEnv, DictBoxEnv
from sb3_ncdpo.zoo import DPPO_SEARCH_SPACE, convert_dppo_params, hyperparams_file, register, sample_dppo_params

N_STEPS = 16
POLICY_KWARGS = dict(n_denoising_steps=3, denoiser_hidden_sizes=[16, 16], net_arch=[16])
# Non-default chain and DPPO settings: a loaded model that fell back to the defaults would not compare equal.
CHAIN_KWARGS = dict(
    n_denoising_steps=4,
    n_finetuned_steps=2,
    sampler="ddim",
    ddim_eta=0.5,
    noise_schedule="linear",
    min_step_std=0.05,
    fixed_std=None,
    log_std_init=-1.0,
    denoiser_hidden_sizes=[16, 16],
    net_arch=[16],
)
DPPO_KWARGS = dict(gamma_denoising=0.9, clip_range_base=0.01, min_logprob_std=0.05, log_prob_reduction="sum")


def make_model(env=None, policy_kwargs=None, **kwargs) -> DPPO:
    env = BoxEnv() if env is None else env
    kwargs = {"n_steps": N_STEPS, "batch_size": 16, "n_epochs": 1, **kwargs}
    return DPPO("MlpPolicy", env, policy_kwargs={**POLICY_KWARGS, **(policy_kwargs or {})}, **kwargs)


def test_save_load(tmp_path):
    env = DummyVecEnv([BoxEnv])
    model = make_model(env, policy_kwargs=CHAIN_KWARGS, seed=0, **DPPO_KWARGS)
    model.learn(2 * N_STEPS)
    assert model.policy.frozen_actor is not None
    observations = sample_observations()
    actions, _ = model.predict(observations, deterministic=True)
    outputs = policy_outputs(model.policy, observations)
    params = cpu_state_dict(model.policy)
    assert any(name.startswith("frozen_actor.") for name in params)
    model.save(tmp_path / "dppo.zip")

    loaded = DPPO.load(tmp_path / "dppo.zip")  # no env: everything comes from the file
    assert loaded.policy.chain.config == model.policy.chain.config
    assert loaded.policy.n_finetuned_steps == 2 and loaded.rollout_buffer.n_trained_steps == 2
    assert loaded.denoising_mdp == model.denoising_mdp
    assert loaded.policy_kwargs == {**DEFAULT_POLICY_KWARGS, **POLICY_KWARGS, **CHAIN_KWARGS}
    loaded_params = cpu_state_dict(loaded.policy)
    assert loaded_params.keys() == params.keys()
    assert all(th.equal(params[name], loaded_params[name]) for name in params)
    np.testing.assert_array_equal(loaded.predict(observations, deterministic=True)[0], actions)
    np.testing.assert_array_equal(policy_outputs(loaded.policy, observations), outputs)
    th.manual_seed(7)
    stochastic, _ = model.predict(observations, deterministic=False)
    th.manual_seed(7)
    np.testing.assert_array_equal(loaded.predict(observations, deterministic=False)[0], stochastic)

    # Learning goes on after loading, and the frozen steps stay frozen
    loaded.set_env(env)
    frozen = {k: v.clone() for k, v in loaded.policy.frozen_actor.state_dict().items()}
    loaded.learn(N_STEPS)
    assert all(th.equal(v, loaded.policy.frozen_actor.state_dict()[k]) for k, v in frozen.items())
    assert not th.equal(loaded.policy.denoiser.output.weight.cpu(), params["denoiser.output.weight"])


def test_save_load_policy(tmp_path):
    """policy.save / DiffusionActorCriticPolicy.load keep n_finetuned_steps and the frozen copy's weights."""
    model = make_model(policy_kwargs=CHAIN_KWARGS, seed=0)
    model.learn(N_STEPS)
    observations = sample_observations()
    actions, _ = model.policy.predict(observations, deterministic=True)
    model.policy.save(tmp_path / "policy.pkl")
    policy = DiffusionActorCriticPolicy.load(tmp_path / "policy.pkl")
    assert policy.n_finetuned_steps == 2 and policy.frozen_actor is not None
    for name, value in model.policy.frozen_actor.state_dict().items():
        assert th.equal(value, policy.frozen_actor.state_dict()[name]), name
    np.testing.assert_array_equal(policy.predict(observations, deterministic=True)[0], actions)


def test_callback_locals():
    model = make_model(DummyVecEnv([BoxEnv, BoxEnv]), seed=0)
    callback = LocalsCallback()
    model.learn(total_timesteps=4 * N_STEPS, callback=callback)
    assert callback.n_calls == 2 * N_STEPS
    assert callback.rollout_starts == callback.rollout_ends == 2
    assert callback.n_dones == callback.n_terminal_obs == 2 * (2 * N_STEPS // 10)


def test_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = make_model("Pendulum-v1", tensorboard_log=str(tmp_path), seed=0)
    model.learn(total_timesteps=2 * N_STEPS)
    model.learn(total_timesteps=N_STEPS)
    assert (tmp_path / "DPPO_1").is_dir() and (tmp_path / "DPPO_2").is_dir()
    accumulator = EventAccumulator(str(tmp_path / "DPPO_1"))
    accumulator.Reload()
    expected = {"train/policy_gradient_loss", "train/approx_kl", "train/clip_range_first_step", "train/std", "time/fps"}
    assert expected <= set(accumulator.Tags()["scalars"])


def test_deterministic_training():
    def train(seed: int) -> DPPO:
        return make_model(BoxEnv(), seed=seed, n_steps=32, n_epochs=2).learn(64)

    model_1, model_2, model_3 = train(3), train(3), train(4)
    params_1, params_2, params_3 = (cpu_state_dict(m.policy) for m in (model_1, model_2, model_3))
    assert all(th.equal(params_1[key], params_2[key]) for key in params_1)
    assert any(not th.equal(params_1[key], params_3[key]) for key in params_1)
    for name in ("observations", "actions", "rewards", "chains", "step_log_probs"):
        np.testing.assert_array_equal(getattr(model_1.rollout_buffer, name), getattr(model_2.rollout_buffer, name))


@pytest.mark.parametrize("env_class", [BoxEnv, DictBoxEnv])
def test_float64_spaces(env_class):
    if env_class is BoxEnv:
        env, policy = BoxEnv(obs_dtype=np.float64, action_dtype=np.float64), "MlpPolicy"
    else:
        env, policy = DictBoxEnv(), "MultiInputPolicy"
    model = DPPO(policy, env, n_steps=N_STEPS, batch_size=16, n_epochs=1, policy_kwargs=POLICY_KWARGS, seed=0)
    model.learn(total_timesteps=2 * N_STEPS)  # BoxEnv.step asserts that every action is in the Box
    obs, _ = env.reset(seed=1)
    for deterministic in (True, False):
        action, _ = model.predict(obs, deterministic=deterministic)
        assert action.dtype == np.float64 and env.action_space.contains(action)


def test_frozen_copy_stays_in_eval_mode():
    """Batch norm in the frozen copy: its statistics never move, in rollouts or in train()."""
    policy_kwargs = dict(CHAIN_KWARGS, features_extractor_class=FlattenBatchNormDropoutExtractor)
    model = make_model(policy_kwargs=policy_kwargs, seed=1)
    frozen_norm = model.policy.frozen_actor.features_extractor.batch_norm
    stats = frozen_norm.running_mean.clone()
    model.learn(2 * N_STEPS)
    model.policy.set_training_mode(True)
    assert model.policy.training and not model.policy.frozen_actor.training
    assert th.equal(frozen_norm.running_mean, stats) and frozen_norm.num_batches_tracked.item() == 0
    assert model.policy.features_extractor.batch_norm.num_batches_tracked.item() > 0  # the trained one moves


# --- rl-zoo3 and compare ---


def test_zoo_train_and_enjoy_dppo_with_normalization(tmp_path, capsys):
    assert default_config(["--algo", "dppo", "--env", "Pendulum-v1"]) == str(hyperparams_file("dppo"))
    logs = str(tmp_path / "logs")
    tiny = ["-params", "n_steps:32", "batch_size:64", "n_epochs:1"]
    tiny += ["policy_kwargs:dict(n_denoising_steps=2, denoiser_hidden_sizes=[16])"]
    common = ["--algo", "dppo", "--env", "InvertedPendulum-v5", "-f", logs, "--num-threads", "1"]
    main(["train", *common, "--seed", "0", "-n", "64", *tiny])
    run = os.path.join(logs, "dppo", "InvertedPendulum-v5_1")
    assert os.path.exists(os.path.join(run, "InvertedPendulum-v5", "vecnormalize.pkl"))
    with open(os.path.join(run, "InvertedPendulum-v5", "config.yml")) as file:
        config = dict(yaml.unsafe_load(file))
    assert config["normalize"] is True and config["clip_range"] == 0.1  # the packaged dppo.yml
    main(["enjoy", *common, "--no-render", "-n", "50"])
    assert "Episode Reward" in capsys.readouterr().out
    model = DPPO.load(os.path.join(run, "InvertedPendulum-v5.zip"))
    assert model.policy.chain.n_steps == 2 and model.policy.final_std().tolist() == pytest.approx([0.1])


def _entries() -> list[str]:
    with open(hyperparams_file("dppo")) as file:
        return list(yaml.safe_load(file))


@pytest.mark.parametrize("env_id", _entries())
def test_every_yaml_entry_builds_and_trains(env_id):
    """Each packaged entry as written (one epoch instead of its own): no typo can hide in the YAML file."""
    model, _ = make_packaged_model("dppo", env_id, seed=0, algo_kwargs=dict(n_epochs=1))
    model.learn(model.n_steps * model.n_envs)
    assert model._n_updates == 1 and np.isfinite(model.logger.name_to_value["train/loss"])


def test_sampler_gives_valid_models_across_its_space():
    optuna = pytest.importorskip("optuna")
    register()
    from rl_zoo3 import hyperparams_opt

    assert hyperparams_opt.HYPERPARAMS_SAMPLER["dppo"] is sample_dppo_params
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(12):
        trial = study.ask()
        kwargs = sample_dppo_params(trial, n_actions=1, n_envs=1, additional_args={})
        assert kwargs == convert_dppo_params(trial.params)  # what --trial-id rebuilds is what was sampled
        assert set(trial.params) == set(DPPO_SEARCH_SPACE)
        model = DPPO("MlpPolicy", "Pendulum-v1", **kwargs)
        assert model.batch_size <= model.n_steps * model.policy.trained_steps
        assert model.policy.chain.noise_std(2) >= kwargs["policy_kwargs"]["min_step_std"]
        study.tell(trial, 0.0)


def test_compare_runs_dppo(tmp_path):
    out = tmp_path / "cmp"
    args = ["--env", "InvertedPendulum-v5", "--algos", "dppo", "--seeds", "1", "--timesteps", "64", "--eval-freq", "32"]
    main(["compare", *args, "--n-eval-episodes", "1", "--out", str(out)])
    with open(out / "results.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [(r["algo"], int(r["timesteps"])) for r in rows] == [("dppo", 32), ("dppo", 64)]
    command = "sb3-ncdpo compare --env InvertedPendulum-v5 --algos dppo --seeds 1 --timesteps 64"
    assert command in (out / "summary.md").read_text()


def test_compare_checks_dppo_policy_kwargs_before_running(tmp_path, capsys):
    with pytest.raises(SystemExit):
        args = ["--env", "Pendulum-v1", "--algos", "dppo", "--timesteps", "64", "--out", str(tmp_path / "o")]
        main(["compare", *args, "--policy-kwargs", "dict(n_finetuned_steps=11)"])
    assert "n_finetuned_steps must be an int in [1, n_denoising_steps=10]" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
