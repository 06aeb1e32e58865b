"""Diffusion actor-critic policies: a denoising chain conditioned on stored noise as the actor, V(s) as the critic."""

import math
from collections import deque
from functools import partial
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.preprocessing import get_action_dim
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, CombinedExtractor, FlattenExtractor, NatureCNN
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from stable_baselines3.common.utils import get_device
from torch import nn

from sb3_ncdpo.common.atomic import atomic_file
from sb3_ncdpo.common.denoising_steps import DenoisingStepsMixin, FrozenActor
from sb3_ncdpo.common.diffusion import ChainConfig, DenoiserMLP, EpsGradHook, chain_class, make_chain
from sb3_ncdpo.common.distributions import FinalDistribution, FinalGaussian
from sb3_ncdpo.common.observation_history import ObservationHistory, stacked_space
from sb3_ncdpo.common.policy_settings import (
    CHAIN_DEFAULTS,
    DEFAULT_CHUNK_LOG_PROB,
    DEFAULT_DENOISER_SIZES,
    DEFAULT_MIN_STD,
    DEFAULT_PREDICTION_TYPE,
    chain_dim,
    check_action_space,
    check_chunk_spaces,
    check_policy_kwargs,
)
from sb3_ncdpo.common.tracing import PolicyTraces

SelfDiffusionPolicy = TypeVar("SelfDiffusionPolicy", bound="DiffusionActorCriticPolicy")


class DiffusionActorCriticPolicy(DenoisingStepsMixin, ActorCriticPolicy):
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
    :param x0_clip_final: Also clip it at the final step, whose output is the action mean (DPPO's convention). Off
        (default), the mean is unbounded, as a PPO Gaussian's, and only the executed action is clipped to the bounds:
        a clipped mean gets no gradient, so a policy whose mean ran past a bound could never come back (measured:
        docs/benchmarks/defaults.md, "Action bounds"); for discrete actions the final mean is the logits, which clipped
        would cap the probability of the best of ``n`` actions at ``e^(2 x0_clip) / (e^(2 x0_clip) + n - 1)``.
        ``None``: the default of sb3-ncdpo 0.1 (on for a Box, off for discrete actions), which its saved models load with
    :param noise_clip: Clip of the sampled normal draws (``None``: no clip)
    :param min_step_std: Floor of the std of the intermediate denoising steps
    :param prediction_type: What the denoiser predicts: ``"sample"`` (the clean action, default) or ``"epsilon"`` (the
        noise, the usual choice for behaviour cloning; a fresh policy then explores through the chain's own noise with
        an action std of ~0.8 per dimension whatever ``log_std_init``)
    :param denoiser_hidden_sizes: Hidden layer sizes of the denoiser MLP
    :param denoiser_activation_fn: Activation of the denoiser
    :param time_embed_dim: Size of the sinusoidal time embedding
    :param residual: Use residual blocks in the denoiser
    :param fixed_std: If set, the final-step std is fixed to this value; if ``None`` it is a learned,
        state-independent parameter initialised at ``exp(log_std_init)``
    :param min_std: Floor of the final-step std
    :param n_finetuned_steps: Train only the last ``K'`` denoising steps (DPPO's partial fine-tuning): the steps
        ``k > K'`` run a frozen copy of the actor (observation encoder and denoiser) made when the policy is built, or
        by :meth:`reset_frozen_actor` after loading pre-trained weights. ``None`` (default): every step is trained
    :param gradient_checkpointing: Recompute each denoising step's network activations during the backward pass of
        an update instead of keeping them (PyTorch's activation checkpointing): the update's memory then hardly grows
        with K, for one more forward pass of the denoiser; same gradients. Updates then run the eager code (traces
        cannot checkpoint); rollouts and prediction are unchanged
    :param horizon: Length Tp of the action chunk that one decision denoises (Diffusion Policy's and LeRobot's name;
        a Box action space only): the chain denoises ``horizon * action_dim`` values and the final Gaussian has one
        learned std per action dimension, shared by the chunk's positions
    :param n_action_steps: Number Ta of the chunk's first actions executed per decision (``<= horizon``), one env step
        each: the algorithms then make one decision every ``n_action_steps`` env steps, and :meth:`predict` returns
        one action per call from a queue per env that it refills every ``n_action_steps`` calls
    :param n_obs_steps: Number To of observations the policy is conditioned on (a Box observation space, not an
        image): its networks read the last ``n_obs_steps`` observations, oldest first, flattened by the features
        extractor; at an episode's start the first observation repeated. The algorithms and :meth:`predict` keep the
        history of each env; the other methods take histories, ``(batch, n_obs_steps, *obs_shape)``
    :param chunk_log_prob: What the PPO ratio of a chunk is made of: the log-probability of the ``"executed"``
        actions (the first ``n_action_steps``, DPPO's choice, default) or of the whole denoised chunk (``"horizon"``);
        the entropy covers the same actions. The same with ``n_action_steps == horizon``
    :param chain_noise_scale: Scale of the chain's noise ``(x_K, z_K, ..., z_2)`` when actions are sampled (NCDPO only;
        1, the default, samples the chain as trained). NCDPO's ratio is the final step's Gaussian given that noise, so
        only the final step's noise is exploration its policy gradient credits: the spread of the final mean over the
        chain noise moves the executed actions without entering the ratio (``benchmarks/exploration_credit.py``: 8 % of
        a Meta-World clone's action variance is credited at ``fixed_std=0.1``). Below 1 that uncredited spread shrinks;
        at 0 the chain runs from zero noise (the deterministic action's mean) and the final Gaussian is all the
        exploration. The stored noise is the scaled one, so replay stays exact
    :param deterministic_draws: How ``predict(deterministic=True)`` (SB3's evaluation action, e.g. ``EvalCallback``'s)
        reads an action out of the chain, which has no single mode: ``0`` (default) runs the chain from zero noise and
        takes its final mean; ``n >= 1`` averages the final means of ``n`` chain samples (the logits, for discrete
        actions) and acts with that. ``1`` is DPPO's evaluation action (a chain sample without the final step's noise);
        a larger ``n`` estimates the policy's mean action, as a Gaussian policy's deterministic action is its mean.
        It changes what is evaluated, not what is trained (measured on behaviour-cloned locomotion policies:
        ``benchmarks/clone_modes.py``)
    """

    #: Keyword arguments that fine-tuning may change from the pre-trained policy's, besides the chain's own
    #: (:attr:`~sb3_ncdpo.common.diffusion.DenoisingChain.finetune_overridable`): they leave what the pre-trained
    #: weights compute unchanged (the final-step std, the optimizer, which steps are trained).
    finetune_overridable: ClassVar[frozenset[str]] = frozenset(
        {
            "fixed_std",
            "min_std",
            "log_std_init",
            "optimizer_class",
            "optimizer_kwargs",
            "ortho_init",
            "n_finetuned_steps",
            "gradient_checkpointing",
            "chunk_log_prob",
            "chain_noise_scale",
            "deterministic_draws",
        }
    )
    traces: PolicyTraces
    frozen_actor: FrozenActor | None

    @classmethod
    def finetune_overridable_kwargs(cls, sampler: str) -> frozenset[str]:
        """
        :param sampler: The pre-trained policy's chain (its ``sampler`` setting)
        :return: Every keyword argument that fine-tuning may change from the pre-trained policy's
        """
        return cls.finetune_overridable | chain_class(sampler).finetune_overridable

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
        n_denoising_steps: int = CHAIN_DEFAULTS.n_denoising_steps,
        sampler: str = CHAIN_DEFAULTS.sampler,
        ddim_eta: float = CHAIN_DEFAULTS.ddim_eta,
        noise_schedule: str = CHAIN_DEFAULTS.noise_schedule,
        x0_clip: float | None = CHAIN_DEFAULTS.x0_clip,
        x0_clip_final: bool | None = False,
        noise_clip: float | None = CHAIN_DEFAULTS.noise_clip,
        min_step_std: float = CHAIN_DEFAULTS.min_step_std,
        prediction_type: str = DEFAULT_PREDICTION_TYPE,
        denoiser_hidden_sizes: list[int] | tuple[int, ...] = DEFAULT_DENOISER_SIZES,
        denoiser_activation_fn: type[nn.Module] = nn.SiLU,
        time_embed_dim: int = 16,
        residual: bool = False,
        fixed_std: float | None = None,
        min_std: float = DEFAULT_MIN_STD,
        n_finetuned_steps: int | None = None,
        gradient_checkpointing: bool = False,
        horizon: int = 1,
        n_action_steps: int = 1,
        n_obs_steps: int = 1,
        chunk_log_prob: str = DEFAULT_CHUNK_LOG_PROB,
        chain_noise_scale: float = 1.0,
        deterministic_draws: int = 0,
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
                n_finetuned_steps=n_finetuned_steps,
                n_denoising_steps=n_denoising_steps,
                gradient_checkpointing=gradient_checkpointing,
                horizon=horizon,
                n_action_steps=n_action_steps,
                n_obs_steps=n_obs_steps,
                chunk_log_prob=chunk_log_prob,
                chain_noise_scale=chain_noise_scale,
                deterministic_draws=deterministic_draws,
            )
        )
        check_chunk_spaces(observation_space, action_space, horizon, n_obs_steps)
        if optimizer_kwargs is None and optimizer_class is th.optim.Adam:
            # SB3's default Adam settings, with PyTorch's fused kernel: the per-parameter loop of the default Adam cost
            # ~0.7 ms per minibatch here, a tenth of an NCDPO update on Hopper-v5 (benchmarks/speed.py).
            optimizer_kwargs = {"eps": 1e-5, "fused": True}
        # Read on every rollout call (SB3 computes action_dim with np.prod)
        self._action_dim = get_action_dim(action_space)
        self.horizon, self.n_action_steps, self.n_obs_steps = horizon, n_action_steps, n_obs_steps
        self.chunk_log_prob = chunk_log_prob
        self._chain_dim = horizon * chain_dim(action_space)
        self.chain = make_chain(
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
        self.n_finetuned_steps = n_finetuned_steps
        self.gradient_checkpointing = gradient_checkpointing
        self.chain_noise_scale = chain_noise_scale
        self.deterministic_draws = deterministic_draws
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
        # The policy outputs actions in [-1, 1]; declaring them squashed makes SB3's predict() map them to the Box
        # bounds (unscale_action) instead of clipping them to the bounds.
        self._squash_output = isinstance(action_space, spaces.Box)

    def save(self, path: str) -> None:
        """
        Save the policy (SB3's ``policy.save``: its weights and constructor parameters), atomically: to a temporary
        file in the same folder, then renamed over ``path``.

        :param path: File path
        """
        with atomic_file(path) as tmp:
            super().save(str(tmp))

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
        """Size of the (flattened) action vector."""
        return self._action_dim

    @property
    def chain_dim(self) -> int:
        """
        Size of the vector the chain denoises: ``horizon * action_dim`` for a Box, the number of logits otherwise.
        """
        return self._chain_dim

    @property
    def chunk_shape(self) -> tuple[int, ...]:
        """Shape of the actions of one decision: the action space's, with a leading ``horizon`` if it is > 1."""
        shape = tuple(self.action_space.shape or ())
        return (self.horizon, *shape) if self.horizon > 1 else shape

    @property
    def _scored_dims(self) -> int | None:
        """How many of the chunk's first values the log-probability covers (``None``: all of them)."""
        if self.chunk_log_prob == "executed" and self.n_action_steps < self.horizon:
            return self.n_action_steps * self.action_dim
        return None

    def scored(self, per_value: th.Tensor) -> th.Tensor:
        """
        :param per_value: A quantity per denoised value, on the last axis (a log-density, a std, a KL)
        :return: Its values that the log-probability covers: an action chunk's executed actions with
            ``chunk_log_prob="executed"``, else all of them
        """
        scored = self._scored_dims
        return per_value if scored is None else per_value[..., :scored]

    @property
    def noise_shape(self) -> tuple[int, int]:
        """Shape of the stored noise of one transition: ``(n_denoising_steps, chain_dim)``."""
        return self.chain.noise_shape(self.chain_dim)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        for unused in ("squash_output", "full_std", "use_expln"):  # gSDE options, not arguments of this class
            data.pop(unused, None)
        data.update(self.chain.config_kwargs())  # named after this class's keyword arguments
        data.update(
            share_features_extractor=self.share_features_extractor,
            denoiser_hidden_sizes=self.denoiser_hidden_sizes,
            denoiser_activation_fn=self.denoiser_activation_fn,
            time_embed_dim=self.time_embed_dim,
            residual=self.residual,
            fixed_std=self.fixed_std,
            min_std=self.min_std,
            n_finetuned_steps=self.n_finetuned_steps,
            gradient_checkpointing=self.gradient_checkpointing,
            horizon=self.horizon,
            n_action_steps=self.n_action_steps,
            n_obs_steps=self.n_obs_steps,
            chunk_log_prob=self.chunk_log_prob,
            chain_noise_scale=self.chain_noise_scale,
            deterministic_draws=self.deterministic_draws,
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
        # Rollouts, prediction and updates run through traces of the same code (common/tracing.py): same numbers, less
        # overhead. The traced modules are held by non-Module wrappers, so they are not submodules of the policy.
        encoders = (self.features_extractor, self.pi_features_extractor, self.vf_features_extractor, self.mlp_extractor)
        self.traces = PolicyTraces(self, encoders, gaussian=isinstance(self.action_space, spaces.Box))
        if isinstance(self.action_space, spaces.Box):
            self.action_dist = FinalGaussian(self.chain_dim, scored_dims=self._scored_dims)
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
        # After the optimizer: the frozen copy's parameters are never optimised.
        self.frozen_actor = self._make_frozen_actor()

    def time_projections(self) -> th.Tensor:
        """
        :return: :meth:`DenoiserMLP.time_projections` of this policy's K steps, reused by calls without gradient while
            the parameters it depends on are unchanged (:meth:`PolicyTraces.time_projections`)
        """
        return self.traces.time_projections()

    def set_training_mode(self, mode: bool) -> None:
        """
        :param mode: If true, set to training mode, else set to evaluation mode
        """
        super().set_training_mode(mode)
        self.traces.forget_time_projections()

    def final_std(self) -> th.Tensor:
        """:return: The std of the final Gaussian step per action dimension, after the ``min_std`` floor (Box only)."""
        return self._floored_log_std().exp()

    def _floored_log_std(self) -> th.Tensor:
        """:return: The final step's log std per denoised value (the per-action std repeated over the chunk)"""
        log_std = self.log_std.clamp(min=math.log(self.min_std))
        return log_std.repeat(self.horizon) if self.horizon > 1 else log_std

    def sample_noise(self, batch_size: int) -> th.Tensor:
        """
        :param batch_size: Number of transitions
        :return: Fresh denoising noise of shape ``(batch_size, *noise_shape)`` on the policy's device, scaled by
            ``chain_noise_scale``
        """
        noise = self.chain.sample_noise(batch_size, self.chain_dim, device=self.device, dtype=self._noise_dtype)
        return noise if self.chain_noise_scale == 1.0 else noise * self.chain_noise_scale

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
        eps_grad_hook: EpsGradHook | None = None,
        obs: PyTorchObs | None = None,
    ) -> FinalDistribution:
        """
        :param latent_pi: Conditioning features of the denoiser
        :param noises: Denoising noise, shape ``(batch, *noise_shape)``
        :param eps_grad_hook: See :meth:`~sb3_ncdpo.common.diffusion.DenoisingChain.final_mean`
        :param obs: The observation (needed only with ``n_finetuned_steps``: the frozen steps encode it themselves)
        :return: The final step conditioned on the noise: a Gaussian (Box) or a categorical over the logits
        """
        return self._final_distribution(self._final_mean(latent_pi, noises, eps_grad_hook, obs))

    def _final_mean(
        self,
        latent_pi: th.Tensor,
        noises: th.Tensor,
        eps_grad_hook: EpsGradHook | None = None,
        obs: PyTorchObs | None = None,
    ) -> th.Tensor:
        """The chain's final mean: through its trace where :meth:`PolicyTraces.pick` allows, else eagerly."""
        traced = self.traces.pick(self.traces.chain, eps_grad_hook=eps_grad_hook)
        if traced is not None:
            return traced(latent_pi, noises, self.time_projections())  # type: ignore[no-any-return]
        eps_model = self._eps_model(latent_pi, obs)
        return self.chain.final_mean(eps_model, noises, eps_grad_hook=eps_grad_hook, checkpoint=self.gradient_checkpointing)

    def _final_mean_and_values(
        self, obs: PyTorchObs, noises: th.Tensor, eps_grad_hook: EpsGradHook | None = None
    ) -> tuple[th.Tensor, th.Tensor]:
        """The chain's final mean and the value: through one trace where the encoders are traceable."""
        traced = self.traces.pick(self.traces.actor_critic, obs, eps_grad_hook)
        if traced is not None:
            return traced(obs, noises, self.time_projections())  # type: ignore[no-any-return]
        latent_pi, latent_vf = self._latents(obs)
        return self._final_mean(latent_pi, noises, eps_grad_hook, obs), self.value_net(latent_vf)

    def _final_distribution(self, mean: th.Tensor, validate_args: bool | None = None) -> FinalDistribution:
        """
        :param mean: The chain's final mean, shape ``(batch, chain_dim)``
        :param validate_args: torch's argument checks of the Gaussian (``None``: on)
        :return: ``N(mean, std^2)`` for a Box; the (multi-)categorical with ``mean`` as logits otherwise
        """
        if isinstance(self.action_dist, FinalGaussian):
            return self.action_dist.proba_distribution(mean, self._floored_log_std(), validate_args=validate_args)
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
        batch_size = (obs if isinstance(obs, th.Tensor) else next(iter(obs.values()))).shape[0]
        noises = self._noise_for(batch_size, deterministic)
        traced_act = self.traces.pick(self.traces.act, obs)
        if traced_act is not None:
            # Drawn after the chain's noise, as torch's Normal.sample would (same generator, same order, same numbers).
            draw = th.zeros if deterministic else th.randn
            draws = draw((batch_size, self.chain_dim), dtype=noises.dtype, device=noises.device)
            actions, values, log_prob = traced_act(obs, noises, draws, self.time_projections())
        else:
            mean, values = self._final_mean_and_values(obs, noises)
            distribution = self._final_distribution(mean, validate_args=False if not th.is_grad_enabled() else None)
            actions = distribution.get_actions(deterministic=deterministic)
            log_prob = distribution.log_prob(actions)
        return actions.reshape((-1, *self.chunk_shape)), values, log_prob, noises

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
        eps_grad_hook: EpsGradHook | None = None,
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor | None]:
        """
        Evaluate actions given the noise that produced them, through the whole denoising chain (with gradients).

        :param obs: Observation
        :param actions: Normalised actions (Box), or the actions as the rollout buffer stores them (floats, one
            column per sub-space)
        :param noises: The stored noise of those actions, shape ``(batch, *noise_shape)``
        :param eps_grad_hook: See :meth:`~sb3_ncdpo.common.diffusion.DenoisingChain.final_mean`
        :return: estimated value, log likelihood of the actions given the noise, entropy of the final step
        """
        values, distribution = self.evaluate_distribution(obs, noises, eps_grad_hook=eps_grad_hook)
        return values, self.final_log_prob(distribution, actions), distribution.entropy()

    def final_log_prob(self, distribution: FinalDistribution, actions: th.Tensor) -> th.Tensor:
        """
        :param distribution: The final step, from :meth:`evaluate_distribution`
        :param actions: Actions as the rollout buffer stores them (normalised for a Box; floats for discrete spaces)
        :return: Their log-likelihood under ``distribution``
        """
        if isinstance(self.action_space, spaces.Discrete):
            # The buffer stores (batch, 1) floats; a categorical's log_prob needs (batch,) integers (PPO does the same).
            actions = actions.long().flatten()
        return distribution.log_prob(actions)

    def evaluate_distribution(
        self,
        obs: PyTorchObs,
        noises: th.Tensor,
        eps_grad_hook: EpsGradHook | None = None,
    ) -> tuple[th.Tensor, FinalDistribution]:
        """
        :meth:`evaluate_actions` before the log-likelihood: the value and the final-step distribution given the noise
        (for losses on the distribution itself, e.g. the KL to a reference policy of the BC regulariser).

        :param obs: Observation
        :param noises: Stored noise, shape ``(batch, *noise_shape)``
        :param eps_grad_hook: See :meth:`~sb3_ncdpo.common.diffusion.DenoisingChain.final_mean`
        :return: estimated value, final-step distribution given the noise
        """
        mean, values = self._final_mean_and_values(obs, noises, eps_grad_hook)
        return values, self._final_distribution(mean)

    def get_distribution(self, obs: PyTorchObs, noises: th.Tensor | None = None) -> FinalDistribution:  # type: ignore[override]
        """
        :param obs: Observation
        :param noises: Denoising noise; fresh noise is drawn if ``None``
        :return: The final-step distribution given the noise
        """
        latent_pi = self._actor_latent(obs)
        if noises is None:
            noises = self.sample_noise(latent_pi.shape[0])
        return self._get_action_dist_from_latent(latent_pi, noises, obs=obs)

    def make_features_extractor(self) -> BaseFeaturesExtractor:
        """:return: The features extractor, on histories of ``n_obs_steps`` observations where that is > 1"""
        if self.n_obs_steps == 1:
            return super().make_features_extractor()
        space = stacked_space(self.observation_space, self.n_obs_steps)  # type: ignore[arg-type]
        return self.features_extractor_class(space, **self.features_extractor_kwargs)

    def reset(self) -> None:
        """
        Forget the actions and observations that :meth:`predict` keeps between calls (LeRobot's name): its next call
        starts anew for every env.
        """
        self._action_queues: list[deque[np.ndarray]] = []
        self._obs_history = ObservationHistory(self.n_obs_steps)

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """
        SB3's ``predict``: one action per env and call, for one observation per env. With ``n_action_steps`` > 1 (or
        ``horizon`` > 1) it keeps a queue of actions per env (the batch's row): a call decides for the envs whose
        queue is empty and queues the first ``n_action_steps`` actions of their chunk. With ``n_obs_steps`` > 1 it
        keeps each env's history of observations, which every call extends. ``episode_start`` (SB3's argument, as
        ``evaluate_policy`` and rl-zoo3's ``enjoy`` pass it) starts anew the envs it marks, and a change of the batch
        size starts every env anew (as does :meth:`reset`).

        :param observation: The input observation
        :param state: The last hidden state (unused: returned as given)
        :param episode_start: Whether each env starts an episode
        :param deterministic: Whether to return deterministic actions
        :return: The actions and ``state``
        """
        if self.horizon == 1 and self.n_action_steps == 1 and self.n_obs_steps == 1:
            return super().predict(observation, state, episode_start, deterministic)
        self.set_training_mode(False)
        obs_tensor, vectorized_env = self.obs_to_tensor(observation)
        batch_size = (obs_tensor if isinstance(obs_tensor, th.Tensor) else next(iter(obs_tensor.values()))).shape[0]
        if len(getattr(self, "_action_queues", [])) != batch_size:
            self.reset()
            self._action_queues = [deque() for _ in range(batch_size)]
        starts = np.zeros(batch_size, bool) if episode_start is None else np.asarray(episode_start, bool).reshape(-1)
        for index in np.flatnonzero(starts):
            self._action_queues[index].clear()
        if self.n_obs_steps > 1:
            histories = self._obs_history.push(obs_tensor.cpu().numpy(), starts)  # type: ignore[union-attr]
            obs_tensor = th.as_tensor(histories, device=self.device)
        deciding = [index for index, queue in enumerate(self._action_queues) if not queue]
        if deciding:
            obs = (
                obs_tensor[deciding] if isinstance(obs_tensor, th.Tensor) else {k: v[deciding] for k, v in obs_tensor.items()}
            )
            with th.no_grad():
                chunks = self._predict(obs, deterministic=deterministic).cpu().numpy()
            # (envs, horizon, *action_shape): the first n_action_steps are queued
            action_shape = tuple(self.action_space.shape or ())
            executed = chunks.reshape((len(deciding), self.horizon, *action_shape))[:, : self.n_action_steps]
            for env, chunk in zip(deciding, executed, strict=True):
                self._action_queues[env].extend(chunk)
        actions = np.stack([queue.popleft() for queue in self._action_queues])
        if isinstance(self.action_space, spaces.Box):
            actions = self.unscale_action(actions)
        return (actions if vectorized_env else actions.squeeze(axis=0)), state

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        """
        :param observation: Observation
        :param deterministic: Zero noise at every step and the mean (argmax for discrete actions) of the final step
        :return: Normalised actions clipped to [-1, 1] (Box; with ``horizon`` > 1, the chunk: ``horizon * action_dim``
            values per row), or the discrete actions
        """
        latent_pi = self._actor_latent(observation)
        if deterministic and self.deterministic_draws > 0:
            distribution = self._final_distribution(self._mean_over_draws(latent_pi, observation, self.deterministic_draws))
        else:
            noises = self._noise_for(latent_pi.shape[0], deterministic)
            distribution = self._get_action_dist_from_latent(latent_pi, noises, obs=observation)
        actions = distribution.get_actions(deterministic=deterministic)
        return actions.clamp(-1.0, 1.0) if isinstance(self.action_space, spaces.Box) else actions

    def _mean_over_draws(self, latent_pi: th.Tensor, observation: PyTorchObs, n_draws: int) -> th.Tensor:
        """
        :param latent_pi: Conditioning features of the denoiser, one row per observation
        :param observation: The observations (the frozen steps of ``n_finetuned_steps`` encode them themselves)
        :param n_draws: Chain samples per observation
        :return: The mean over ``n_draws`` chain samples of the final mean, one row per observation
        """

        def repeated(tensor: th.Tensor) -> th.Tensor:
            return tensor.repeat_interleave(n_draws, dim=0)

        obs = repeated(observation) if isinstance(observation, th.Tensor) else {k: repeated(v) for k, v in observation.items()}
        means = self._final_mean(repeated(latent_pi), self.sample_noise(latent_pi.shape[0] * n_draws), obs=obs)
        return means.reshape(latent_pi.shape[0], n_draws, -1).mean(dim=1)


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
