"""Demonstrations from any policy (scripted experts): quality mix, episode cap, success flags, reproducibility."""

import numpy as np
import point_goal_env
import pytest

from sb3_ncdpo.cli import main
from sb3_ncdpo.pretrain.demos import ModelPolicy, collect_policy_demos, dataset_transitions, load_demos, load_policy

ENV = "sb3_ncdpo_tests/PointGoal-v0"


@pytest.fixture(autouse=True)
def local_minari(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))


def expert_actions(transitions):
    return np.clip(-2.5 * transitions.observations, -1.0, 1.0)


def test_the_cli_records_a_scripted_expert_with_its_success_flags(capsys):
    main(["collect-demos", "--policy", "point_goal_env:go_to_goal", "--env", ENV, "--dataset-id", "test/point-v0",
          "--n-episodes", "5", "--seed", "3"])  # fmt: skip
    summary = capsys.readouterr().out.splitlines()[-1]
    assert summary.startswith("dataset test/point-v0: 5 episodes") and summary.endswith("success 100%")
    dataset = load_demos("test/point-v0")
    transitions = dataset_transitions(dataset)
    np.testing.assert_array_equal(transitions.actions, expert_actions(transitions))
    for episode in dataset.iterate_episodes():  # one flag per step, reset included: the last one, where it ended
        flags = np.asarray(episode.infos["success"])
        assert flags.shape == (len(episode.actions) + 1,) and flags[-1] and not flags[:-1].any()
    np.testing.assert_array_equal(transitions.episode_successes, [True] * 5)


def test_a_share_of_the_episodes_is_noisier_and_the_same_seed_makes_the_same_dataset():
    kwargs = dict(noisy_fraction=0.3, noisy_action_noise=0.5, max_episode_steps=20, seed=1)
    first = dataset_transitions(collect_policy_demos(point_goal_env.go_to_goal, ENV, "test/mix-v0", 10, **kwargs))
    clean = [
        np.array_equal(first.actions[first.episode_ids == i], expert_actions(first)[first.episode_ids == i]) for i in range(10)
    ]
    assert sum(clean) == 7  # exactly round(0.3 * 10) episodes had noise, the others the expert's own actions
    again = dataset_transitions(collect_policy_demos(point_goal_env.go_to_goal, ENV, "test/mix-v1", 10, **kwargs))
    np.testing.assert_array_equal(again.observations, first.observations)
    np.testing.assert_array_equal(again.actions, first.actions)
    other = dataset_transitions(
        collect_policy_demos(point_goal_env.go_to_goal, ENV, "test/mix-v2", 10, **{**kwargs, "seed": 2})
    )
    assert not np.array_equal(other.observations[:1], first.observations[:1])


def test_min_steps_records_more_episodes_and_keeps_the_first_ones():
    kwargs = dict(max_episode_steps=20, seed=1, noisy_fraction=0.5, noisy_action_noise=0.5)
    first = collect_policy_demos(point_goal_env.go_to_goal, ENV, "test/few-v0", 3, **kwargs)
    more = collect_policy_demos(point_goal_env.go_to_goal, ENV, "test/more-v0", 3, min_steps=200, **kwargs)
    assert more.total_steps >= 200 > more.total_steps - 20 and more.total_episodes > 3  # stopped at the episode it passed 200
    for kept, recorded in zip(more.iterate_episodes(), first.iterate_episodes(), strict=False):  # the same first three
        np.testing.assert_array_equal(kept.observations, recorded.observations)
        np.testing.assert_array_equal(kept.actions, recorded.actions)
    enough = collect_policy_demos(point_goal_env.go_to_goal, ENV, "test/enough-v0", 3, min_steps=1, **kwargs)
    assert enough.total_episodes == 3


def test_the_episode_cap_truncates_and_a_class_with_get_action_is_reset_each_episode():
    idle = lambda observation: np.zeros(1, dtype=np.float32)  # noqa: E731  (never reaches the goal from |x| >= 0.1)
    dataset = collect_policy_demos(idle, ENV, "test/cap-v0", 3, max_episode_steps=7, seed=0)
    lengths = [len(episode.actions) for episode in dataset.iterate_episodes()]
    assert lengths == [7 if abs(e.observations[0][0]) >= 0.1 else 1 for e in dataset.iterate_episodes()]
    assert all(episode.truncations[-1] for episode in dataset.iterate_episodes() if len(episode.actions) == 7)
    policy = load_policy("point_goal_env:ScriptedExpert")
    collect_policy_demos(policy, ENV, "test/getaction-v0", 4, seed=0)
    assert policy.policy.resets == 4


def test_a_wrapped_model_is_told_each_episode_start():
    class Model:
        def __init__(self):
            self.starts = []

        def predict(self, observation, deterministic, episode_start):
            self.starts.append(bool(episode_start[0]))
            return point_goal_env.go_to_goal(observation), None

    model = Model()
    dataset = collect_policy_demos(ModelPolicy(model, None, True), ENV, "test/model-v0", 2, seed=0)
    lengths = [len(episode.actions) for episode in dataset.iterate_episodes()]
    assert model.starts == [True] + [False] * (lengths[0] - 1) + [True] + [False] * (lengths[1] - 1)


def test_a_models_sampled_actions_are_reproducible(tmp_path):
    from stable_baselines3 import PPO

    from sb3_ncdpo.pretrain.demos import collect_demos

    PPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=64, seed=0).save(tmp_path / "expert.zip")
    runs = [
        dataset_transitions(
            collect_demos(tmp_path / "expert.zip", "ppo", "Pendulum-v1", f"test/pend-v{i}", 1, deterministic=False)
        )
        for i in range(2)
    ]
    np.testing.assert_array_equal(runs[0].actions, runs[1].actions)
    assert runs[0].actions.std() > 0.1  # sampled: the deterministic actions of an untrained policy are all near 0


def test_envs_without_success_have_no_flags():
    transitions = dataset_transitions(collect_policy_demos(lambda o: np.zeros(1), "Pendulum-v1", "test/pend-v0", 1))
    assert transitions.episode_successes is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(noisy_fraction=1.5), r"noisy_fraction must be in \[0, 1\], got 1.5"),
        (dict(noisy_action_noise=-1.0), "noisy_action_noise must be >= 0, got -1.0"),
        (dict(max_episode_steps=0), "max_episode_steps must be an int >= 1 or None, got 0"),
        (dict(min_steps=-5), r"min_steps must be an int >= 0 \(0: exactly n_episodes\), got -5"),
    ],
)
def test_bad_quality_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        collect_policy_demos(point_goal_env.go_to_goal, ENV, "test/bad-v0", 2, **kwargs)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--policy", "point_goal_env"], "--policy must be 'module:attribute', got 'point_goal_env'"),
        (["--policy", "point_goal_env:nothing"], "--policy 'point_goal_env:nothing' cannot be imported"),
        (["--policy", "point_goal_env:go_to_goal", "--algo", "ppo"], "--algo goes with --model, not --policy"),
        (["--policy", "point_goal_env:go_to_goal", "--noisy-fraction", "2"], "--noisy-fraction must be in [0, 1], got 2.0"),
        (["--model", "missing.zip", "--algo", "ppo"], "--model missing.zip: no such file"),
        (["--policy", "point_goal_env:go_to_goal", "--min-steps", "-1"], "--min-steps must be an int >= 0"),
    ],
)
def test_bad_command_lines_are_refused_before_anything_is_recorded(args, message, capsys):
    with pytest.raises(SystemExit):
        main(["collect-demos", *args, "--env", ENV, "--dataset-id", "test/cli-v0"])
    assert message in capsys.readouterr().err


def test_an_env_minari_cannot_store_is_refused_before_recording():
    import gymnasium as gym

    gym.register("sb3_ncdpo_tests/CallableEntry-v0", entry_point=point_goal_env.PointGoalEnv, max_episode_steps=5)
    calls = []
    with pytest.raises(ValueError, match="env 'sb3_ncdpo_tests/CallableEntry-v0' cannot be stored in a Minari dataset"):
        collect_policy_demos(lambda o: calls.append(o) or o, "sb3_ncdpo_tests/CallableEntry-v0", "test/callable-v0", 1)
    assert calls == []  # no episode was played


def test_a_models_settings_are_checked_before_it_is_loaded(tmp_path, monkeypatch):
    from stable_baselines3 import PPO

    from sb3_ncdpo.pretrain.demos import collect_demos

    (tmp_path / "expert.zip").write_bytes(b"not read")
    monkeypatch.setattr(PPO, "load", lambda *args, **kwargs: pytest.fail("the model was loaded"))
    with pytest.raises(ValueError, match=r"noisy_fraction must be in \[0, 1\], got -0.5"):
        collect_demos(tmp_path / "expert.zip", "ppo", ENV, "test/early-v0", 2, noisy_fraction=-0.5)
