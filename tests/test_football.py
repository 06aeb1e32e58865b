"""
Google Research Football as a PettingZoo parallel env (sb3_ncdpo.football).

The adapter's logic is checked against a stand-in for GRF's env (what ``gfootball.env.create_environment`` returns, as
far as the adapter reads it), so that it runs everywhere; the tests marked ``gfootball`` run the real engine and are
skipped where it is not installed (``scripts/install-football.sh``).
"""

import importlib.util
import pickle
import sys
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3 import PPO

from sb3_ncdpo import NCDPO, football
from sb3_ncdpo.football import ACTIVE_SLICE, FootballParallelEnv
from sb3_ncdpo.multiagent import CentralCriticPolicy, make_parallel_vec_env
from sb3_ncdpo.registration import FOOTBALL_TASKS

FEATURES = 115


class FakeFootball:
    """
    GRF's multi-agent env as the adapter sees it: stacked per-player observations and rewards, one ``done``, the clock
    in the raw observation's ``steps_left``. Player ``i``'s observation is filled with ``10 * i + step`` and its active
    one-hot marks left-team player ``i + 1``; a goal ends the episode at step ``goal_at``.
    """

    def __init__(self, number_of_left_players_agent_controls: int, duration: int = 4, goal_at: int | None = None, **kwargs):
        self.n, self.duration, self.goal_at, self.kwargs = number_of_left_players_agent_controls, duration, goal_at, kwargs
        self.observation_space = SimpleNamespace(shape=(self.n, FEATURES) if self.n > 1 else (FEATURES,))
        self.unwrapped = SimpleNamespace(_num_actions=19, _config={}, _env=SimpleNamespace(_observation={}))
        self.actions: list[list[int]] = []
        self.engine_seeds: list[int | None] = []

    def _observe(self) -> np.ndarray:
        self.unwrapped._env._observation["steps_left"] = self.duration - self.step_count
        obs = np.stack([np.full(FEATURES, 10.0 * i + self.step_count, np.float32) for i in range(self.n)])
        obs[:, ACTIVE_SLICE] = 0.0
        obs[np.arange(self.n), ACTIVE_SLICE.start + 1 + np.arange(self.n)] = 1.0
        return obs if self.n > 1 else obs[0]

    def reset(self) -> np.ndarray:
        self.engine_seeds.append(self.unwrapped._config.get("game_engine_random_seed"))
        self.step_count = 0
        return self._observe()

    def step(self, actions: list[int]) -> tuple[np.ndarray, np.ndarray, bool, dict]:
        self.actions.append(actions)
        self.step_count += 1
        goal = self.step_count == self.goal_at
        done = goal or self.step_count >= self.duration
        return self._observe(), np.arange(self.n, dtype=np.float32) + goal, done, {"score_reward": int(goal)}

    def close(self) -> None:
        pass


@pytest.fixture
def fake_grf(monkeypatch):
    """Every FootballParallelEnv made in the test gets a FakeFootball (settings: the fixture's ``settings``)."""
    made: list[FakeFootball] = []
    settings: dict = {}

    def create_environment(**kwargs):
        made.append(FakeFootball(**kwargs, **settings))
        return made[-1]

    monkeypatch.setattr(football, "create_environment", create_environment)
    return SimpleNamespace(made=made, settings=settings)


def test_controlled_players_are_the_agents(fake_grf):
    env = FootballParallelEnv("academy_3_vs_1_with_keeper", n_players=3)
    assert fake_grf.made[0].kwargs == dict(
        env_name="academy_3_vs_1_with_keeper",
        representation="simple115v2",
        rewards="scoring,checkpoints",
        other_config_options={},
    )
    assert env.possible_agents == ["player_0", "player_1", "player_2"]
    assert env.observation_space("player_1") == gym.spaces.Box(-np.inf, np.inf, (FEATURES,), np.float32)
    assert env.action_space("player_2") == gym.spaces.Discrete(19)
    observations, infos = env.reset()
    assert env.agents == env.possible_agents and set(infos) == set(env.agents)
    assert [observations[f"player_{i}"][0] for i in range(3)] == [0.0, 10.0, 20.0]
    observations, rewards, terminations, truncations, infos = env.step({"player_2": 7, "player_0": 3, "player_1": 5})
    assert fake_grf.made[0].actions == [[3, 5, 7]]  # in the players' order, whatever the dict's
    assert rewards == {"player_0": 0.0, "player_1": 1.0, "player_2": 2.0}
    assert [observations[f"player_{i}"][0] for i in range(3)] == [1.0, 11.0, 21.0]
    assert not any(terminations.values()) and not any(truncations.values()) and infos["player_0"] == {"score_reward": 0}


def test_a_single_controlled_player_is_one_agent(fake_grf):
    env = FootballParallelEnv(n_players=1)
    observations, _ = env.reset()
    assert list(observations) == ["player_0"] and observations["player_0"].shape == (FEATURES,)
    assert env.step({"player_0": 1})[1] == {"player_0": 0.0}


def test_clock_is_a_truncation_and_a_goal_a_termination(fake_grf):
    env = FootballParallelEnv(n_players=2)
    env.reset()
    for _ in range(3):
        _, _, terminations, truncations, _ = env.step({"player_0": 0, "player_1": 0})
        assert not any(terminations.values()) and not any(truncations.values())
    _, _, terminations, truncations, _ = env.step({"player_0": 0, "player_1": 0})
    assert all(truncations.values()) and not any(terminations.values()) and env.agents == []

    fake_grf.settings.update(goal_at=2)
    env = FootballParallelEnv(n_players=2)
    env.reset()
    env.step({"player_0": 0, "player_1": 0})
    _, rewards, terminations, truncations, infos = env.step({"player_0": 0, "player_1": 0})
    assert all(terminations.values()) and not any(truncations.values()) and env.agents == []
    assert rewards == {"player_0": 1.0, "player_1": 2.0} and infos["player_1"]["score_reward"] == 1


def test_vec_env_bootstraps_only_truncated_episodes(fake_grf):
    """Through SuperSuit (which copies the env by pickling it): SB3's TimeLimit.truncated flag only on the clock."""
    venv = make_parallel_vec_env("sb3_ncdpo.football:parallel_env", n_envs=1, seed=0, env_kwargs=dict(n_players=3))
    assert venv.num_envs == 3
    venv.reset()
    for _ in range(4):
        _, rewards, dones, infos = venv.step(np.zeros(3, dtype=int))
    assert dones.all() and all(info["TimeLimit.truncated"] for info in infos)
    np.testing.assert_array_equal(rewards, [0.0, 1.0, 2.0])

    fake_grf.settings.update(goal_at=1)
    venv = make_parallel_vec_env("sb3_ncdpo.football:parallel_env", n_envs=1, seed=0, env_kwargs=dict(n_players=3))
    venv.reset()
    _, _, dones, infos = venv.step(np.zeros(3, dtype=int))
    assert dones.all() and not any(info.get("TimeLimit.truncated", False) for info in infos)


def test_global_state_marks_every_controlled_player(fake_grf):
    env = FootballParallelEnv(n_players=3)
    observations, _ = env.reset()
    state = env.state()
    assert env.state_space.contains(state)
    expected = observations["player_0"].copy()
    expected[ACTIVE_SLICE] = [0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    np.testing.assert_array_equal(state, expected)


def test_seeded_resets_fix_the_engine_seeds(fake_grf):
    def engine_seeds(seed: int | None) -> list[int | None]:
        env = FootballParallelEnv(n_players=2)
        env.reset(seed=seed)
        env.reset()
        return fake_grf.made[-1].engine_seeds

    first = engine_seeds(0)
    assert first == engine_seeds(0) and first != engine_seeds(1)
    assert first[0] != first[1]  # a new engine seed per episode
    assert engine_seeds(None) == [None, None]  # GRF's own draw


def test_pickling_makes_a_new_engine_with_the_same_settings(fake_grf):
    env = FootballParallelEnv("academy_counterattack_easy", n_players=4, rewards="scoring")
    copy = pickle.loads(pickle.dumps(env))
    assert len(fake_grf.made) == 2 and fake_grf.made[1].kwargs == fake_grf.made[0].kwargs
    assert copy.possible_agents == env.possible_agents and copy.metadata["name"] == "gfootball_academy_counterattack_easy"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(representation="pixels"), r"representation must be one of \('simple115v2', 'simple115'\), got 'pixels'"),
        (dict(n_players=0), "n_players must be an int >= 1, got 0"),
        (dict(render_mode="human"), r"render_mode must be None or one of \('rgb_array',\), got 'human'"),
    ],
)
def test_bad_settings_are_refused_before_grf_is_made(fake_grf, kwargs, message):
    with pytest.raises(ValueError, match=message):
        FootballParallelEnv(**kwargs)
    assert fake_grf.made == []


def test_render_needs_rgb_array(fake_grf):
    with pytest.raises(ValueError, match=r"render\(\) needs render_mode='rgb_array', this env has render_mode=None"):
        FootballParallelEnv().render()


def test_missing_gfootball_names_the_install_script(monkeypatch):
    monkeypatch.setitem(sys.modules, "gfootball.env", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"Google Research Football is not installed .*scripts/install-football.sh"):
        FootballParallelEnv()


def test_academy_scenarios_are_registered():
    for scenario, n_players in FOOTBALL_TASKS.items():
        for env_id, global_state in ((f"sb3_ncdpo/{scenario}", False), (f"sb3_ncdpo/{scenario}-state", True)):
            kwargs = gym.spec(env_id).kwargs
            assert kwargs == dict(
                parallel_env="sb3_ncdpo.football:parallel_env",
                global_state=global_state,
                scenario=scenario,
                n_players=n_players,
            )


gfootball = pytest.mark.skipif(
    importlib.util.find_spec("gfootball") is None,
    reason="Google Research Football is not installed (scripts/install-football.sh)",
)


@gfootball
@pytest.mark.parametrize("algo", [NCDPO, PPO])
def test_real_grf_trains_saves_loads_and_acts_for_every_player(tmp_path, algo):
    venv = make_parallel_vec_env(
        "sb3_ncdpo.football:parallel_env", n_envs=1, seed=0, env_kwargs=dict(scenario="academy_3_vs_1_with_keeper")
    )
    kwargs = dict(policy_kwargs=dict(n_denoising_steps=3, denoiser_hidden_sizes=[32, 32])) if algo is NCDPO else {}
    model = algo("MlpPolicy", venv, n_steps=32, batch_size=48, n_epochs=2, seed=0, **kwargs)
    model.learn(192)  # two rollouts of 32 steps x 3 players
    assert model.num_timesteps == 192
    obs = venv.reset()
    actions, _ = model.predict(obs, deterministic=True)
    assert actions.shape == (3,) and all(venv.action_space.contains(a) for a in actions)
    model.save(tmp_path / "model")
    np.testing.assert_array_equal(algo.load(tmp_path / "model").predict(obs, deterministic=True)[0], actions)


@gfootball
def test_real_grf_central_critic_and_render():
    venv = make_parallel_vec_env(
        "sb3_ncdpo.football:parallel_env",
        seed=0,
        global_state=True,
        env_kwargs=dict(scenario="academy_counterattack_easy", n_players=4),
    )
    model = PPO(CentralCriticPolicy, venv, n_steps=16, batch_size=32, n_epochs=1, seed=0)
    model.learn(64)
    assert venv.num_envs == 4 and model.num_timesteps == 64
    env = FootballParallelEnv(render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (288, 384, 3) and frame.dtype == np.uint8 and frame.any()
