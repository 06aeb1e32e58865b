"""
Partial fine-tuning (DPPO's ``n_finetuned_steps``): the denoising steps ``k > K'`` run a frozen copy of the actor,
the last ``K'`` the trained one.
"""

import copy
from typing import Protocol

import torch as th
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, MlpExtractor
from stable_baselines3.common.type_aliases import PyTorchObs
from torch import nn

from sb3_ncdpo.common.diffusion import DenoiserMLP, DenoisingChain, EpsModel


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
    def mlp_extractor(self) -> MlpExtractor: ...

    @property
    def pi_features_extractor(self) -> BaseFeaturesExtractor: ...

    @property
    def frozen_actor(self) -> FrozenActor | None: ...

    @property
    def n_finetuned_steps(self) -> int | None: ...

    def time_projections(self) -> th.Tensor: ...


class FrozenStepsMixin:
    """The policy's partial fine-tuning: its frozen copy of the actor and the chain's prediction at every step."""

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
