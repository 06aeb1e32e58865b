"""Noise schedules of the diffusion chains: the betas of K denoising steps (float64)."""

import math

import torch as th


def cosine_betas(n_steps: int, s: float = 0.008, max_beta: float = 0.999) -> th.Tensor:
    """
    Cosine schedule of Nichol & Dhariwal (2021): ``alpha_bar(t) = f(t) / f(0)`` with
    ``f(t) = cos^2(((t / K + s) / (1 + s)) * pi / 2)``, betas clipped to ``max_beta``.

    :param n_steps: Number of denoising steps K
    :param s: Offset that keeps the first betas away from zero
    :param max_beta: Upper clip of the betas (the last cosine beta is 1 before clipping)
    :return: betas, float64 tensor of shape ``(K,)``
    """
    t = th.arange(n_steps + 1, dtype=th.float64) / n_steps
    f = th.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    betas = 1 - alpha_bar[1:] / alpha_bar[:-1]
    return betas.clamp(max=max_beta)


def linear_betas(n_steps: int) -> th.Tensor:
    """
    Linear schedule of Ho et al. (2020) rescaled to K steps as in Nichol & Dhariwal (2021): betas go linearly from
    ``1e-4 * 1000 / K`` to ``0.02 * 1000 / K`` (clipped to 0.999), so that ``x_K`` is close to pure noise for any K.

    :param n_steps: Number of denoising steps K
    :return: betas, float64 tensor of shape ``(K,)``
    """
    scale = 1000.0 / n_steps
    return th.linspace(1e-4 * scale, 0.02 * scale, n_steps, dtype=th.float64).clamp(max=0.999)


def make_betas(noise_schedule: str, n_steps: int) -> th.Tensor:
    """
    :param noise_schedule: ``"cosine"`` or ``"linear"``
    :param n_steps: Number of denoising steps K
    :return: betas, float64 tensor of shape ``(K,)``
    """
    if noise_schedule == "cosine":
        return cosine_betas(n_steps)
    if noise_schedule == "linear":
        return linear_betas(n_steps)
    raise ValueError(f"noise_schedule must be one of ('cosine', 'linear'), got {noise_schedule!r}")
