"""NCDPO's rollout buffers: SB3's, that also store the denoising noise ``xi`` of every transition (NCDPO's replayed noise)."""

from collections.abc import Generator
from typing import Any, NamedTuple

import numpy as np
import torch as th
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer
from stable_baselines3.common.type_aliases import TensorDict
from stable_baselines3.common.vec_env import VecNormalize


class NoiseRolloutBufferSamples(NamedTuple):
    observations: th.Tensor
    actions: th.Tensor
    old_values: th.Tensor
    old_log_prob: th.Tensor
    advantages: th.Tensor
    returns: th.Tensor
    noises: th.Tensor


class NoiseDictRolloutBufferSamples(NamedTuple):
    observations: TensorDict
    actions: th.Tensor
    old_values: th.Tensor
    old_log_prob: th.Tensor
    advantages: th.Tensor
    returns: th.Tensor
    noises: th.Tensor


class _NoiseStorage:
    """
    Adds a ``noises`` array of shape ``(n_steps, n_envs, *noise_shape)`` to an SB3 rollout buffer, following the
    pattern of sb3-contrib's ``MaskableRolloutBuffer``. Mixed in before ``RolloutBuffer`` / ``DictRolloutBuffer``.

    Takes SB3's arguments (``buffer_size``, ``observation_space``, ``action_space``, ``device``, ``gae_lambda``,
    ``gamma``, ``n_envs``) and:

    :param noise_shape: Shape of the noise of one transition, ``(K, noise_dim)``
    """

    noises: np.ndarray
    noise_shape: tuple[int, ...]
    samples_class: type[NoiseRolloutBufferSamples] | type[NoiseDictRolloutBufferSamples]
    # Provided by the SB3 buffer this class is mixed into.
    buffer_size: int
    n_envs: int
    pos: int
    generator_ready: bool
    swap_and_flatten: Any
    to_torch: Any

    def __init__(self, *args: Any, noise_shape: tuple[int, ...] = (1, 1), **kwargs: Any) -> None:
        self.noise_shape = tuple(noise_shape)
        super().__init__(*args, **kwargs)

    def reset(self) -> None:
        self.noises = np.zeros((self.buffer_size, self.n_envs, *self.noise_shape), dtype=np.float32)
        super().reset()  # type: ignore[misc]

    def add(self, *args: Any, noises: th.Tensor | np.ndarray, **kwargs: Any) -> None:
        """
        Add one step of every env, with the noise that produced its actions.

        :param noises: Noise of shape ``(n_envs, *noise_shape)``
        """
        if isinstance(noises, th.Tensor):
            noises = noises.cpu().numpy()
        self.noises[self.pos] = np.asarray(noises).reshape((self.n_envs, *self.noise_shape))
        super().add(*args, **kwargs)  # type: ignore[misc]

    def get(self, batch_size: int | None = None) -> Generator[Any, None, None]:
        # Flatten the extra array on the first call only, as the parent does for its own arrays.
        if not self.generator_ready:
            self.noises = self.swap_and_flatten(self.noises)
        yield from super().get(batch_size)  # type: ignore[misc]

    def _get_samples(self, batch_inds: np.ndarray, env: VecNormalize | None = None) -> Any:
        samples = super()._get_samples(batch_inds, env=env)  # type: ignore[misc]
        return self.samples_class(**samples._asdict(), noises=self.to_torch(self.noises[batch_inds]))


class NoiseRolloutBuffer(_NoiseStorage, RolloutBuffer):  # type: ignore[misc]
    """
    SB3's ``RolloutBuffer`` plus the noise of each transition; samples are :class:`NoiseRolloutBufferSamples`.
    Takes SB3's arguments plus ``noise_shape``, the shape of the noise of one transition ``(K, noise_dim)``.
    """

    samples_class = NoiseRolloutBufferSamples


class NoiseDictRolloutBuffer(_NoiseStorage, DictRolloutBuffer):  # type: ignore[misc]
    """
    SB3's ``DictRolloutBuffer`` plus the noise of each transition; samples are :class:`NoiseDictRolloutBufferSamples`.
    Takes SB3's arguments plus ``noise_shape``, the shape of the noise of one transition ``(K, noise_dim)``.
    """

    samples_class = NoiseDictRolloutBufferSamples
