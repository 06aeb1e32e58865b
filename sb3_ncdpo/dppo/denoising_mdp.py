"""
DPPO's denoising MDP (Ren et al., "Diffusion Policy Policy Optimization", arXiv 2409.00588), with no Stable-Baselines3
dependency: the per-step Gaussian log-probabilities, the denoising discount and the clipping schedule.

DPPO treats the K denoising steps of one environment step as K steps of an inner MDP: step ``k`` (``k = K .. 1``)
is the action ``x_{k-1} ~ N(mu_theta(x_k, k, s), std_k^2)`` taken in the state ``(s, x_k)``, the last one
(``k = 1``) produces the executed action ``x_0``. Only the last ``K'`` steps (``k = K' .. 1``) are fine-tuned; each
of them is one term of PPO's objective, with the advantage of its environment step discounted by
``gamma_denoising^(k - 1)`` and its own clip range. A *fine-tuned step index* ``i = K' - k`` runs from 0 (the first
fine-tuned step, the noisiest) to ``K' - 1`` (the final step).
"""

import math
from dataclasses import dataclass

import torch as th

LOG_PROB_REDUCTIONS = ("mean", "sum")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class DenoisingMDP:
    """
    DPPO's loss settings. Every field is validated on creation and the error names the field (the same name as
    :class:`~sb3_ncdpo.DPPO`'s argument).

    :param gamma_denoising: Discount of the denoising MDP: the advantage of step ``k`` is multiplied by
        ``gamma_denoising^(k - 1)`` (DPPO: 0.99), in (0, 1]
    :param min_logprob_std: Floor of the std of every step's Gaussian when its log-probability is computed
        (DPPO: 0.1), > 0
    :param log_prob_clamp: ``(low, high)`` clamp of the per-dimension log-probabilities (DPPO: (-5, 2)), or ``None``
    :param log_prob_reduction: ``"mean"`` (DPPO) or ``"sum"`` (SB3) over action dimensions
    :param clip_range_base: PPO clip range of the first fine-tuned step; ``None`` uses the final clip range at every
        step (DPPO's Gym settings). DPPO's schedule grows from it to the final clip range (DPPO's code default: 1e-3)
    :param clip_range_rate: Rate of the exponential growth of the clip range over the fine-tuned steps (DPPO: 3), > 0
    """

    gamma_denoising: float = 0.99
    min_logprob_std: float = 0.1
    log_prob_clamp: tuple[float, float] | None = (-5.0, 2.0)
    log_prob_reduction: str = "mean"
    clip_range_base: float | None = None
    clip_range_rate: float = 3.0

    def __post_init__(self) -> None:
        if not _is_number(self.gamma_denoising) or not 0.0 < self.gamma_denoising <= 1.0:
            raise ValueError(f"gamma_denoising must be a float in (0, 1], got {self.gamma_denoising!r}")
        if not _is_number(self.min_logprob_std) or self.min_logprob_std <= 0:
            raise ValueError(f"min_logprob_std must be a float > 0, got {self.min_logprob_std!r}")
        clamp = self.log_prob_clamp
        if clamp is not None and (
            not isinstance(clamp, (tuple, list)) or len(clamp) != 2 or not all(map(_is_number, clamp)) or clamp[0] >= clamp[1]
        ):
            raise ValueError(f"log_prob_clamp must be None or a pair (low, high) of floats with low < high, got {clamp!r}")
        if self.log_prob_reduction not in LOG_PROB_REDUCTIONS:
            raise ValueError(f"log_prob_reduction must be one of {LOG_PROB_REDUCTIONS}, got {self.log_prob_reduction!r}")
        if self.clip_range_base is not None and (not _is_number(self.clip_range_base) or self.clip_range_base <= 0):
            raise ValueError(
                f"clip_range_base must be a float > 0 or None (clip_range at every step), got {self.clip_range_base!r}"
            )
        if not _is_number(self.clip_range_rate) or self.clip_range_rate <= 0:
            raise ValueError(f"clip_range_rate must be a float > 0, got {self.clip_range_rate!r}")

    def reduce(self, per_dim: th.Tensor) -> th.Tensor:
        """
        :param per_dim: Per-dimension values, shape ``(..., dim)``
        :return: Their mean or sum over the last dimension (``log_prob_reduction``)
        """
        return per_dim.mean(dim=-1) if self.log_prob_reduction == "mean" else per_dim.sum(dim=-1)

    def log_prob(self, x_prev: th.Tensor, mean: th.Tensor, std: th.Tensor) -> th.Tensor:
        """
        Log-probability of one denoising step, ``log N(x_{k-1}; mu, max(std, min_logprob_std)^2)``, clamped per
        dimension and reduced over the action dimensions.

        :param x_prev: The step's output ``x_{k-1}``, shape ``(batch, dim)``
        :param mean: ``mu_theta(x_k, k, s)``, shape ``(batch, dim)``
        :param std: The std the step sampled with, broadcastable to ``(batch, dim)``
        :return: Shape ``(batch,)``
        """
        std = std.clamp(min=self.min_logprob_std)
        per_dim = -((x_prev - mean) ** 2) / (2 * std**2) - std.log() - 0.5 * math.log(2 * math.pi)
        if self.log_prob_clamp is not None:
            per_dim = per_dim.clamp(*self.log_prob_clamp)
        return self.reduce(per_dim)

    def entropy(self, std: th.Tensor) -> th.Tensor:
        """
        :param std: The steps' stds, shape ``(batch, dim)``
        :return: Entropy of each step's Gaussian (with the log-probability floor), reduced like the log-probability
        """
        return self.reduce(0.5 + 0.5 * math.log(2 * math.pi) + std.clamp(min=self.min_logprob_std).log())

    def discount(self, steps: th.Tensor) -> th.Tensor:
        """
        :param steps: Denoising steps ``k`` (``1 .. K'``), shape ``(batch,)``
        :return: ``gamma_denoising^(k - 1)``: 1 for the final step, smaller for the earlier (noisier) ones
        """
        return th.pow(self.gamma_denoising, (steps - 1).to(th.float32))

    def clip_ranges(self, steps: th.Tensor, clip_range: float, n_finetuned_steps: int) -> th.Tensor:
        """
        DPPO's clipping schedule: from ``clip_range_base`` at the first fine-tuned step (``k = K'``) to ``clip_range``
        at the final step (``k = 1``), exponentially with rate ``clip_range_rate``:
        ``base + (clip_range - base) * (exp(rate * t) - 1) / (exp(rate) - 1)`` with ``t = (K' - k) / (K' - 1)``.

        :param steps: Denoising steps ``k`` (``1 .. K'``), shape ``(batch,)``
        :param clip_range: Clip range of the final step
        :param n_finetuned_steps: ``K'``
        :return: The clip range of each step, shape ``(batch,)``
        """
        if self.clip_range_base is None or n_finetuned_steps == 1:
            return th.full(steps.shape, clip_range, dtype=th.float32, device=steps.device)
        t = (n_finetuned_steps - steps).to(th.float32) / (n_finetuned_steps - 1)
        growth = th.expm1(self.clip_range_rate * t) / math.expm1(self.clip_range_rate)
        return self.clip_range_base + (clip_range - self.clip_range_base) * growth
