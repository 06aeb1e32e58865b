"""
The chain interface: what a policy, behaviour cloning and DPPO need from a denoising chain, with no Stable-Baselines3
or gymnasium dependency, and the registry that maps the policy's ``sampler`` setting to a chain class.

Conventions used throughout:

* Denoising steps are numbered ``k = K, K-1, ..., 1``. Step ``k`` maps ``x_k`` to ``x_{k-1}`` and ``x_0`` is the
  clean action. Arrays indexed by step store step ``k`` at position ``k - 1``.
* The network's *prediction* at step ``k`` (``eps_model(x_k, k)``) is whatever the chain's steps are written in: the
  noise or the clean action for the diffusion chains (``prediction_type``).
* The *stored noise* of one transition is a tensor of shape ``(K, dim)``: row 0 is the initial sample ``x_K`` and row
  ``i >= 1`` is the normal draw ``z`` of the ``i``-th denoising step (step ``k = K - i + 1``), i.e.
  ``(x_K, z_K, ..., z_2)``. The last step (``k = 1``) draws no noise here: its output is the mean of the final
  Gaussian (or categorical) that the policy samples from.

Given the stored noise, :meth:`DenoisingChain.final_mean` is a deterministic, differentiable function of the network
parameters: this is what lets NCDPO compute an exact conditional log-likelihood and back-propagate through every
denoising step.

A new chain is a subclass of :class:`DenoisingChain` (in a file of its own) and one call to :func:`register_chain`
under a new ``sampler`` name; the policy, behaviour cloning and DPPO then use it through this interface only.
"""

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch as th
from torch.utils.checkpoint import checkpoint as torch_checkpoint

#: ``eps_model(x_k, k)``: the network's prediction at step ``k``; the conditioning is captured by the callable.
EpsModel = Callable[[th.Tensor, int], th.Tensor]
#: ``predict(x_noisy, steps)``: the network's prediction for a batch of noisy samples at mixed steps ``(batch,)``
#: (the conditioning captured by the callable), for the behaviour-cloning loss.
BatchPredictor = Callable[[th.Tensor, th.Tensor], th.Tensor]
#: ``hook(k, grad)``: called during backward with the gradient of the loss with respect to the prediction at step ``k``.
EpsGradHook = Callable[[int, th.Tensor], None]

_CHAINS: dict[str, type["DenoisingChain"]] = {}


def register_chain(sampler: str, chain_class: type["DenoisingChain"]) -> None:
    """
    Make ``chain_class`` the chain of the policy setting ``sampler=<sampler>``.

    :param sampler: The name (a new one: registered names cannot be redefined)
    :param chain_class: A subclass of :class:`DenoisingChain`
    :raises ValueError: if the name is taken or the class is not a chain
    """
    if not (isinstance(chain_class, type) and issubclass(chain_class, DenoisingChain)):
        raise ValueError(f"chain_class must be a subclass of DenoisingChain, got {chain_class!r}")
    if sampler in _CHAINS and _CHAINS[sampler] is not chain_class:
        raise ValueError(f"sampler {sampler!r} is already registered (to {_CHAINS[sampler].__name__})")
    _CHAINS[sampler] = chain_class


def registered_samplers() -> tuple[str, ...]:
    """:return: The ``sampler`` names that :func:`make_chain` knows"""
    return tuple(_CHAINS)


def chain_class(sampler: str) -> type["DenoisingChain"]:
    """
    :param sampler: A registered ``sampler`` name
    :return: Its chain class
    """
    if sampler not in _CHAINS:
        raise ValueError(f"sampler must be one of {registered_samplers()}, got {sampler!r}")
    return _CHAINS[sampler]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class ChainConfig:
    """
    Settings of a denoising chain (the policy's keyword arguments of the same names). Every field is validated on
    creation and the error names the field. A chain ignores the settings it has no use for (``ddim_eta`` outside DDIM).

    :param n_denoising_steps: Number of denoising steps K (int >= 1)
    :param sampler: The registered chain: ``"ddpm"`` (ancestral sampling with the posterior variance), ``"ddim"``, or
        a name given to :func:`register_chain`
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

    #: Allowed values of the string settings
    NOISE_SCHEDULES: ClassVar[tuple[str, ...]] = ("cosine", "linear")
    PREDICTION_TYPES: ClassVar[tuple[str, ...]] = ("epsilon", "sample")

    def __post_init__(self) -> None:
        if not _is_int(self.n_denoising_steps) or self.n_denoising_steps < 1:
            raise ValueError(f"n_denoising_steps must be an int >= 1, got {self.n_denoising_steps!r}")
        if self.sampler not in _CHAINS:
            raise ValueError(f"sampler must be one of {registered_samplers()}, got {self.sampler!r}")
        if self.prediction_type not in self.PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {self.PREDICTION_TYPES}, got {self.prediction_type!r}")
        if self.noise_schedule not in self.NOISE_SCHEDULES:
            raise ValueError(f"noise_schedule must be one of {self.NOISE_SCHEDULES}, got {self.noise_schedule!r}")
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


class DenoisingChain(ABC):
    """
    A denoising chain ``x_K -> x_1 -> (final mean)`` conditioned on pre-sampled noise: the interface that the policy,
    behaviour cloning and DPPO use. A subclass gives each step's mean and noise std, and its training loss; running
    the chain, its noise and its recorded trajectory follow from those.

    :param config: Chain settings (validated)
    """

    #: Settings that fine-tuning may change from the pre-trained policy's: they leave what the pre-trained weights
    #: compute unchanged (clips and floors, the sampler).
    finetune_overridable: ClassVar[frozenset[str]] = frozenset(
        {"min_step_std", "noise_clip", "x0_clip", "x0_clip_final", "sampler", "ddim_eta"}
    )

    def __init__(self, config: ChainConfig) -> None:
        self.config = config

    @property
    def n_steps(self) -> int:
        """Number of denoising steps K."""
        return self.config.n_denoising_steps

    def config_kwargs(self) -> dict[str, Any]:
        """:return: The settings to save with a policy, named as its keyword arguments (rebuild with :func:`make_chain`)"""
        return asdict(self.config)

    @abstractmethod
    def step_mean(self, x_k: th.Tensor, prediction: th.Tensor, k: int) -> th.Tensor:
        """
        :param x_k: The step's input
        :param prediction: The network's prediction at step ``k``
        :param k: Denoising step in ``1..K``
        :return: The mean ``mu_theta(x_k, k)`` of ``x_{k-1}`` (differentiable)
        """

    @abstractmethod
    def noise_std(self, k: int) -> float:
        """
        :param k: Denoising step in ``1..K``
        :return: The std of the noise that step ``k`` injects (0 at ``k = 1``: the final step's output is the mean)
        """

    @abstractmethod
    def training_loss(self, predict: BatchPredictor, targets: th.Tensor, generator: th.Generator | None = None) -> th.Tensor:
        """
        The chain's behaviour-cloning loss on a batch of demonstrated targets.

        :param predict: The network at mixed steps (conditioning captured)
        :param targets: Clean samples (actions in the policy's space), ``(n, dim)``
        :param generator: Random generator of the loss's draws (the global one by default)
        :return: The loss (a scalar)
        """

    def noise_shape(self, dim: int) -> tuple[int, int]:
        """
        :param dim: Size of the denoised vector
        :return: Shape of the stored noise of one transition, ``(K, dim)``
        """
        return (self.n_steps, dim)

    def sample_noise(
        self,
        batch_size: int,
        dim: int,
        device: th.device | str = "cpu",
        dtype: th.dtype = th.float32,
        generator: th.Generator | None = None,
    ) -> th.Tensor:
        """
        Draw the noise ``(x_K, z_K, ..., z_2)`` of a batch of transitions, clipped to ``noise_clip`` if set.

        :param batch_size: Number of transitions
        :param dim: Size of the denoised vector
        :param device: Torch device
        :param dtype: Torch dtype
        :param generator: Optional random generator (the global one by default)
        :return: Noise of shape ``(batch_size, *noise_shape(dim))``
        """
        noise = th.randn((batch_size, *self.noise_shape(dim)), device=device, dtype=dtype, generator=generator)
        if self.config.noise_clip is not None:
            noise = noise.clamp(-self.config.noise_clip, self.config.noise_clip)
        return noise

    def final_mean(
        self,
        eps_model: EpsModel,
        noise: th.Tensor,
        eps_grad_hook: EpsGradHook | None = None,
        checkpoint: bool = False,
    ) -> th.Tensor:
        """
        Run the chain ``x_K -> x_1`` with the given noise and return ``mu_theta(x_1, 1)``, the mean of the final step.
        Differentiable with respect to the network parameters and to ``noise``.

        :param eps_model: ``eps_model(x_k, k)``: the network's prediction at step ``k`` (conditioning captured by
            the callable)
        :param noise: Stored noise of shape ``(batch, K, dim)`` (see the module docstring for its layout)
        :param eps_grad_hook: If given, called during backward as ``eps_grad_hook(k, grad)`` with the gradient of the
            loss with respect to the network's prediction at step ``k``: shows how much gradient reaches each step
        :param checkpoint: With gradient, keep no activation of the network between the forward and the backward pass:
            each step's prediction is recomputed during backward (PyTorch's activation checkpointing), so the memory of
            the chain's graph grows with K only by the steps' small inputs and outputs; same gradients, one more
            forward pass of the network in time
        :return: Mean of the final step, shape ``(batch, dim)``
        """
        if noise.ndim != 3 or noise.shape[1] != self.n_steps:
            raise ValueError(f"noise must have shape (batch, {self.n_steps}, dim), got {tuple(noise.shape)}")
        predict = eps_model
        if checkpoint and th.is_grad_enabled():
            predict = functools.partial(torch_checkpoint, eps_model, use_reentrant=False)
        # One unbind rather than an indexing (slice + select) per step: fewer operations in the traced chain.
        noises = noise.unbind(1)
        x = noises[0]
        for i, k in enumerate(range(self.n_steps, 0, -1)):
            eps = predict(x, k)
            if eps_grad_hook is not None and eps.requires_grad:
                eps.register_hook(lambda grad, k=k: eps_grad_hook(k, grad))  # type: ignore[misc]
            mean = self.step_mean(x, eps, k)
            if k == 1:
                return mean
            x = th.add(mean, noises[i + 1], alpha=self.noise_std(k))
        raise AssertionError("unreachable: the chain has at least one step")

    def record(self, eps_model: EpsModel, noise: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """
        Run the chain as :meth:`final_mean` does and keep every step's input and mean (DPPO's rollouts).

        :param eps_model: ``eps_model(x_k, k)``, the network's prediction at step ``k``
        :param noise: Stored noise, shape ``(batch, K, dim)``
        :return: ``(inputs, means)``, each ``(batch, K, dim)``: ``x_k`` and ``mu(x_k, k)`` of step ``k`` at index
            ``K - k`` (``means[:, -1]`` is the mean of the final step)
        """
        inputs: list[th.Tensor] = []
        means: list[th.Tensor] = []

        def recording_eps_model(x: th.Tensor, k: int) -> th.Tensor:
            # final_mean calls eps_model(x_k, k) for k = K .. 1 in that order: its inputs are the chain
            prediction = eps_model(x, k)
            inputs.append(x)
            means.append(self.step_mean(x, prediction, k))
            return prediction

        self.final_mean(recording_eps_model, noise)
        return th.stack(inputs, dim=1), th.stack(means, dim=1)

    def step_stds(self, final_std: th.Tensor) -> th.Tensor:
        """
        :param final_std: The std of the final step per dimension, shape ``(dim,)`` (the policy's)
        :return: The std each step samples with, shape ``(K, dim)``, step ``k`` at row ``k - 1``: ``final_std`` for
            ``k = 1``, :meth:`noise_std` for ``k >= 2``
        """
        earlier = th.tensor(
            [self.noise_std(k) for k in range(2, self.n_steps + 1)], dtype=final_std.dtype, device=final_std.device
        )
        return th.cat([final_std[None], earlier[:, None].expand(-1, final_std.shape[0])])


def make_chain(config: ChainConfig) -> DenoisingChain:
    """
    :param config: Chain settings
    :return: The chain registered under ``config.sampler``
    """
    return chain_class(config.sampler)(config)


__all__ = [
    "BatchPredictor",
    "ChainConfig",
    "DenoisingChain",
    "EpsGradHook",
    "EpsModel",
    "chain_class",
    "make_chain",
    "register_chain",
    "registered_samplers",
]
