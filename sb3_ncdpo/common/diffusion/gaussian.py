"""
The diffusion chains: DDPM (Ho et al., 2020) and DDIM (Song et al., 2021) in one affine step form, registered as the
policy's ``sampler="ddpm"`` and ``"ddim"``. No Stable-Baselines3 dependency.

The network predicts either the noise (``prediction_type="epsilon"``): ``eps_theta(x_k, k, s)``, or the clean action
itself (``prediction_type="sample"``): ``x0_theta(x_k, k, s)``. Both give a predicted clean action ``x0_hat`` from
which the sampler's step is taken; ``alpha_bar_0 = 1``.
"""

from abc import abstractmethod
from typing import NamedTuple

import torch as th
from torch.nn import functional as F

from sb3_ncdpo.common.diffusion.chain import BatchPredictor, ChainConfig, DenoisingChain, register_chain
from sb3_ncdpo.common.diffusion.schedules import make_betas


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


class DiffusionChain(DenoisingChain):
    """
    The unrolled diffusion chain with a noise schedule, conditioned on pre-sampled noise: what DDPM and DDIM share.
    A subclass gives the sampler's coefficients (:meth:`_sampler_coefficients`, :meth:`_affine`).

    The per-step coefficients are computed once in float64 and kept as Python floats: the chain then runs on any
    device and dtype without tensors to move, and each step is a handful of fused scalar-tensor operations.

    :param config: Chain settings (validated)
    """

    def __init__(self, config: ChainConfig) -> None:
        super().__init__(config)
        n_steps = config.n_denoising_steps
        self.betas = make_betas(config.noise_schedule, n_steps)
        alphas = 1.0 - self.betas
        self.alpha_bars = th.cumprod(alphas, dim=0)
        self.alpha_bars_prev = th.cat([th.ones(1, dtype=th.float64), self.alpha_bars[:-1]])
        abar, abar_prev = self.alpha_bars, self.alpha_bars_prev

        self.x0_coef, self.xk_coef, self.eps_coef, self.step_std = self._sampler_coefficients(alphas, abar, abar_prev)

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
        g, h = self._affine(x0_coef, xk_coef, eps_coef, sqrt_abar, sqrt_one_minus_abar)
        clip = None if not self._clips(k) else abs(g) * self.config.x0_clip  # type: ignore[operator]
        if self.config.prediction_type == "epsilon":
            prediction_scale, input_scale = -g * sqrt_one_minus_abar / sqrt_abar, g / sqrt_abar
        else:
            prediction_scale, input_scale = g, 0.0
        return StepCoefficients(prediction_scale, input_scale, clip, h, self._noise_std[i])

    @abstractmethod
    def _sampler_coefficients(
        self, alphas: th.Tensor, abar: th.Tensor, abar_prev: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor, th.Tensor]:
        """
        :param alphas: ``1 - beta_k``, float64, shape ``(K,)``
        :param abar: ``alpha_bar_k``
        :param abar_prev: ``alpha_bar_{k-1}``
        :return: ``(x0_coef, xk_coef, eps_coef, step_std)``: the step's mean is ``x0_coef * x0 + xk_coef * x_k +
            eps_coef * eps`` with ``eps`` the noise direction consistent with ``x0`` and ``x_k``; ``step_std`` the
            sampler's std (before the ``min_step_std`` floor)
        """

    @abstractmethod
    def _affine(
        self, x0_coef: float, xk_coef: float, eps_coef: float, sqrt_abar: float, sqrt_one_minus_abar: float
    ) -> tuple[float, float]:
        """:return: ``(g, h)`` of the step's mean ``g * x0 + h * x_k`` (see :class:`StepCoefficients`)"""

    def step_coefficients(self, k: int) -> StepCoefficients:
        """
        :param k: Denoising step in ``1..K``
        :return: The step's coefficients in the affine form of :class:`StepCoefficients`
        """
        return self._steps[k - 1]

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

    def noise_std(self, k: int) -> float:
        """
        :param k: Denoising step, in ``1..K``
        :return: The std of the noise injected at step ``k`` (after the ``min_step_std`` floor; 0 at ``k = 1``)
        """
        return self._noise_std[k - 1]

    def training_loss(self, predict: BatchPredictor, targets: th.Tensor, generator: th.Generator | None = None) -> th.Tensor:
        """
        The denoising loss (Ho et al., 2020): noise the targets to a uniformly random step ``k`` with the forward process
        ``x_k = sqrt(abar_k) x_0 + sqrt(1 - abar_k) eps`` and regress the prediction on ``eps`` (or on ``x_0`` with
        ``prediction_type="sample"``), mean squared error.

        :param predict: The network at mixed steps (conditioning captured)
        :param targets: Clean actions in the policy's space, ``(n, dim)``
        :param generator: Random generator of the steps and noise (the global one by default)
        :return: The loss (a scalar)
        """
        n = targets.shape[0]
        steps = th.randint(1, self.n_steps + 1, (n,), generator=generator).to(targets.device)
        noise = th.randn(targets.shape, generator=generator).to(targets)
        alpha_bar = self.alpha_bars.to(targets)[steps - 1].unsqueeze(-1)
        noisy = alpha_bar.sqrt() * targets + (1 - alpha_bar).sqrt() * noise
        target = noise if self.config.prediction_type == "epsilon" else targets
        return F.mse_loss(predict(noisy, steps), target)


class DDPMChain(DiffusionChain):
    """Ancestral sampling with the posterior ``q(x_{k-1} | x_k, x_0)``: its mean and std (Ho et al., 2020)."""

    def _sampler_coefficients(
        self, alphas: th.Tensor, abar: th.Tensor, abar_prev: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor, th.Tensor]:
        # q(x_{k-1} | x_k, x_0): mean = x0_coef * x_0 + xk_coef * x_k
        x0_coef = th.sqrt(abar_prev) * self.betas / (1 - abar)
        xk_coef = th.sqrt(alphas) * (1 - abar_prev) / (1 - abar)
        step_std = th.sqrt(self.betas * (1 - abar_prev) / (1 - abar))
        return x0_coef, xk_coef, th.zeros_like(abar), step_std

    def _affine(
        self, x0_coef: float, xk_coef: float, eps_coef: float, sqrt_abar: float, sqrt_one_minus_abar: float
    ) -> tuple[float, float]:
        return x0_coef, xk_coef


class DDIMChain(DiffusionChain):
    """
    DDIM (Song et al., 2021): ``x_{k-1} = sqrt(abar_{k-1}) x_0 + sqrt(1 - abar_{k-1} - sigma^2) eps + sigma z`` with
    ``sigma = ddim_eta`` times the DDPM posterior std.
    """

    def _sampler_coefficients(
        self, alphas: th.Tensor, abar: th.Tensor, abar_prev: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor, th.Tensor]:
        step_std = self.config.ddim_eta * th.sqrt((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev))
        eps_coef = th.sqrt((1 - abar_prev - step_std**2).clamp(min=0.0))
        return th.sqrt(abar_prev), th.zeros_like(abar), eps_coef, step_std

    def _affine(
        self, x0_coef: float, xk_coef: float, eps_coef: float, sqrt_abar: float, sqrt_one_minus_abar: float
    ) -> tuple[float, float]:
        # the noise direction written from x0 and x_k: eps = (x_k - sqrt(abar) x0) / sqrt(1 - abar)
        return x0_coef - eps_coef * sqrt_abar / sqrt_one_minus_abar, eps_coef / sqrt_one_minus_abar


register_chain("ddpm", DDPMChain)
register_chain("ddim", DDIMChain)
