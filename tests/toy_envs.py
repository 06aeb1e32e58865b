"""Small environments for the tests."""

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


class AsymmetricBoxEnv(gym.Env):
    """Two-dimensional Box action with asymmetric bounds; reward favours the upper corner."""

    def __init__(self, dtype: type = np.float32) -> None:
        self.observation_space = spaces.Box(-1.0, 1.0, (3,), dtype)
        self.action_space = spaces.Box(np.array([-3.0, 0.0]), np.array([1.0, 5.0]), dtype=dtype)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        assert self.action_space.contains(np.asarray(action, dtype=self.action_space.dtype)), action
        return self.observation_space.sample(), float(np.sum(action)), False, False, {}
