"""
Google Research Football (GRF) as a PettingZoo parallel env: the controlled players of a scenario are the agents.

GRF (``pip install gfootball``, see docs/guide/usage.md, "Google Research Football") is an old-``gym`` env whose
multi-agent mode returns stacked per-player arrays: observations ``(n_players, ...)``, rewards ``(n_players,)``, one
``done`` for all, a ``MultiDiscrete`` action. :class:`FootballParallelEnv` turns it into a PettingZoo parallel env
(one agent per controlled player, ``Discrete(19)`` actions, gymnasium spaces), so that
:func:`sb3_ncdpo.multiagent.make_parallel_vec_env` trains one shared policy for all players, and the ids
``sb3_ncdpo/<scenario>`` registered by :mod:`sb3_ncdpo.registration` reach ``sb3-ncdpo train`` and ``compare``.

Choices (GRF's own where it has one):

* the end of an episode is a truncation when GRF's clock ran out (``steps_left == 0``, the scenario's game duration),
  a termination otherwise (goal, ball out of play, possession lost: the academy scenarios' end conditions);
* the global state (``state()``, for a centralised critic) is the first player's ``simple115v2`` vector with its
  active-player one-hot replaced by the controlled players' multi-hot: every other entry of that representation is
  already the same for all players;
* ``reset(seed=s)`` draws each episode's engine seed (GRF's ``game_engine_random_seed``) from a generator seeded
  with ``s``; without a seed GRF draws it from Python's ``random``.
"""

import importlib
import warnings
from typing import Any

import numpy as np
from gymnasium import spaces

try:
    from pettingzoo import ParallelEnv
except ImportError as error:  # pragma: no cover - depends on the installed extras
    raise ImportError(f"sb3_ncdpo.football needs the 'football' extra: see scripts/install-football.sh ({error})") from error

#: Representations whose per-player observation is a flat vector (the ones a shared MLP policy takes).
REPRESENTATIONS = ("simple115v2", "simple115")
#: Render modes besides None (:meth:`FootballParallelEnv.render`).
RENDER_MODES = ("rgb_array",)
#: Colours of the super-mini-map's layers (left team, right team, ball, active player) in :meth:`render`.
LAYER_COLOURS = np.array([[230, 60, 50], [60, 110, 230], [255, 255, 255], [255, 220, 0]], np.uint16)
#: The active-player one-hot of the ``simple115`` layouts (positions 97 to 107).
ACTIVE_SLICE = slice(97, 108)


def _gfootball(module: str = "gfootball.env") -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"Google Research Football is not installed ({error}): run scripts/install-football.sh (docs/guide/usage.md, "
            "'Google Research Football')"
        ) from error


def create_environment(**kwargs: Any) -> Any:
    """
    :param kwargs: Keyword arguments of ``gfootball.env.create_environment``
    :return: GRF's (old-``gym``) env
    """
    module = _gfootball()
    with warnings.catch_warnings():
        # gfootball's wrappers use the old step API on purpose; gym warns about it for each wrapper.
        warnings.filterwarnings("ignore", ".*Initializing wrapper in old step API", DeprecationWarning)
        return module.create_environment(**kwargs)


class FootballParallelEnv(ParallelEnv):
    """
    A GRF scenario whose ``n_players`` controlled left-team players are the agents ``player_0`` ... of a PettingZoo
    parallel env.

    :param scenario: GRF scenario name (e.g. ``"academy_3_vs_1_with_keeper"``)
    :param n_players: Left-team players controlled by the agents (GRF's ``number_of_left_players_agent_controls``)
    :param representation: Per-player observation, one of :data:`REPRESENTATIONS`
    :param rewards: GRF's reward spec (``"scoring"`` or ``"scoring,checkpoints"``)
    :param render_mode: ``None`` or ``"rgb_array"``: GRF's super-mini-map drawn in colour (left team red, right team
        blue, ball white), not GRF's OpenGL renderer
    :param other_config_options: Further GRF config options
    """

    metadata: dict[str, Any] = {"name": "gfootball", "render_modes": list(RENDER_MODES), "is_parallelizable": True}  # noqa: RUF012

    def __init__(
        self,
        scenario: str = "academy_3_vs_1_with_keeper",
        n_players: int = 3,
        representation: str = "simple115v2",
        rewards: str = "scoring,checkpoints",
        render_mode: str | None = None,
        other_config_options: dict[str, Any] | None = None,
    ) -> None:
        if representation not in REPRESENTATIONS:
            raise ValueError(f"representation must be one of {REPRESENTATIONS}, got {representation!r}")
        if not isinstance(n_players, int) or n_players < 1:
            raise ValueError(f"n_players must be an int >= 1, got {n_players!r}")
        if render_mode not in (None, *RENDER_MODES):
            raise ValueError(f"render_mode must be None or one of {RENDER_MODES}, got {render_mode!r}")
        self._arguments = dict(
            scenario=scenario,
            n_players=n_players,
            representation=representation,
            rewards=rewards,
            render_mode=render_mode,
            other_config_options=other_config_options,
        )
        self._env = create_environment(
            env_name=scenario,
            representation=representation,
            rewards=rewards,
            number_of_left_players_agent_controls=n_players,
            other_config_options=dict(other_config_options or {}),
        )
        self.metadata = {**self.metadata, "name": f"gfootball_{scenario}"}
        self.render_mode = render_mode
        self.possible_agents = [f"player_{i}" for i in range(n_players)]
        self.agents: list[str] = []
        n_features = self._env.observation_space.shape[-1]
        self._observation_space = spaces.Box(-np.inf, np.inf, (n_features,), np.float32)
        self._action_space = spaces.Discrete(self._env.unwrapped._num_actions)
        self.state_space = self._observation_space
        self._engine_seeds: np.random.Generator | None = None
        self._observations = np.zeros((n_players, n_features), np.float32)

    def __getstate__(self) -> dict[str, Any]:
        # The engine cannot be pickled (SuperSuit copies the env with cloudpickle): a copy makes its own engine.
        return self._arguments

    def __setstate__(self, arguments: dict[str, Any]) -> None:
        self.__init__(**arguments)  # type: ignore[misc]

    def observation_space(self, agent: str) -> spaces.Space:
        return self._observation_space

    def action_space(self, agent: str) -> spaces.Space:
        return self._action_space

    def _split(self, observations: Any) -> dict[str, np.ndarray]:
        # GRF drops the player axis when one player is controlled.
        self._observations = np.asarray(observations, np.float32).reshape(len(self.possible_agents), -1)
        return {agent: self._observations[i] for i, agent in enumerate(self.possible_agents)}

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        if seed is not None:
            self._engine_seeds = np.random.default_rng(seed)
        if self._engine_seeds is not None:
            self._env.unwrapped._config["game_engine_random_seed"] = int(self._engine_seeds.integers(2**31 - 1))
        self.agents = list(self.possible_agents)
        observations = self._split(self._env.reset())
        return observations, {agent: {} for agent in self.agents}

    def step(self, actions: dict) -> tuple[dict, dict, dict, dict, dict]:
        observations, rewards, done, info = self._env.step([int(actions[agent]) for agent in self.possible_agents])
        truncated = bool(done) and self._env.unwrapped._env._observation["steps_left"] <= 0
        terminated = bool(done) and not truncated
        rewards = np.asarray(rewards, np.float32).reshape(-1)
        agents = self.possible_agents
        result = (
            self._split(observations),
            {agent: float(rewards[i]) for i, agent in enumerate(agents)},
            {agent: terminated for agent in agents},
            {agent: truncated for agent in agents},
            {agent: dict(info) for agent in agents},
        )
        if done:
            self.agents = []
        return result

    def state(self) -> np.ndarray:
        state = self._observations[0].copy()
        state[ACTIVE_SLICE] = np.clip(self._observations[:, ACTIVE_SLICE].sum(axis=0), 0.0, 1.0)
        return state

    def render(self) -> np.ndarray:
        """:return: The pitch as an RGB image (GRF's 96 x 72 super-mini-map, each cell 4 x 4 pixels)"""
        if self.render_mode != "rgb_array":
            raise ValueError(f"render() needs render_mode='rgb_array', this env has render_mode={self.render_mode!r}")
        minimap = _gfootball("gfootball.env.observation_preprocessing").generate_smm
        layers = minimap(self._env.unwrapped.observation()[:1])[0] > 0
        image = np.minimum((layers[..., None] * LAYER_COLOURS[: layers.shape[-1]]).sum(axis=2), 255).astype(np.uint8)
        return image.repeat(4, axis=0).repeat(4, axis=1)

    def close(self) -> None:
        self._env.close()


def parallel_env(**kwargs: Any) -> FootballParallelEnv:
    """
    :param kwargs: Keyword arguments of :class:`FootballParallelEnv`
    :return: The parallel env (the ``"module:function"`` that :mod:`sb3_ncdpo.registration` registers)
    """
    return FootballParallelEnv(**kwargs)
