"""
The diffusion policy's settings: their defaults and the checks that validate them without building anything, so that
an algorithm can reject bad keyword arguments before it creates its environment.
"""

from dataclasses import fields
from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.preprocessing import get_action_dim

from sb3_ncdpo.common.diffusion import ChainConfig
from sb3_ncdpo.common.diffusion.denoiser import check_denoiser_sizes

CHAIN_DEFAULTS = ChainConfig()
#: Defaults of the policy that differ from the textbook chain's (ChainConfig's), chosen by measurement
#: (docs/benchmarks/defaults.md): the denoiser predicts the clean action, so that a fresh policy explores like SB3's
#: Gaussian policy, and its MLP is 128-128 (as good as 256-256 on HalfCheetah-v5 at 100k steps, and the update costs
#: ~30% less).
DEFAULT_PREDICTION_TYPE = "sample"
DEFAULT_DENOISER_SIZES = (128, 128)
DEFAULT_MIN_STD = 1e-3
#: Action spaces of a diffusion policy: a bounded Box (the chain denoises the action), Discrete and MultiDiscrete (the
#: chain denoises a vector of logits, one block per sub-space; the final step is a categorical over them).
SUPPORTED_ACTION_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete)


def check_action_space(action_space: spaces.Space) -> None:
    """
    :param action_space: An action space
    :raises ValueError: naming the space and the supported ones, if a diffusion policy cannot act in it
    """
    supported = "a Box with finite bounds, Discrete or MultiDiscrete"
    if not isinstance(action_space, SUPPORTED_ACTION_SPACES):
        raise ValueError(f"action_space must be {supported}, got {action_space}")
    if isinstance(action_space, spaces.Box) and not (
        np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))
    ):
        raise ValueError(f"action_space must be {supported} (Box bounds are mapped to [-1, 1]), got {action_space}")


def chain_dim(action_space: spaces.Space) -> int:
    """
    :param action_space: A supported action space
    :return: Size of the vector the denoising chain produces: the action size for a Box, the number of logits
        (``n``, or ``sum(nvec)``) for Discrete and MultiDiscrete
    """
    if isinstance(action_space, spaces.Discrete):
        return int(action_space.n)
    if isinstance(action_space, spaces.MultiDiscrete):
        return int(np.sum(action_space.nvec))
    return get_action_dim(action_space)


def check_std_settings(fixed_std: float | None, min_std: float) -> None:
    """
    :param fixed_std: Fixed std of the final step, or ``None`` for a learned one
    :param min_std: Floor of the final-step std
    :raises ValueError: if a std is not a positive number
    """
    if fixed_std is not None and (not isinstance(fixed_std, (int, float)) or not fixed_std > 0):
        raise ValueError(f"fixed_std must be a float > 0 (a fixed final-step std) or None (learned), got {fixed_std!r}")
    if not isinstance(min_std, (int, float)) or not min_std > 0:
        raise ValueError(f"min_std must be a float > 0, got {min_std!r}")


def check_policy_kwargs(policy_kwargs: dict[str, Any]) -> None:
    """
    Validate the diffusion-specific policy keyword arguments without building anything, so that an algorithm can
    reject them before it creates its environment.

    :param policy_kwargs: Keyword arguments for :class:`DiffusionActorCriticPolicy`
    :raises ValueError: naming the first invalid argument and its allowed values
    """
    if policy_kwargs.get("use_sde", False):
        raise ValueError("use_sde=True is not supported: a diffusion policy explores through its denoising noise")
    chain_kwargs = {f.name: policy_kwargs[f.name] for f in fields(ChainConfig) if f.name in policy_kwargs}
    if chain_kwargs.get("x0_clip_final", False) is None:  # the policy's default: decided by the action space
        del chain_kwargs["x0_clip_final"]
    ChainConfig(**chain_kwargs)
    check_denoiser_sizes(
        policy_kwargs.get("denoiser_hidden_sizes", DEFAULT_DENOISER_SIZES), policy_kwargs.get("residual", False)
    )
    check_std_settings(policy_kwargs.get("fixed_std"), policy_kwargs.get("min_std", DEFAULT_MIN_STD))
    if not isinstance(policy_kwargs.get("gradient_checkpointing", False), bool):
        raise ValueError(f"gradient_checkpointing must be a bool, got {policy_kwargs['gradient_checkpointing']!r}")
    n_denoising_steps = policy_kwargs.get("n_denoising_steps", CHAIN_DEFAULTS.n_denoising_steps)
    check_finetuned_steps(policy_kwargs.get("n_finetuned_steps"), n_denoising_steps)


def check_finetuned_steps(n_finetuned_steps: int | None, n_denoising_steps: int) -> None:
    """
    :param n_finetuned_steps: Number of trained (last) denoising steps, or ``None`` for all of them
    :param n_denoising_steps: Number of denoising steps K
    :raises ValueError: if it is not an int in ``1..K`` or ``None``
    """
    if n_finetuned_steps is not None and (
        not isinstance(n_finetuned_steps, int)
        or isinstance(n_finetuned_steps, bool)
        or not 1 <= n_finetuned_steps <= n_denoising_steps
    ):
        raise ValueError(
            f"n_finetuned_steps must be an int in [1, n_denoising_steps={n_denoising_steps}] or None (all steps), "
            f"got {n_finetuned_steps!r}"
        )
