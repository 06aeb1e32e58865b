"""
The diffusion policy's settings: their defaults and the checks that validate them without building anything, so that
an algorithm can reject bad keyword arguments before it creates its environment.
"""

from dataclasses import fields
from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.preprocessing import get_action_dim, is_image_space

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
#: How the PPO ratio of an action chunk is computed: from the log-probability of the ``n_action_steps`` actions that are
#: executed (DPPO's choice), or of the whole denoised chunk of ``horizon`` actions
CHUNK_LOG_PROBS = ("executed", "horizon")
DEFAULT_CHUNK_LOG_PROB = "executed"


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
    scale = policy_kwargs.get("chain_noise_scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0.0 <= scale <= 1.0:
        raise ValueError(f"chain_noise_scale must be a float in [0, 1], got {scale!r}")
    draws = policy_kwargs.get("deterministic_draws", 0)
    if not (isinstance(draws, int) and not isinstance(draws, bool) and draws >= 0):
        raise ValueError(
            f"deterministic_draws must be an int >= 0 (0: the chain from zero noise; n: the mean of n chain samples), "
            f"got {draws!r}"
        )
    if not isinstance(policy_kwargs.get("gradient_checkpointing", False), bool):
        raise ValueError(f"gradient_checkpointing must be a bool, got {policy_kwargs['gradient_checkpointing']!r}")
    n_denoising_steps = policy_kwargs.get("n_denoising_steps", CHAIN_DEFAULTS.n_denoising_steps)
    check_finetuned_steps(policy_kwargs.get("n_finetuned_steps"), n_denoising_steps)
    check_chunk_settings(
        policy_kwargs.get("horizon", 1),
        policy_kwargs.get("n_action_steps", 1),
        policy_kwargs.get("n_obs_steps", 1),
        policy_kwargs.get("chunk_log_prob", DEFAULT_CHUNK_LOG_PROB),
    )


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_chunk_settings(horizon: int, n_action_steps: int, n_obs_steps: int, chunk_log_prob: str) -> None:
    """
    :param horizon: Length Tp of the denoised action chunk
    :param n_action_steps: Actions Ta of a chunk executed per decision (``<= horizon``)
    :param n_obs_steps: Observations To the policy is conditioned on
    :param chunk_log_prob: One of :data:`CHUNK_LOG_PROBS`
    :raises ValueError: naming the invalid setting (or combination) and the allowed values
    """
    for name, value in (("horizon", horizon), ("n_action_steps", n_action_steps), ("n_obs_steps", n_obs_steps)):
        if not _is_positive_int(value):
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if n_action_steps > horizon:
        raise ValueError(
            f"n_action_steps must be <= horizon (the executed actions are the first n_action_steps of the denoised chunk "
            f"of horizon actions), got n_action_steps={n_action_steps} and horizon={horizon}"
        )
    if chunk_log_prob not in CHUNK_LOG_PROBS:
        raise ValueError(f"chunk_log_prob must be one of {CHUNK_LOG_PROBS}, got {chunk_log_prob!r}")


def check_chunk_spaces(observation_space: spaces.Space, action_space: spaces.Space, horizon: int, n_obs_steps: int) -> None:
    """
    :param observation_space: The observation space
    :param action_space: A supported action space
    :param horizon: Length of the denoised action chunk
    :param n_obs_steps: Length of the observation history
    :raises ValueError: if the chunk cannot be denoised in this action space (chunks of discrete actions are not
        supported) or the history cannot be stacked (images and ``Dict`` observations are not supported)
    """
    if horizon > 1 and not isinstance(action_space, spaces.Box):
        raise ValueError(f"horizon > 1 (action chunks) needs a Box action space, got horizon={horizon} and {action_space}")
    if n_obs_steps > 1 and (not isinstance(observation_space, spaces.Box) or is_image_space(observation_space)):
        raise ValueError(
            f"n_obs_steps > 1 (an observation history) needs a Box observation space that is not an image, got "
            f"n_obs_steps={n_obs_steps} and {observation_space}"
        )


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
