"""Sample types of the rollout buffers: SB3's fields plus the stored denoising noise (NCDPO) or chain (DPPO)."""

from typing import NamedTuple

import torch as th
from stable_baselines3.common.type_aliases import TensorDict


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
