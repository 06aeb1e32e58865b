"""The ``sb3-ncdpo`` command through rl-zoo3's real code paths, at tiny budgets."""

import glob
import importlib.util
import os

import numpy as np
import pytest
import yaml
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from sb3_ncdpo import NCDPO
from sb3_ncdpo.cli import default_config, main
from sb3_ncdpo.registration import FOOTBALL_TASKS
from sb3_ncdpo.zoo import convert_ncdpo_params, hyperparams_file, register, sample_ncdpo_params

TINY = [
    "-params",
    "n_steps:64",
    "batch_size:32",
    "n_epochs:1",
    "policy_kwargs:dict(n_denoising_steps=2, denoiser_hidden_sizes=[16])",
]


def train(tmp_path, *args: str) -> str:
    main(["train", "-f", str(tmp_path / "logs"), "--num-threads", "1", "--seed", "0", *args])
    return str(tmp_path / "logs")


def test_train_and_enjoy_ncdpo_with_normalization(tmp_path, capsys):
    logs = train(tmp_path, "--algo", "ncdpo", "--env", "InvertedPendulum-v5", "-n", "64", *TINY)
    run = os.path.join(logs, "ncdpo", "InvertedPendulum-v5_1")
    for name in ("InvertedPendulum-v5.zip", "InvertedPendulum-v5/config.yml", "InvertedPendulum-v5/vecnormalize.pkl"):
        assert os.path.exists(os.path.join(run, name)), name
    with open(os.path.join(run, "InvertedPendulum-v5", "config.yml")) as file:
        config = dict(yaml.unsafe_load(file))
    assert config["normalize"] is True  # from the packaged ncdpo.yml
    assert config["gamma"] == 0.999

    main(["enjoy", "--algo", "ncdpo", "--env", "InvertedPendulum-v5", "-f", logs, "--no-render", "-n", "50"])
    # An untrained policy drops the pole within a few steps: enjoy reports finished episodes.
    assert "Episode Reward" in capsys.readouterr().out
    # The saved model with its VecNormalize statistics gives the deterministic actions enjoy uses.
    model = NCDPO.load(os.path.join(run, "InvertedPendulum-v5.zip"))
    env = VecNormalize.load(os.path.join(run, "InvertedPendulum-v5", "vecnormalize.pkl"), DummyVecEnv([_inverted_pendulum]))
    env.training = False
    obs = env.reset()
    first, _ = model.predict(obs, deterministic=True)
    np.testing.assert_array_equal(first, model.predict(obs, deterministic=True)[0])
    assert env.action_space.contains(first[0])


def test_train_and_enjoy_a_discrete_env(tmp_path, capsys):
    logs = train(tmp_path, "--algo", "ncdpo", "--env", "CartPole-v1", "-n", "256", *TINY)
    run = os.path.join(logs, "ncdpo", "CartPole-v1_1")
    with open(os.path.join(run, "CartPole-v1", "config.yml")) as file:
        config = dict(yaml.unsafe_load(file))
    assert config["n_envs"] == 8 and config["learning_rate"] == "lin_0.001"  # the packaged ncdpo.yml entry
    main(["enjoy", "--algo", "ncdpo", "--env", "CartPole-v1", "-f", logs, "--no-render", "-n", "200"])
    assert "Episode Reward" in capsys.readouterr().out
    model = NCDPO.load(os.path.join(run, "CartPole-v1.zip"))
    action, _ = model.predict(np.zeros(4, np.float32), deterministic=True)
    assert model.action_space.contains(action)


def _inverted_pendulum():
    import gymnasium as gym

    return gym.make("InvertedPendulum-v5")


def test_enjoy_acts_like_the_saved_model(tmp_path, monkeypatch):
    """enjoy queries deterministic actions, and they are the saved model's."""
    logs = train(tmp_path, "--algo", "ncdpo", "--env", "InvertedPendulum-v5", "-n", "64", *TINY)
    calls = []
    original_predict = NCDPO.predict

    def recording_predict(self, observation, state=None, episode_start=None, deterministic=False):
        action, state = original_predict(self, observation, state, episode_start, deterministic)
        calls.append((observation.copy(), deterministic, action.copy()))
        return action, state

    monkeypatch.setattr(NCDPO, "predict", recording_predict)
    main(["enjoy", "--algo", "ncdpo", "--env", "InvertedPendulum-v5", "-f", logs, "--no-render", "-n", "20"])
    monkeypatch.undo()
    assert len(calls) >= 20 and all(deterministic for _, deterministic, _ in calls)
    run = os.path.join(logs, "ncdpo", "InvertedPendulum-v5_1")
    saved = NCDPO.load(os.path.join(run, "InvertedPendulum-v5.zip"))
    for observation, _, action in calls:
        np.testing.assert_array_equal(saved.predict(observation, deterministic=True)[0], action)


def test_record_video(tmp_path, monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")  # headless pygame rendering
    logs = train(tmp_path, "--algo", "ncdpo", "--env", "Pendulum-v1", "-n", "64", *TINY)
    main(["record-video", "--algo", "ncdpo", "--env", "Pendulum-v1", "-f", logs, "-n", "20", "-o", str(tmp_path / "videos")])
    assert glob.glob(str(tmp_path / "videos" / "*ncdpo-Pendulum-v1*.mp4"))


def test_train_ppo_uses_packaged_baseline_only_where_it_has_an_entry(tmp_path):
    assert default_config(["--algo", "ppo", "--env", "Hopper-v5"]) == str(hyperparams_file("ppo"))
    assert default_config(["--algo", "ppo", "--env", "MountainCar-v0"]) is None  # rl-zoo3's own file
    assert default_config(["--algo", "ncdpo", "--env", "Anything-v0"]) == str(hyperparams_file("ncdpo"))
    assert default_config(["--algo", "ncdpo", "-conf", "mine.yml"]) is None
    logs = train(tmp_path, "--algo", "ppo", "--env", "Pendulum-v1", "-n", "64", "-params", "n_steps:64", "batch_size:32")
    with open(os.path.join(logs, "ppo", "Pendulum-v1_1", "Pendulum-v1", "config.yml")) as file:
        config = dict(yaml.unsafe_load(file))
    assert "use_sde" not in config  # rl-zoo3's Pendulum entry uses gSDE; ours is the fair, gSDE-free baseline


def test_unknown_command():
    with pytest.raises(SystemExit, match=r"usage: sb3-ncdpo \{train,enjoy,record-video,compare,collect-demos,pretrain\}"):
        main(["fit"])


#: Entries whose full rollout (16 or 32 envs x 1024 or 2048 steps) would take most of a minute
SLOW_ROLLOUTS = ("LunarLander-v3", "Acrobot-v1", "LunarLanderContinuous-v3", "BipedalWalker-v3")


def _entries(algo: str) -> list[str]:
    with open(hyperparams_file(algo)) as file:
        return list(yaml.safe_load(file))


@pytest.mark.parametrize("algo, env_id", [(a, e) for a in ("ncdpo", "ppo") for e in _entries(a)])
def test_every_yaml_entry_builds_and_trains(tmp_path, algo, env_id):
    """One rollout and one update with each packaged entry as written: no typo can hide in the YAML files."""
    football = env_id.removeprefix("sb3_ncdpo/").removesuffix("-state") in FOOTBALL_TASKS
    if football and importlib.util.find_spec("gfootball") is None:
        pytest.skip("Google Research Football is not installed (scripts/install-football.sh)")
    # Shorter rollouts where a full one would take most of a minute; all else as written.
    shorter = ["-params", "n_steps:64"] if env_id in SLOW_ROLLOUTS else []
    logs = train(tmp_path, "--algo", algo, "--env", env_id, "-n", "1", "--eval-freq", "-1", *shorter)
    name = env_id.replace("/", "-")  # rl-zoo3's folder name of a namespaced id
    assert glob.glob(os.path.join(logs, algo, f"{name}_1", f"{name}.zip"))


def test_trial_params_convert_to_valid_ncdpo_arguments():
    register()
    params = dict(
        n_steps_pow=7,
        batch_size_pow=7,
        one_minus_gamma=0.01,
        one_minus_gae_lambda=0.05,
        learning_rate=1e-4,
        ent_coef=1e-6,
        clip_range=0.2,
        n_epochs=1,
        max_grad_norm=0.5,
        n_denoising_steps=2,
        sampler="ddim",
        x0_clip="none",
        log_std_init=-1.0,
        denoiser="small",
        condition_net="none",
    )
    kwargs = convert_ncdpo_params(params)
    assert kwargs["batch_size"] == kwargs["n_steps"] == 128
    assert kwargs["policy_kwargs"]["x0_clip"] is None and kwargs["policy_kwargs"]["net_arch"]["pi"] == []
    model = NCDPO("MlpPolicy", "Pendulum-v1", **kwargs)
    assert model.policy.chain.config.sampler == "ddim"
    assert model.gamma == pytest.approx(0.99)


def test_sampler_gives_valid_models_across_its_space():
    optuna = pytest.importorskip("optuna")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(12):
        trial = study.ask()
        kwargs = sample_ncdpo_params(trial, n_actions=1, n_envs=1, additional_args={})
        assert kwargs == convert_ncdpo_params(trial.params)  # what --trial-id rebuilds is what was sampled
        model = NCDPO("MlpPolicy", "Pendulum-v1", **kwargs)
        assert model.batch_size <= model.n_steps
        study.tell(trial, 0.0)


# Each worker narrows the search space (a documented customisation point) so that a trial takes seconds.
WORKER = """
import sys
from sb3_ncdpo import zoo
from sb3_ncdpo.cli import main
zoo.SEARCH_SPACE.update(n_steps_pow=(5, 5), batch_size_pow=(5, 5), n_epochs=[1], n_denoising_steps=[2], denoiser=["small"])
main(sys.argv[1:])
"""


def test_distributed_optimization_and_trial_id(tmp_path):
    import subprocess
    import sys

    optuna = pytest.importorskip("optuna")
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    conf = tmp_path / "conf.yml"
    conf.write_text("Pendulum-v1:\n  n_envs: 1\n  n_timesteps: 1\n  policy: 'MlpDiffusionPolicy'\n")
    storage = tmp_path / "study.log"
    common = ["train", "--algo", "ncdpo", "--env", "Pendulum-v1", "-conf", str(conf), "-optimize", "--n-trials", "1"]
    common += ["--sampler", "random", "--pruner", "none", "-n", "1", "--n-evaluations", "1", "--eval-episodes", "1"]
    common += ["--storage", str(storage), "--study-name", "shared", "--num-threads", "1", "-f", str(tmp_path / "logs")]
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, *common, "--seed", str(seed)], cwd=tmp_path, stdout=subprocess.DEVNULL)
        for seed in (1, 2)
    ]
    assert [worker.wait(timeout=300) for worker in workers] == [0, 0]
    study = optuna.load_study(study_name="shared", storage=JournalStorage(JournalFileBackend(str(storage))))
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2  # one trial from each worker

    # --trial-id retrains a stored trial (id 1: rl-zoo3 ignores --trial-id 0)
    retrain = ["train", "--algo", "ncdpo", "--env", "Pendulum-v1", "-conf", str(conf), "-n", "32", "--storage", str(storage)]
    main([*retrain, "--study-name", "shared", "--trial-id", "1", "--num-threads", "1", "-f", str(tmp_path / "retrain")])
    with open(tmp_path / "retrain" / "ncdpo" / "Pendulum-v1_1" / "Pendulum-v1" / "config.yml") as file:
        config = dict(yaml.unsafe_load(file))
    assert config["learning_rate"] == pytest.approx(study.trials[1].params["learning_rate"])
