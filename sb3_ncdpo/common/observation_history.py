"""
The observation history of a policy conditioned on its last ``n_obs_steps`` observations (Diffusion Policy's and
LeRobot's To): one history per env, in the rollout loop and in ``predict``. At an episode's start the history is the
first observation repeated, as Diffusion Policy pads it. Observations are kept as the env gives them (after
``VecNormalize``): normalisation stays per single observation.
"""

import numpy as np
from gymnasium import spaces


def stacked_space(observation_space: spaces.Box, n_obs_steps: int) -> spaces.Box:
    """
    :param observation_space: The space of one observation
    :param n_obs_steps: Length of the history
    :return: The space of a history: a leading axis of ``n_obs_steps`` observations
    """
    low = np.broadcast_to(observation_space.low, observation_space.shape)
    high = np.broadcast_to(observation_space.high, observation_space.shape)
    return spaces.Box(
        np.stack([low] * n_obs_steps),
        np.stack([high] * n_obs_steps),
        dtype=observation_space.dtype,  # type: ignore[arg-type]
    )


class ObservationHistory:
    """
    The last ``n_obs_steps`` observations of each env, oldest first.

    :param n_obs_steps: Length of the history
    """

    def __init__(self, n_obs_steps: int) -> None:
        self.n_obs_steps = n_obs_steps
        self.stacked: np.ndarray | None = None

    def reset(self, observations: np.ndarray) -> np.ndarray:
        """
        :param observations: Every env's first observation, ``(n_envs, *obs_shape)``
        :return: The histories: each observation repeated, ``(n_envs, n_obs_steps, *obs_shape)``
        """
        self.stacked = np.repeat(np.asarray(observations)[:, None], self.n_obs_steps, axis=1)
        return self.stacked

    def push(self, observations: np.ndarray, episode_starts: np.ndarray) -> np.ndarray:
        """
        :param observations: Every env's new observation
        :param episode_starts: Whether it starts an episode (its history is then that observation repeated)
        :return: The histories, ending with ``observations``
        """
        if self.stacked is None or self.stacked.shape[0] != len(observations):
            return self.reset(observations)
        self.stacked = np.concatenate([self.stacked[:, 1:], np.asarray(observations)[:, None]], axis=1)
        starts = np.flatnonzero(episode_starts)
        if starts.size:
            self.stacked[starts] = np.repeat(np.asarray(observations)[starts, None], self.n_obs_steps, axis=1)
        return self.stacked

    def ending_with(self, env: int, observation: np.ndarray) -> np.ndarray:
        """
        :param env: An env
        :param observation: An observation that follows the env's history (a truncated episode's last one)
        :return: The env's history shifted by ``observation``, ``(1, n_obs_steps, *obs_shape)``
        """
        assert self.stacked is not None
        return np.concatenate([self.stacked[env, 1:], np.asarray(observation)[None]])[None]
