"""Diffusion actor-critic policies: a denoising chain conditioned on stored noise as the actor, V(s) as the critic."""

import math
from collections.abc import Callable
from dataclasses import asdict, fields
from functools import partial
from typing import Any, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import (
    CategoricalDistribution,
    DiagGaussianDistribution,
    MultiCategoricalDistribution,
)
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.preprocessing import get_action_dim
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, CombinedExtractor, FlattenExtractor, NatureCNN
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from stable_baselines3.common.utils import get_device
from torch import nn

from sb3_ncdpo.common.denoiser import DenoiserMLP, check_denoiser_sizes
from sb3_ncdpo.common.diffusion import ChainConfig, NoiseConditionedChain

_DEFAULTS = ChainConfig()
SelfDiffusionPolicy = TypeVar("SelfDiffusionPolicy", bound="DiffusionActorCriticPolicy")
DEFAULT_MIN_STD = 1e-3
#: Action spaces of a diffusion policy: a bounded Box (the chain denoises the action), Discrete and MultiDiscrete (the
#: chain denoises a vector of logits, one block per sub-space; the final step is a categorical over them).
SUPPORTED_ACTION_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete)
FinalDistribution = DiagGaussianDistribution | CategoricalDistribution | MultiCategoricalDistribution


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
    check_denoiser_sizes(policy_kwargs.get("denoiser_hidden_sizes", (256, 256)), policy_kwargs.get("residual", False))
    check_std_settings(policy_kwargs.get("fixed_std"), policy_kwargs.get("min_std", DEFAULT_MIN_STD))


class DiffusionActorCriticPolicy(ActorCriticPolicy):
    """
    Actor-critic policy whose actor is a diffusion model, for NCDPO.

    An action is made by running ``K`` denoising steps from ``x_K ~ N(0, I)``; given the pre-sampled noise
    ``xi = (x_K, z_K, ..., z_2)`` the chain up to ``x_1`` is deterministic, and the last step is the Gaussian
    ``N(mu_theta(x_1, 1, s), std^2)``. Methods that sample return or accept that noise so the algorithm can store it
    and replay it: :meth:`forward_with_noise`, :meth:`evaluate_actions`, :meth:`get_distribution`.

    Box actions live in the normalised space ``[-1, 1]^d`` (the predicted clean action is clipped to it by default)
    and are mapped linearly to the ``Box`` bounds by ``predict`` (``unscale_action``). The value of an action stored
    in the rollout buffer is the unclipped normalised sample.

    Discrete and MultiDiscrete actions: the chain denoises a vector of logits (``n``, or ``sum(nvec)`` values, one
    block per sub-space) and the last step is SB3's categorical (multi-categorical) distribution with the chain's
    final mean as logits; the stored noise covers all K steps and the deterministic action is the argmax of the
    zero-noise logits. ``log_std_init``, ``fixed_std`` and ``min_std`` do not apply there (no final Gaussian).

    ``net_arch``, ``activation_fn``, ``ortho_init``, the features extractor and the optimizer mean what they mean for
    SB3's ``ActorCriticPolicy`` (same defaults): ``net_arch["pi"]`` builds the observation encoder whose output
    conditions the denoiser (computed once per action, shared by the K steps; ``pi=[]`` feeds the features directly),
    ``net_arch["vf"]`` the critic. Orthogonal initialisation applies to the features extractor, those layers and the
    value head, not to the denoiser.

    :param observation_space: Observation space
    :param action_space: Action space: a bounded ``Box``, ``Discrete`` or ``MultiDiscrete``
    :param lr_schedule: Learning rate schedule (could be constant)
    :param net_arch: The specification of the conditioning (``pi``) and value (``vf``) networks
    :param activation_fn: Activation function of those networks
    :param ortho_init: Whether to use orthogonal initialization (not applied to the denoiser)
    :param use_sde: Must be False (kept so that SB3's ``OnPolicyAlgorithm`` can pass it)
    :param log_std_init: Initial log std of the final step when it is learned
    :param features_extractor_class: Features extractor to use
    :param features_extractor_kwargs: Keyword arguments to pass to the features extractor
    :param share_features_extractor: If True, the features extractor is shared between the actor and the critic
    :param normalize_images: Whether to normalize images or not, dividing by 255.0
    :param optimizer_class: The optimizer to use, ``th.optim.Adam`` by default
    :param optimizer_kwargs: Additional keyword arguments, excluding the learning rate, to pass to the optimizer
        (``None`` with Adam: SB3's ``eps=1e-5`` and ``fused=True``, PyTorch's single-kernel Adam)
    :param n_denoising_steps: Number of denoising steps K
    :param sampler: ``"ddpm"`` or ``"ddim"``
    :param ddim_eta: DDIM stochasticity in [0, 1] (only with ``sampler="ddim"``)
    :param noise_schedule: ``"cosine"`` or ``"linear"``
    :param x0_clip: Clip of the predicted clean action at the steps ``k >= 2`` (``None``: no clip)
    :param x0_clip_final: Also clip it at the final step, whose output is the action mean. Off, the mean always
        receives gradient but can leave the action bounds (measured no better for Box actions: see the README).
        ``None`` (default): on for a Box, off for discrete actions, whose final mean is the logits: clipped to
        ``[-x0_clip, x0_clip]`` they would cap the probability of the best of ``n`` actions at
        ``e^(2 x0_clip) / (e^(2 x0_clip) + n - 1)`` (0.65 for 5 actions at the default clip; measured in the README)
    :param noise_clip: Clip of the sampled normal draws (``None``: no clip)
    :param min_step_std: Floor of the std of the intermediate denoising steps
    :param prediction_type: What the denoiser predicts: ``"epsilon"`` (the noise) or ``"sample"`` (the clean action)
    :param denoiser_hidden_sizes: Hidden layer sizes of the denoiser MLP
    :param denoiser_activation_fn: Activation of the denoiser
    :param time_embed_dim: Size of the sinusoidal time embedding
    :param residual: Use residual blocks in the denoiser
    :param fixed_std: If set, the final-step std is fixed to this value; if ``None`` it is a learned,
        state-independent parameter initialised at ``exp(log_std_init)``
    :param min_std: Floor of the final-step std
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.Tanh,
        ortho_init: bool = True,
        use_sde: bool = False,
        log_std_init: float = 0.0,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        share_features_extractor: bool = True,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        n_denoising_steps: int = _DEFAULTS.n_denoising_steps,
        sampler: str = _DEFAULTS.sampler,
        ddim_eta: float = _DEFAULTS.ddim_eta,
        noise_schedule: str = _DEFAULTS.noise_schedule,
        x0_clip: float | None = _DEFAULTS.x0_clip,
        x0_clip_final: bool | None = None,
        noise_clip: float | None = _DEFAULTS.noise_clip,
        min_step_std: float = _DEFAULTS.min_step_std,
        prediction_type: str = _DEFAULTS.prediction_type,
        denoiser_hidden_sizes: list[int] | tuple[int, ...] = (256, 256),
        denoiser_activation_fn: type[nn.Module] = nn.SiLU,
        time_embed_dim: int = 16,
        residual: bool = False,
        fixed_std: float | None = None,
        min_std: float = DEFAULT_MIN_STD,
    ):
        check_action_space(action_space)
        if x0_clip_final is None:
            x0_clip_final = isinstance(action_space, spaces.Box)
        check_policy_kwargs(
            dict(
                use_sde=use_sde,
                denoiser_hidden_sizes=denoiser_hidden_sizes,
                residual=residual,
                fixed_std=fixed_std,
                min_std=min_std,
            )
        )
        if optimizer_kwargs is None and optimizer_class is th.optim.Adam:
            # SB3's default Adam settings, with PyTorch's fused kernel: the per-parameter loop of the default Adam cost
            # ~0.7 ms per minibatch here, a tenth of an NCDPO update on Hopper-v5 (benchmarks/speed.py).
            optimizer_kwargs = {"eps": 1e-5, "fused": True}
        self.chain = NoiseConditionedChain(
            ChainConfig(
                n_denoising_steps=n_denoising_steps,
                sampler=sampler,
                ddim_eta=ddim_eta,
                noise_schedule=noise_schedule,
                x0_clip=x0_clip,
                x0_clip_final=x0_clip_final,
                noise_clip=noise_clip,
                min_step_std=min_step_std,
                prediction_type=prediction_type,
            )
        )
        self.denoiser_hidden_sizes = list(denoiser_hidden_sizes)
        self.denoiser_activation_fn = denoiser_activation_fn
        self.time_embed_dim = time_embed_dim
        self.residual = residual
        self.fixed_std = fixed_std
        self.min_std = min_std
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            net_arch=net_arch,
            activation_fn=activation_fn,
            ortho_init=ortho_init,
            log_std_init=log_std_init,
            features_extractor_class=features_extractor_class,
            features_extractor_kwargs=features_extractor_kwargs,
            share_features_extractor=share_features_extractor,
            normalize_images=normalize_images,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
        )
        # The policy outputs Box actions in [-1, 1]; declaring them squashed makes SB3's predict() map them to the Box
        # bounds (unscale_action) instead of clipping them to the bounds.
        self._squash_output = isinstance(action_space, spaces.Box)

    @classmethod
    def load(cls: type[SelfDiffusionPolicy], path: str, device: th.device | str = "auto") -> SelfDiffusionPolicy:  # type: ignore[override]
        """
        Load a policy saved with ``policy.save(path)``.

        :param path: File path or file-like object
        :param device: Device on which the policy should be loaded
        :return: The policy, rebuilt with the diffusion settings it was saved with
        """
        device = get_device(device)
        saved_variables = th.load(path, map_location=device, weights_only=False)
        if "n_denoising_steps" not in saved_variables["data"]:
            raise ValueError(f"{path} is not a saved diffusion policy: it has no n_denoising_steps (was it saved by PPO?)")
        model = cls(**saved_variables["data"])
        model.load_state_dict(saved_variables["state_dict"])
        model.to(device)
        return model

    @property
    def action_dim(self) -> int:
        """Size of the (flattened) action vector that the chain denoises."""
        return get_action_dim(self.action_space)

    @property
    def chain_dim(self) -> int:
        """Size of the vector the chain denoises: ``action_dim`` for a Box, the number of logits otherwise."""
        return chain_dim(self.action_space)

    @property
    def noise_shape(self) -> tuple[int, int]:
        """Shape of the stored noise of one transition: ``(n_denoising_steps, chain_dim)``."""
        return self.chain.noise_shape(self.chain_dim)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        for unused in ("squash_output", "full_std", "use_expln"):  # gSDE options, not arguments of this class
            data.pop(unused, None)
        data.update(asdict(self.chain.config))  # ChainConfig's fields are named after this class's keyword arguments
        data.update(
            share_features_extractor=self.share_features_extractor,
            denoiser_hidden_sizes=self.denoiser_hidden_sizes,
            denoiser_activation_fn=self.denoiser_activation_fn,
            time_embed_dim=self.time_embed_dim,
            residual=self.residual,
            fixed_std=self.fixed_std,
            min_std=self.min_std,
        )
        return data

    def _build(self, lr_schedule: Schedule) -> None:
        self._build_mlp_extractor()
        self.denoiser = DenoiserMLP(
            self.chain_dim,
            self.mlp_extractor.latent_dim_pi,
            hidden_sizes=self.denoiser_hidden_sizes,
            activation_fn=self.denoiser_activation_fn,
            time_embed_dim=self.time_embed_dim,
            residual=self.residual,
        )
        if isinstance(self.action_space, spaces.Box):
            log_std = self.log_std_init if self.fixed_std is None else math.log(self.fixed_std)
            # A fixed std stays a (frozen) parameter so that saved files have the same layout either way.
            self.log_std = nn.Parameter(th.full((self.action_dim,), float(log_std)), requires_grad=self.fixed_std is None)
        self.value_net = nn.Linear(self.mlp_extractor.latent_dim_vf, 1)
        if self.ortho_init:
            module_gains: dict[nn.Module, float] = {self.mlp_extractor: np.sqrt(2), self.value_net: 1}
            module_gains[self.pi_features_extractor] = np.sqrt(2)
            module_gains[self.vf_features_extractor] = np.sqrt(2)
            for module, gain in module_gains.items():
                module.apply(partial(self.init_weights, gain=gain))
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)  # type: ignore[call-arg]

    def final_std(self) -> th.Tensor:
        """:return: The std of the final Gaussian step per action dimension, after the ``min_std`` floor (Box only)."""
        return self._floored_log_std().exp()

    def _floored_log_std(self) -> th.Tensor:
        return self.log_std.clamp(min=math.log(self.min_std))

    def sample_noise(self, batch_size: int) -> th.Tensor:
        """
        :param batch_size: Number of transitions
        :return: Fresh denoising noise of shape ``(batch_size, *noise_shape)`` on the policy's device
        """
        return self.chain.sample_noise(batch_size, self.chain_dim, device=self.device, dtype=self._noise_dtype)

    @property
    def _noise_dtype(self) -> th.dtype:
        return self.denoiser.output.weight.dtype

    def _latents(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor]:
        features = self.extract_features(obs)
        if self.share_features_extractor:
            return self.mlp_extractor(features)
        pi_features, vf_features = features
        return self.mlp_extractor.forward_actor(pi_features), self.mlp_extractor.forward_critic(vf_features)

    def _actor_latent(self, obs: PyTorchObs) -> th.Tensor:
        features = super(ActorCriticPolicy, self).extract_features(obs, self.pi_features_extractor)
        return self.mlp_extractor.forward_actor(features)

    def _get_action_dist_from_latent(  # type: ignore[override]
        self,
        latent_pi: th.Tensor,
        noises: th.Tensor,
        eps_grad_hook: Callable[[int, th.Tensor], None] | None = None,
    ) -> FinalDistribution:
        """
        :param latent_pi: Conditioning features of the denoiser
        :param noises: Denoising noise, shape ``(batch, *noise_shape)``
        :param eps_grad_hook: See :meth:`NoiseConditionedChain.final_mean`
        :return: The final step conditioned on the noise: a Gaussian (Box) or a categorical over the logits
        """
        cond = self.denoiser.project_condition(latent_pi)
        eps_model = self.denoiser.step_predictor(cond, self.chain.n_steps)
        mean = self.chain.final_mean(eps_model, noises, eps_grad_hook=eps_grad_hook)
        return self._final_distribution(mean)

    def _final_distribution(self, mean: th.Tensor) -> FinalDistribution:
        """
        :param mean: The chain's final mean, shape ``(batch, chain_dim)``
        :return: ``N(mean, std^2)`` for a Box; the (multi-)categorical with ``mean`` as logits otherwise
        """
        if isinstance(self.action_dist, DiagGaussianDistribution):
            return self.action_dist.proba_distribution(mean, self._floored_log_std())
        return self.action_dist.proba_distribution(action_logits=mean)  # type: ignore[return-value]

    def _noise_for(self, batch_size: int, deterministic: bool) -> th.Tensor:
        if deterministic:
            # The "mode" of a noise-conditioned policy: zero noise at every denoising step and the final mean.
            return th.zeros((batch_size, *self.noise_shape), device=self.device, dtype=self._noise_dtype)
        return self.sample_noise(batch_size)

    def forward_with_noise(
        self, obs: PyTorchObs, deterministic: bool = False
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor, th.Tensor]:
        """
        Forward pass in actor and critic that also returns the noise the actions were made with.

        :param obs: Observation
        :param deterministic: Zero noise at every step and the mean (argmax for discrete actions) of the final step
        :return: action (Box: normalised, unclipped), value, log probability of the action given the noise, noise
        """
        latent_pi, latent_vf = self._latents(obs)
        values = self.value_net(latent_vf)
        noises = self._noise_for(latent_pi.shape[0], deterministic)
        distribution = self._get_action_dist_from_latent(latent_pi, noises)
        actions = distribution.get_actions(deterministic=deterministic)
        log_prob = distribution.log_prob(actions)
        return actions.reshape((-1, *self.action_space.shape)), values, log_prob, noises  # type: ignore[misc]

    def forward(self, obs: th.Tensor, deterministic: bool = False) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """
        SB3's forward pass: the noise is sampled and dropped (use :meth:`forward_with_noise` to keep it).

        :param obs: Observation
        :param deterministic: Zero noise at every step and the mean of the final step
        :return: action (normalised, unclipped), value and log probability of the action given the noise
        """
        actions, values, log_prob, _ = self.forward_with_noise(obs, deterministic)
        return actions, values, log_prob

    def evaluate_actions(  # type: ignore[override]
        self,
        obs: PyTorchObs,
        actions: th.Tensor,
        noises: th.Tensor,
        eps_grad_hook: Callable[[int, th.Tensor], None] | None = None,
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor | None]:
        """
        Evaluate actions given the noise that produced them, through the whole denoising chain (with gradients).

        :param obs: Observation
        :param actions: Normalised actions (Box), or the actions as the rollout buffer stores them (floats, one
            column per sub-space)
        :param noises: The stored noise of those actions, shape ``(batch, *noise_shape)``
        :param eps_grad_hook: See :meth:`NoiseConditionedChain.final_mean`
        :return: estimated value, log likelihood of the actions given the noise, entropy of the final step
        """
        latent_pi, latent_vf = self._latents(obs)
        distribution = self._get_action_dist_from_latent(latent_pi, noises, eps_grad_hook=eps_grad_hook)
        if isinstance(self.action_space, spaces.Discrete):
            # The buffer stores (batch, 1) floats; a categorical's log_prob needs (batch,) integers (PPO does the same).
            actions = actions.long().flatten()
        return self.value_net(latent_vf), distribution.log_prob(actions), distribution.entropy()

    def get_distribution(self, obs: PyTorchObs, noises: th.Tensor | None = None) -> FinalDistribution:  # type: ignore[override]
        """
        :param obs: Observation
        :param noises: Denoising noise; fresh noise is drawn if ``None``
        :return: The final-step distribution given the noise
        """
        latent_pi = self._actor_latent(obs)
        if noises is None:
            noises = self.sample_noise(latent_pi.shape[0])
        return self._get_action_dist_from_latent(latent_pi, noises)

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        """
        :param observation: Observation
        :param deterministic: Zero noise at every step and the mean (argmax for discrete actions) of the final step
        :return: Normalised actions clipped to [-1, 1] (Box), or the discrete actions
        """
        latent_pi = self._actor_latent(observation)
        noises = self._noise_for(latent_pi.shape[0], deterministic)
        actions = self._get_action_dist_from_latent(latent_pi, noises).get_actions(deterministic=deterministic)
        return actions.clamp(-1.0, 1.0) if isinstance(self.action_space, spaces.Box) else actions


class CnnDiffusionPolicy(DiffusionActorCriticPolicy):
    """
    :class:`DiffusionActorCriticPolicy` with SB3's ``NatureCNN`` features extractor by default (image observations).
    Same parameters as :class:`DiffusionActorCriticPolicy`.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("features_extractor_class", NatureCNN)
        super().__init__(*args, **kwargs)


class MultiInputDiffusionPolicy(DiffusionActorCriticPolicy):
    """
    :class:`DiffusionActorCriticPolicy` with SB3's ``CombinedExtractor`` by default (``Dict`` observations).
    Same parameters as :class:`DiffusionActorCriticPolicy`.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("features_extractor_class", CombinedExtractor)
        super().__init__(*args, **kwargs)
