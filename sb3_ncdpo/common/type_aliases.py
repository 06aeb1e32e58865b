"""Sample types of the noise rollout buffers: SB3's fields plus the stored denoising noise."""

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
