"""
Fine-tuning helpers shared by the algorithms on :class:`~sb3_ncdpo.common.policies.DiffusionActorCriticPolicy`:
their argument checks, critic warm-up with the actor frozen, and the frozen reference policy of the BC regulariser.
"""

import copy
from typing import TypeVar

import numpy as np
import torch as th
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.policies import ActorCriticPolicy
from torch.nn import functional as F

PolicyT = TypeVar("PolicyT", bound=ActorCriticPolicy)


def check_finetune_args(critic_warmup_iters: int, bc_coef: float) -> None:
    """
    :param critic_warmup_iters: Iterations with the actor frozen
    :param bc_coef: Weight of the BC regulariser
    :raises ValueError: naming the invalid argument
    """
    if not isinstance(critic_warmup_iters, int) or isinstance(critic_warmup_iters, bool) or critic_warmup_iters < 0:
        raise ValueError(f"critic_warmup_iters must be an int >= 0, got {critic_warmup_iters!r}")
    if not isinstance(bc_coef, (int, float)) or isinstance(bc_coef, bool) or not bc_coef >= 0:
        raise ValueError(f"bc_coef must be a float >= 0, got {bc_coef!r}")


def critic_parameters(policy: ActorCriticPolicy) -> list[th.nn.Parameter]:
    """
    :param policy: An actor-critic policy
    :return: The parameters that only the critic uses (a features extractor shared with the actor is excluded, so that
        training them leaves every action unchanged)
    """
    modules: list[th.nn.Module] = [policy.mlp_extractor.value_net, policy.value_net]
    if not policy.share_features_extractor:
        modules.append(policy.vf_features_extractor)
    return [p for module in modules for p in module.parameters() if p.requires_grad]


def train_critic_only(
    policy: ActorCriticPolicy,
    rollout_buffer: RolloutBuffer,
    n_epochs: int,
    batch_size: int,
    max_grad_norm: float,
    logger: Logger,
) -> None:
    """
    One critic warm-up iteration: ``n_epochs`` passes of value regression on the rollout's returns, with only the
    critic's parameters updated (the actor, the final-step std and a shared features extractor stay exactly as they
    are). No pass through the denoising chain, so it costs a fraction of a full update.

    :param policy: The policy (its optimizer is used, restricted to the critic's gradients)
    :param rollout_buffer: The filled rollout buffer
    :param n_epochs: Passes over the buffer
    :param batch_size: Minibatch size
    :param max_grad_norm: Gradient-norm clip
    :param logger: Where ``train/value_loss`` and ``train/critic_warmup`` go
    """
    policy.set_training_mode(True)
    params = critic_parameters(policy)
    critic = {id(p) for p in params}
    others = [p for p in policy.parameters() if id(p) not in critic]
    losses = []
    for _ in range(n_epochs):
        for data in rollout_buffer.get(batch_size):
            value_loss = F.mse_loss(data.returns, policy.predict_values(data.observations).flatten())
            policy.optimizer.zero_grad()
            value_loss.backward()
            for p in others:
                p.grad = None  # Adam skips parameters without a gradient: they do not move at all
            th.nn.utils.clip_grad_norm_(params, max_grad_norm)
            policy.optimizer.step()
            losses.append(value_loss.item())
    logger.record("train/value_loss", np.mean(losses))
    logger.record("train/critic_warmup", 1)


def frozen_copy(policy: PolicyT) -> PolicyT:
    """:return: A copy of ``policy`` without gradients, in evaluation mode (the reference of the BC regulariser)"""
    reference = copy.deepcopy(policy)
    reference.set_training_mode(False)
    for p in reference.parameters():
        p.requires_grad_(False)
    return reference
