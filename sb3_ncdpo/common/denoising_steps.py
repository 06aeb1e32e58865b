"""
The denoising steps one at a time: which network runs each step (partial fine-tuning, ``n_finetuned_steps``: the
steps ``k > K'`` run a frozen copy of the actor, the last ``K'`` the trained one), and the steps as DPPO's inner MDP
needs them (the whole chain of a rollout call, each step's std, the means of a batch of (observation, ``x_k``, ``k``)
pairs).
"""

import copy
from typing import Protocol

import torch as th
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, MlpExtractor
from stable_baselines3.common.type_aliases import PyTorchObs
from torch import nn

from sb3_ncdpo.common.diffusion import DenoiserMLP, DenoisingChain, EpsModel
from sb3_ncdpo.common.distributions import FinalDistribution
from sb3_ncdpo.common.tracing import PolicyTraces


class FrozenActor(nn.Module):
    """
    A frozen copy of a diffusion policy's actor (observation encoder and denoiser), for the denoising steps that are
    not trained (see ``n_finetuned_steps``). Its parameters never require gradients and it always runs in eval mode.

    :param features_extractor: Copy of the actor's features extractor
    :param policy_net: Copy of the actor's encoder (``mlp_extractor.policy_net``)
    :param denoiser: Copy of the denoiser
    """

    def __init__(self, features_extractor: BaseFeaturesExtractor, policy_net: nn.Module, denoiser: DenoiserMLP) -> None:
        super().__init__()
        self.features_extractor = features_extractor
        self.policy_net = policy_net
        self.denoiser = denoiser
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "FrozenActor":
        return super().train(False)


class _Policy(Protocol):
    @property
    def chain(self) -> DenoisingChain: ...

    @property
    def denoiser(self) -> DenoiserMLP: ...

    @property
    def value_net(self) -> nn.Module: ...

    @property
    def mlp_extractor(self) -> MlpExtractor: ...

    @property
    def pi_features_extractor(self) -> BaseFeaturesExtractor: ...

    @property
    def frozen_actor(self) -> "FrozenActor | None": ...

    @property
    def traces(self) -> PolicyTraces: ...

    @property
    def n_finetuned_steps(self) -> int | None: ...

    @property
    def trained_steps(self) -> int: ...

    def time_projections(self) -> th.Tensor: ...

    def final_std(self) -> th.Tensor: ...

    def _latents(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor]: ...

    def _noise_for(self, batch_size: int, deterministic: bool) -> th.Tensor: ...

    def _eps_model(self, latent_pi: th.Tensor, obs: PyTorchObs | None) -> EpsModel: ...

    def _final_distribution(self, mean: th.Tensor, validate_args: bool | None = None) -> FinalDistribution: ...


class DenoisingStepsMixin:
    """The policy's denoising steps one at a time: its frozen copy of the early steps' actor, and DPPO's steps."""

    def _make_frozen_actor(self: "_Policy") -> FrozenActor | None:
        if self.n_finetuned_steps is None or self.n_finetuned_steps == self.chain.n_steps:
            return None
        policy_net = copy.deepcopy(self.mlp_extractor.policy_net)
        return FrozenActor(copy.deepcopy(self.pi_features_extractor), policy_net, copy.deepcopy(self.denoiser))

    def reset_frozen_actor(self: "_Policy") -> None:
        """
        Copy the current actor (observation encoder and denoiser) into the frozen copy that runs the steps
        ``k > n_finetuned_steps``: call it after loading pre-trained weights into a policy built with
        ``n_finetuned_steps``, so that the early steps are the pre-trained ones. No-op when every step is trained.
        """
        if self.frozen_actor is None:
            return
        self.frozen_actor.features_extractor.load_state_dict(self.pi_features_extractor.state_dict())
        self.frozen_actor.policy_net.load_state_dict(self.mlp_extractor.policy_net.state_dict())
        self.frozen_actor.denoiser.load_state_dict(self.denoiser.state_dict())

    def _eps_model(self: "_Policy", latent_pi: th.Tensor, obs: PyTorchObs | None) -> EpsModel:
        """
        :param latent_pi: Conditioning features of the trained denoiser
        :param obs: The observation (the frozen steps encode it with their own copy of the encoder)
        :return: ``eps_model(x_k, k)`` for the whole chain: the trained denoiser for ``k <= n_finetuned_steps``, the
            frozen copy for the earlier steps
        """
        n_steps = self.chain.n_steps
        trained = self.denoiser.step_predictor(self.denoiser.project_condition(latent_pi), n_steps, self.time_projections())
        if self.frozen_actor is None:
            return trained
        if obs is None:
            raise ValueError("a policy with n_finetuned_steps < n_denoising_steps needs the observation for its frozen steps")
        frozen_actor = self.frozen_actor
        features = BasePolicy.extract_features(self, obs, frozen_actor.features_extractor)  # type: ignore[arg-type]
        frozen_cond = frozen_actor.denoiser.project_condition(frozen_actor.policy_net(features))
        frozen = frozen_actor.denoiser.step_predictor(frozen_cond, n_steps)
        n_trained = self.n_finetuned_steps

        def eps_model(x: th.Tensor, k: int) -> th.Tensor:
            return trained(x, k) if k <= n_trained else frozen(x, k)  # type: ignore[operator]

        return eps_model

    @property
    def trained_steps(self: "_Policy") -> int:
        """``K'``: the number of trained denoising steps (the last ones), ``K`` unless ``n_finetuned_steps`` is set."""
        return self.chain.n_steps if self.n_finetuned_steps is None else self.n_finetuned_steps

    def sample_chain(
        self: "_Policy", obs: PyTorchObs, deterministic: bool = False
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor, th.Tensor]:
        """
        Sample actions and keep the whole denoising chain, for DPPO's rollouts.

        :param obs: Observation
        :param deterministic: Zero noise at every step and the mean of the final step
        :return: ``(actions, values, chain, means)``: the normalised, unclipped actions ``x_0`` (batch, dim); the values;
            the chain ``x_K, ..., x_1, x_0`` (batch, K + 1, dim), ``x_k`` at index ``K - k``; the mean of every step
            ``mu(x_k, k, s)`` (batch, K, dim), step ``k`` at index ``K - k``, so that ``chain[:, i + 1]`` was drawn
            around ``means[:, i]``
        """
        latent_pi, latent_vf = self._latents(obs)
        values = self.value_net(latent_vf)
        noises = self._noise_for(latent_pi.shape[0], deterministic)
        traced = self.traces.pick(self.traces.recorded_chain)
        if traced is not None:
            inputs, means = traced(latent_pi, noises, self.time_projections())
        else:
            inputs, means = self.chain.record(self._eps_model(latent_pi, obs), noises)
        distribution = self._final_distribution(means[:, -1])
        actions = distribution.get_actions(deterministic=deterministic)
        return actions, values, th.cat([inputs, actions[:, None]], dim=1), means

    def step_stds(self: "_Policy") -> th.Tensor:
        """
        :return: The std each denoising step samples with, shape ``(K, dim)``, step ``k`` at row ``k - 1``: the
            final-step std (learned or ``fixed_std``, floored at ``min_std``) for ``k = 1``, the chain's noise std
            (floored at ``min_step_std``) for ``k >= 2``
        """
        return self.chain.step_stds(self.final_std())

    def denoising_step_means(
        self: "_Policy", obs: PyTorchObs, x_k: th.Tensor, steps: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor]:
        """
        The means ``mu_theta(x_k, k, s)`` of a batch of (observation, ``x_k``, ``k``) pairs with mixed steps, through
        the trained denoiser in one batched call (with gradients), and the values of the observations.

        :param obs: Observations, one per pair
        :param x_k: The steps' inputs, shape ``(batch, dim)``
        :param steps: The steps ``k``, each in ``1..n_finetuned_steps``, shape ``(batch,)``
        :return: ``(values, means)``, shapes ``(batch, 1)`` and ``(batch, dim)``
        """
        latent_pi, latent_vf = self._latents(obs)
        prediction = self.denoiser(x_k, steps, self.denoiser.project_condition(latent_pi))
        means = th.zeros_like(x_k)
        rows = steps[:, None]
        for k in range(1, self.trained_steps + 1):
            # The chain's coefficients are per-step Python floats: each step's rows take their own step's mean.
            means = th.where(rows == k, self.chain.step_mean(x_k, prediction, k), means)
        return self.value_net(latent_vf), means
