"""Small environments for the tests and the benchmarks (shipped like SB3's ``stable_baselines3.common.envs``)."""

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class TargetEnv(gym.Env):
    """
    One-step continuous task that a policy can only solve by reading the observation: the reward is minus the squared
    distance between the action and ``0.8 * (s_0, -s_1)``. A policy that ignores ``s`` scores about -0.43 at best;
    a random one about -1.3; a good one close to 0.
    """

    def __init__(self) -> None:
        self.observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self._obs = np.zeros(2, np.float32)

    def target(self, obs: np.ndarray) -> np.ndarray:
        return 0.8 * obs * np.array([1.0, -1.0], np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._obs = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        return self._obs, {}

    def step(self, action):
        reward = -float(np.sum((np.asarray(action) - self.target(self._obs)) ** 2))
        return self._obs, reward, True, False, {}


LOW, HIGH = np.array([-3.0, 0.0]), np.array([1.0, 5.0])


class BoxEnv(gym.Env):
    """
    Tiny continuous env with asymmetric action bounds: random observations, reward ``-|a|^2 / 10``, episodes of
    ``ep_len`` steps (terminated, not truncated). ``step`` asserts that the action lies in the Box.
    """

    def __init__(
        self,
        obs_dtype=np.float32,
        action_dtype=np.float32,
        obs_dim: int = 3,
        action_shape=None,
        ep_len: int = 10,
        low=LOW,
        high=HIGH,
    ):
        super().__init__()
        self.observation_space = spaces.Box(-1.0, 1.0, (obs_dim,), dtype=obs_dtype)
        low, high = np.asarray(low), np.asarray(high)
        if action_shape is not None:
            low, high = np.full(action_shape, -2.0), np.full(action_shape, 2.0)
        self.action_space = spaces.Box(low.astype(action_dtype), high.astype(action_dtype), dtype=action_dtype)
        self.ep_len = ep_len
        self._t = 0

    def _obs(self) -> np.ndarray:
        return self.np_random.uniform(-1.0, 1.0, self.observation_space.shape).astype(self.observation_space.dtype)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return self._obs(), {}

    def step(self, action):
        assert self.action_space.contains(action), f"action not in {self.action_space}: {action!r}"
        self._t += 1
        return self._obs(), reward_of(action), self._t >= self.ep_len, False, {}


def reward_of(action: np.ndarray) -> float:
    return -float(np.sum(np.square(action))) / 10.0


class DictBoxEnv(BoxEnv):
    """BoxEnv with a Dict observation of two float64 Boxes."""

    def __init__(self, **kwargs):
        super().__init__(obs_dtype=np.float64, action_dtype=np.float64, **kwargs)
        self.observation_space = spaces.Dict(
            {
                "a": spaces.Box(-1.0, 1.0, (3,), dtype=np.float64),
                "b": spaces.Box(-1.0, 1.0, (2,), dtype=np.float64),
            }
        )

    def _obs(self):
        return {key: space.sample() for key, space in self.observation_space.spaces.items()}


class SectorEnv(gym.Env):
    """
    One-step discrete task that a policy can only solve by reading the observation: the observation is a point of
    ``[-1, 1]^2`` and the reward is 1 for the action whose angular sector (``n_actions`` equal sectors) contains it, else
    0. A policy that ignores the observation scores ``1 / n_actions``; the expected reward of a stochastic policy is
    its probability of the right action.

    :param n_actions: Number of actions (sectors)
    """

    def __init__(self, n_actions: int = 5) -> None:
        self.observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space: spaces.Discrete = spaces.Discrete(n_actions)
        self._obs = np.zeros(2, np.float32)

    def target(self, obs: np.ndarray) -> int:
        angle = (np.arctan2(obs[1], obs[0]) + np.pi) / (2 * np.pi)
        return int(angle * self.action_space.n) % int(self.action_space.n)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._obs = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        return self._obs, {}

    def step(self, action):
        return self._obs, float(int(action) == self.target(self._obs)), True, False, {}
