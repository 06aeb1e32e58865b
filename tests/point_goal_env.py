"""A one-dimensional reaching task that reports success as SB3 does (``info["is_success"]``), with scripted policies."""

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class PointGoalEnv(gym.Env):
    """The point starts in [-1, 1] and moves by ``0.2 * action``; the episode succeeds (and ends) within 0.1 of 0."""

    observation_space = spaces.Box(-2.0, 2.0, (1,), np.float32)
    action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.x = self.np_random.uniform(-1.0, 1.0, 1).astype(np.float32)
        return self.x.copy(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.x = np.clip(self.x + 0.2 * action, -2.0, 2.0).astype(np.float32)
        success = bool(abs(self.x[0]) < 0.1)
        return self.x.copy(), -float(abs(self.x[0])), success, False, {"is_success": success}


def go_to_goal(observation: np.ndarray) -> np.ndarray:
    """The scripted expert: straight to the goal."""
    return np.clip(-2.5 * observation, -1.0, 1.0)


class ScriptedExpert:
    """Meta-World's interface (``get_action``), counting its episodes through ``reset``."""

    def __init__(self) -> None:
        self.resets = 0

    def reset(self) -> None:
        self.resets += 1

    def get_action(self, observation: np.ndarray) -> np.ndarray:
        return go_to_goal(observation)


gym.register("sb3_ncdpo_tests/PointGoal-v0", entry_point="point_goal_env:PointGoalEnv", max_episode_steps=50)
