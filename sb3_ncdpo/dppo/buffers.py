"""
Rollout buffers of DPPO: every transition keeps its whole denoising chain ``x_K, ..., x_1, x_0`` and the rollout-time
log-probability of each trained denoising step; minibatches are drawn over (environment step, denoising step) pairs.
"""

from collections.abc import Generator
from typing import Any, NamedTuple

import numpy as np
import torch as th
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer
from stable_baselines3.common.type_aliases import TensorDict


class DenoisingStepSamples(NamedTuple):
    """A minibatch of (environment step, denoising step) pairs of DPPO's denoising MDP."""

    observations: th.Tensor
    x_k: th.Tensor  # the step's input x_k
    x_prev: th.Tensor  # the step's output x_{k-1} (x_0: the executed, unclipped normalised action)
    steps: th.Tensor  # k, in 1..K'
    old_values: th.Tensor
    old_log_prob: th.Tensor  # the step's log-probability at rollout time
    advantages: th.Tensor  # the environment step's advantage
    returns: th.Tensor


class DictDenoisingStepSamples(NamedTuple):
    """:class:`DenoisingStepSamples` with ``Dict`` observations."""

    observations: TensorDict
    x_k: th.Tensor
    x_prev: th.Tensor
    steps: th.Tensor
    old_values: th.Tensor
    old_log_prob: th.Tensor
    advantages: th.Tensor
    returns: th.Tensor


class _ChainStorage:
    """
    Adds ``chains`` ``(n_steps, n_envs, K + 1, dim)`` and ``step_log_probs`` ``(n_steps, n_envs, K')`` to an SB3 rollout
    buffer (the pattern of sb3-contrib's ``MaskableRolloutBuffer``), and replaces ``get`` by minibatches of
    (environment step, denoising step) pairs, DPPO's unit of the PPO objective. Mixed in before ``RolloutBuffer`` /
    ``DictRolloutBuffer``.

    The chain of a transition stores ``x_k`` at index ``K - k`` (``x_K`` first, the executed unclipped action ``x_0``
    last); its step log-probabilities store step ``k`` (``k = K' .. 1``) at index ``K' - k``.

    Takes SB3's arguments (``buffer_size``, ``observation_space``, ``action_space``, ``device``, ``gae_lambda``,
    ``gamma``, ``n_envs``) and:

    :param n_denoising_steps: K, the length of the chain
    :param n_trained_steps: K', the number of trained (last) denoising steps, whose pairs the minibatches draw
    """

    chains: np.ndarray
    step_log_probs: np.ndarray
    samples_class: type[DenoisingStepSamples] | type[DictDenoisingStepSamples]
    # Provided by the SB3 buffer this class is mixed into.
    buffer_size: int
    n_envs: int
    action_dim: int
    pos: int
    full: bool
    generator_ready: bool
    observations: Any
    values: np.ndarray
    advantages: np.ndarray
    returns: np.ndarray
    to_torch: Any
    device: th.device

    def __init__(self, *args: Any, n_denoising_steps: int = 1, n_trained_steps: int = 1, **kwargs: Any) -> None:
        if not 1 <= n_trained_steps <= n_denoising_steps:
            raise ValueError(f"n_trained_steps must be in [1, n_denoising_steps={n_denoising_steps}], got {n_trained_steps}")
        self.n_denoising_steps = n_denoising_steps
        self.n_trained_steps = n_trained_steps
        super().__init__(*args, **kwargs)

    def reset(self) -> None:
        self.chains = np.zeros((self.buffer_size, self.n_envs, self.n_denoising_steps + 1, self.action_dim), np.float32)
        self.step_log_probs = np.zeros((self.buffer_size, self.n_envs, self.n_trained_steps), np.float32)
        super().reset()  # type: ignore[misc]

    def add(self, *args: Any, chains: th.Tensor, step_log_probs: th.Tensor, **kwargs: Any) -> None:
        """
        Add one step of every env with its denoising chain.

        :param chains: ``x_K, ..., x_0`` of every env, shape ``(n_envs, K + 1, dim)``
        :param step_log_probs: Log-probability of each trained step (``k = K' .. 1``), shape ``(n_envs, K')``
        """
        self.chains[self.pos] = chains.detach().cpu().numpy().reshape(self.chains.shape[1:])
        self.step_log_probs[self.pos] = step_log_probs.detach().cpu().numpy().reshape(self.step_log_probs.shape[1:])
        super().add(*args, **kwargs)  # type: ignore[misc]

    @property
    def n_pairs(self) -> int:
        """Number of (environment step, trained denoising step) pairs in a full buffer."""
        return self.buffer_size * self.n_envs * self.n_trained_steps

    def get(self, batch_size: int | None = None) -> Generator[Any, None, None]:
        """
        Minibatches of (environment step, denoising step) pairs in random order: one pass over all pairs.

        :param batch_size: Pairs per minibatch (``None``: all of them at once); the last minibatch holds the remainder
        """
        assert self.full, "the rollout buffer must be full"
        assert not self.generator_ready, "the arrays were flattened by RolloutBuffer.get: use this buffer's get only"
        indices = np.random.permutation(self.n_pairs)
        batch_size = self.n_pairs if batch_size is None else batch_size
        for start in range(0, self.n_pairs, batch_size):
            yield self._get_pair_samples(indices[start : start + batch_size])

    def _get_pair_samples(self, pair_inds: np.ndarray) -> Any:
        step, env, i = np.unravel_index(pair_inds, (self.buffer_size, self.n_envs, self.n_trained_steps))
        k = self.n_trained_steps - i  # the denoising step of fine-tuned index i
        position = self.n_denoising_steps - k  # x_k's index in the chain; x_{k-1} follows it
        if isinstance(self.observations, dict):
            observations: Any = {key: self.to_torch(obs[step, env]) for key, obs in self.observations.items()}
        else:
            observations = self.to_torch(self.observations[step, env])
        return self.samples_class(
            observations=observations,
            x_k=self.to_torch(self.chains[step, env, position]),
            x_prev=self.to_torch(self.chains[step, env, position + 1]),
            steps=th.as_tensor(k, dtype=th.long, device=self.device),
            old_values=self.to_torch(self.values[step, env]),
            old_log_prob=self.to_torch(self.step_log_probs[step, env, i]),
            advantages=self.to_torch(self.advantages[step, env]),
            returns=self.to_torch(self.returns[step, env]),
        )


class ChainRolloutBuffer(_ChainStorage, RolloutBuffer):  # type: ignore[misc]
    """
    SB3's ``RolloutBuffer`` plus each transition's denoising chain and trained steps' log-probabilities; ``get`` yields
    :class:`DenoisingStepSamples` over (environment step, denoising step) pairs. Takes SB3's arguments plus
    ``n_denoising_steps`` (K) and ``n_trained_steps`` (K').
    """

    samples_class = DenoisingStepSamples


class ChainDictRolloutBuffer(_ChainStorage, DictRolloutBuffer):  # type: ignore[misc]
    """:class:`ChainRolloutBuffer` for ``Dict`` observations (samples: :class:`DictDenoisingStepSamples`)."""

    samples_class = DictDenoisingStepSamples
