"""
Diffusion maths for NCDPO, with no Stable-Baselines3 dependency.

Conventions used throughout:

* Denoising steps are numbered ``k = K, K-1, ..., 1``. Step ``k`` maps ``x_k`` to ``x_{k-1}`` and ``x_0`` is the
  clean action. Arrays indexed by step store step ``k`` at position ``k - 1``; ``alpha_bar_0 = 1``.
* The network predicts either the noise (``prediction_type="epsilon"``, Ho et al. 2020): ``eps_theta(x_k, k, s)``,
  or the clean action itself (``prediction_type="sample"``): ``x0_theta(x_k, k, s)``. Both give a predicted clean
  action ``x0_hat`` from which the sampler's step is taken; "the prediction" below means whichever of the two.
* The *stored noise* of one transition is a tensor of shape ``(K, action_dim)``: row 0 is the initial sample
  ``x_K`` and row ``i >= 1`` is the normal draw ``z`` of the ``i``-th denoising step (step ``k = K - i + 1``), i.e.
  ``(x_K, z_K, ..., z_2)``. The last step (``k = 1``) draws no noise here: its output is the mean of the final
  Gaussian (or categorical) that the policy samples from.

Given the stored noise, :meth:`NoiseConditionedChain.final_mean` is a deterministic, differentiable function of the
network parameters: this is what lets NCDPO compute an exact conditional log-likelihood and back-propagate through
every denoising step.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch as th

SAMPLERS = ("ddpm", "ddim")
NOISE_SCHEDULES = ("cosine", "linear")
PREDICTION_TYPES = ("epsilon", "sample")

#: ``eps_model(x_k, k)``: the network's prediction at step ``k`` (the noise, or the clean action with
#: ``prediction_type="sample"``); the conditioning is captured by the callable.
EpsModel = Callable[[th.Tensor, int], th.Tensor]


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
    raise ValueError(f"noise_schedule must be one of {NOISE_SCHEDULES}, got {noise_schedule!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class ChainConfig:
    """
    Settings of the noise-conditioned denoising chain. Every field is validated on creation and the error names the
    field (the same name as the policy keyword argument).

    :param n_denoising_steps: Number of denoising steps K (int >= 1)
    :param sampler: ``"ddpm"`` (ancestral sampling with the posterior variance) or ``"ddim"``
    :param ddim_eta: DDIM stochasticity in [0, 1]: 0 is the deterministic DDIM, 1 gives the DDPM posterior std
    :param noise_schedule: ``"cosine"`` or ``"linear"``
    :param x0_clip: The predicted clean action of the steps ``k >= 2`` is clipped to ``[-x0_clip, x0_clip]``
        (``None``: no clipping)
    :param x0_clip_final: Also clip it at the final step ``k = 1``, whose output is the mean of the final
        distribution (DPPO's convention, the default). Without it the mean always receives gradient (a clipped mean
        gets none, wherever it is clipped for every noise), at the price of an action mean that can leave the bounds
    :param noise_clip: The sampled normal draws are clipped to ``[-noise_clip, noise_clip]`` (``None``: no clipping)
    :param min_step_std: Floor of the std of the intermediate steps ``k >= 2`` (0: no floor)
    :param prediction_type: What the network predicts: ``"epsilon"`` (the noise; ``x0_hat`` is derived from it, which
        divides by ``sqrt(alpha_bar_k)``) or ``"sample"`` (``x0_hat`` directly)
    """

    n_denoising_steps: int = 10
    sampler: str = "ddpm"
    ddim_eta: float = 0.0
    noise_schedule: str = "cosine"
    x0_clip: float | None = 1.0
    x0_clip_final: bool = True
    noise_clip: float | None = None
    min_step_std: float = 0.0
    prediction_type: str = "epsilon"

    def __post_init__(self) -> None:
        if not _is_int(self.n_denoising_steps) or self.n_denoising_steps < 1:
            raise ValueError(f"n_denoising_steps must be an int >= 1, got {self.n_denoising_steps!r}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {self.prediction_type!r}")
        if self.noise_schedule not in NOISE_SCHEDULES:
            raise ValueError(f"noise_schedule must be one of {NOISE_SCHEDULES}, got {self.noise_schedule!r}")
        if not isinstance(self.ddim_eta, (int, float)) or not 0.0 <= self.ddim_eta <= 1.0:
            raise ValueError(f"ddim_eta must be a float in [0, 1], got {self.ddim_eta!r}")
        if not isinstance(self.x0_clip_final, bool):
            raise ValueError(f"x0_clip_final must be a bool, got {self.x0_clip_final!r}")
        for name in ("x0_clip", "noise_clip"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or value <= 0):
                raise ValueError(f"{name} must be a float > 0 or None, got {value!r}")
        if not isinstance(self.min_step_std, (int, float)) or self.min_step_std < 0:
            raise ValueError(f"min_step_std must be a float >= 0, got {self.min_step_std!r}")


class StepCoefficients(NamedTuple):
    """
    One denoising step in affine form, the same for both samplers and both prediction types:
    ``mean = clamp(prediction_scale * prediction + input_scale * x_k, -clip, clip) + xk_scale * x_k`` (no clamp where
    ``clip`` is ``None``), then ``x_{k-1} = mean + noise_std * z_k`` (``noise_std = 0`` at ``k = 1``, whose mean is
    the action mean).

    Derivation: both samplers' means are ``g * x0 + h * x_k`` once the DDIM noise direction is written from ``x0``
    and ``x_k`` (DDPM: ``g = x0_coef``, ``h = xk_coef``; DDIM: ``g = x0_coef - eps_coef sqrt(abar) / sqrt(1 - abar)``,
    ``h = eps_coef / sqrt(1 - abar)``), ``g * clamp(x0, -c, c) = clamp(g * x0, -|g| c, |g| c)``, and ``g * x0`` is
    ``(g / sqrt(abar)) (x_k - sqrt(1 - abar) eps)`` with epsilon-prediction or ``g * prediction`` with
    sample-prediction. A step is then at most four tensor operations, which is what it costs on small batches
    (per-operation overhead dominates there), and ``prediction_scale`` can be folded into the network's output layer.
    """

    prediction_scale: float
    input_scale: float
    clip: float | None
    xk_scale: float
    noise_std: float


class NoiseConditionedChain:
    """
    The unrolled DDPM/DDIM denoising chain, conditioned on pre-sampled noise.

    The per-step coefficients are computed once in float64 and kept as Python floats: the chain then runs on any
    device and dtype without tensors to move, and each step is a handful of fused scalar-tensor operations.

    :param config: Chain settings (validated)
    """

    def __init__(self, config: ChainConfig) -> None:
        self.config = config
        n_steps = config.n_denoising_steps
        self.betas = make_betas(config.noise_schedule, n_steps)
        alphas = 1.0 - self.betas
        self.alpha_bars = th.cumprod(alphas, dim=0)
        self.alpha_bars_prev = th.cat([th.ones(1, dtype=th.float64), self.alpha_bars[:-1]])
        abar, abar_prev = self.alpha_bars, self.alpha_bars_prev

        if config.sampler == "ddpm":
            # q(x_{k-1} | x_k, x_0): mean = x0_coef * x_0 + xk_coef * x_k
            self.x0_coef = th.sqrt(abar_prev) * self.betas / (1 - abar)
            self.xk_coef = th.sqrt(alphas) * (1 - abar_prev) / (1 - abar)
            self.eps_coef = th.zeros_like(abar)
            self.step_std = th.sqrt(self.betas * (1 - abar_prev) / (1 - abar))
        else:
            # DDIM (Song et al., 2021): x_{k-1} = sqrt(abar_{k-1}) x_0 + sqrt(1 - abar_{k-1} - sigma^2) eps + sigma z
            self.step_std = config.ddim_eta * th.sqrt((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev))
            self.x0_coef = th.sqrt(abar_prev)
            self.xk_coef = th.zeros_like(abar)
            self.eps_coef = th.sqrt((1 - abar_prev - self.step_std**2).clamp(min=0.0))

        self._sqrt_abar = th.sqrt(abar).tolist()
        self._sqrt_one_minus_abar = th.sqrt(1 - abar).tolist()
        # Noise actually injected at steps k >= 2 (floored); step 1 injects none: its output is the final mean.
        self._noise_std = [max(std, config.min_step_std) for std in self.step_std.tolist()]
        self._noise_std[0] = 0.0
        self._steps = [self._step_coefficients(k) for k in range(1, n_steps + 1)]

    def _step_coefficients(self, k: int) -> StepCoefficients:
        i = k - 1
        sqrt_abar, sqrt_one_minus_abar = self._sqrt_abar[i], self._sqrt_one_minus_abar[i]
        x0_coef, xk_coef, eps_coef = (float(c[i]) for c in (self.x0_coef, self.xk_coef, self.eps_coef))
        if self.config.sampler == "ddpm":
            g, h = x0_coef, xk_coef
        else:
            g, h = x0_coef - eps_coef * sqrt_abar / sqrt_one_minus_abar, eps_coef / sqrt_one_minus_abar
        clip = None if not self._clips(k) else abs(g) * self.config.x0_clip  # type: ignore[operator]
        if self.config.prediction_type == "epsilon":
            prediction_scale, input_scale = -g * sqrt_one_minus_abar / sqrt_abar, g / sqrt_abar
        else:
            prediction_scale, input_scale = g, 0.0
        return StepCoefficients(prediction_scale, input_scale, clip, h, self._noise_std[i])

    def step_coefficients(self, k: int) -> StepCoefficients:
        """
        :param k: Denoising step in ``1..K``
        :return: The step's coefficients in the affine form of :class:`StepCoefficients`
        """
        return self._steps[k - 1]

    @property
    def n_steps(self) -> int:
        """Number of denoising steps K."""
        return self.config.n_denoising_steps

    def noise_std(self, k: int) -> float:
        """
        :param k: Denoising step, in ``2..K``
        :return: The std of the noise injected at step ``k`` (after the ``min_step_std`` floor)
        """
        return self._noise_std[k - 1]

    def noise_shape(self, action_dim: int) -> tuple[int, int]:
        """
        :param action_dim: Size of the denoised vector
        :return: Shape of the stored noise of one transition, ``(K, action_dim)``
        """
        return (self.n_steps, action_dim)

    def sample_noise(
        self,
        batch_size: int,
        action_dim: int,
        device: th.device | str = "cpu",
        dtype: th.dtype = th.float32,
        generator: th.Generator | None = None,
    ) -> th.Tensor:
        """
        Draw the noise ``(x_K, z_K, ..., z_2)`` of a batch of transitions, clipped to ``noise_clip`` if set.

        :param batch_size: Number of transitions
        :param action_dim: Size of the denoised vector
        :param device: Torch device
        :param dtype: Torch dtype
        :param generator: Optional random generator (the global one by default)
        :return: Noise of shape ``(batch_size, K, action_dim)``
        """
        noise = th.randn((batch_size, *self.noise_shape(action_dim)), device=device, dtype=dtype, generator=generator)
        if self.config.noise_clip is not None:
            noise = noise.clamp(-self.config.noise_clip, self.config.noise_clip)
        return noise

    def predict_x0(self, x_k: th.Tensor, prediction: th.Tensor, k: int) -> th.Tensor:
        """
        :param x_k: Noisy sample at step ``k``
        :param prediction: The network's prediction (the noise, or the clean sample with ``prediction_type="sample"``)
        :param k: Denoising step in ``1..K``
        :return: The predicted clean sample, clipped to ``x0_clip`` if set (at ``k = 1`` only with ``x0_clip_final``)
        """
        if self.config.prediction_type == "epsilon":
            x0 = (x_k - self._sqrt_one_minus_abar[k - 1] * prediction) / self._sqrt_abar[k - 1]
        else:
            x0 = prediction
        clip = self.config.x0_clip
        if clip is not None and self._clips(k):
            x0 = x0.clamp(-clip, clip)
        return x0

    def _clips(self, k: int) -> bool:
        return self.config.x0_clip is not None and (k > 1 or self.config.x0_clip_final)

    def step_mean(self, x_k: th.Tensor, prediction: th.Tensor, k: int) -> th.Tensor:
        """
        Mean of ``x_{k-1}`` given ``x_k`` and the network's prediction (DDPM posterior mean or DDIM update), with the
        predicted clean action clipped as :meth:`predict_x0` does (computed in the affine form of
        :class:`StepCoefficients`).

        :param x_k: Noisy sample at step ``k``
        :param prediction: The network's prediction (the noise, or the clean sample with ``prediction_type="sample"``)
        :param k: Denoising step in ``1..K``
        :return: The mean ``mu_theta(x_k, k)``
        """
        step = self._steps[k - 1]
        scaled_x0 = prediction * step.prediction_scale
        if step.input_scale:
            scaled_x0 = th.add(scaled_x0, x_k, alpha=step.input_scale)
        if step.clip is not None:
            scaled_x0 = scaled_x0.clamp(-step.clip, step.clip)
        return th.add(scaled_x0, x_k, alpha=step.xk_scale)

    def final_mean(
        self,
        eps_model: EpsModel,
        noise: th.Tensor,
        eps_grad_hook: Callable[[int, th.Tensor], None] | None = None,
    ) -> th.Tensor:
        """
        Run the chain ``x_K -> x_1`` with the given noise and return ``mu_theta(x_1, 1)``, the mean of the final step.
        Differentiable with respect to the network parameters and to ``noise``.

        :param eps_model: ``eps_model(x_k, k)``: the network's prediction at step ``k`` (conditioning captured by
            the callable)
        :param noise: Stored noise of shape ``(batch, K, dim)`` (see the module docstring for its layout)
        :param eps_grad_hook: If given, called during backward as ``eps_grad_hook(k, grad)`` with the gradient of the
            loss with respect to the network's prediction at step ``k``: shows how much gradient reaches each step
        :return: Mean of the final step, shape ``(batch, dim)``
        """
        if noise.ndim != 3 or noise.shape[1] != self.n_steps:
            raise ValueError(f"noise must have shape (batch, {self.n_steps}, dim), got {tuple(noise.shape)}")
        # One unbind rather than an indexing (slice + select) per step: fewer operations in the traced chain.
        noises = noise.unbind(1)
        x = noises[0]
        for i, k in enumerate(range(self.n_steps, 0, -1)):
            eps = eps_model(x, k)
            if eps_grad_hook is not None and eps.requires_grad:
                eps.register_hook(lambda grad, k=k: eps_grad_hook(k, grad))  # type: ignore[misc]
            mean = self.step_mean(x, eps, k)
            if k == 1:
                return mean
            x = th.add(mean, noises[i + 1], alpha=self._noise_std[k - 1])
        raise AssertionError("unreachable: the chain has at least one step")
