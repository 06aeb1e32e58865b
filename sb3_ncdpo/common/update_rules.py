"""
Rules of the PPO update that a diffusion policy may need and SB3's PPO does not have: the gradient norm clipped per
parameter group (actor, critic, final std) instead of over all parameters together, a learning rate that follows the
update's KL divergence (as robotics PPO codebases such as rsl_rl adapt it), and a learning rate of the critic's own
(DPPO's fine-tuning trains its critic at 100 times its actor's rate: a fresh critic beside a pre-trained actor).
"""

import torch as th
from stable_baselines3.common.policies import ActorCriticPolicy

from sb3_ncdpo.common.finetune import critic_parameters

#: How far :func:`adapted_lr_scale` moves the learning rate after one update, and its range (times the learning
#: rate that ``learning_rate`` gives at that point of training)
LR_STEP, LR_SCALE_RANGE = 1.5, (1e-2, 1.0)


def check_update_rules(clip_grad_per_group: bool, desired_kl: float | None, critic_learning_rate: float | None = None) -> None:
    """
    :param clip_grad_per_group: Whether the gradient norm is clipped per parameter group
    :param desired_kl: The KL divergence per update that the learning rate aims at (``None``: fixed by the schedule)
    :param critic_learning_rate: The critic's constant learning rate (``None``: the actor's)
    :raises ValueError: naming the invalid argument and its allowed values
    """
    is_rate = isinstance(critic_learning_rate, (int, float)) and not isinstance(critic_learning_rate, bool)
    if critic_learning_rate is not None and not (is_rate and critic_learning_rate > 0):
        raise ValueError(
            f"critic_learning_rate must be a float > 0 (the critic's own constant rate), or None for the actor's "
            f"learning_rate, got {critic_learning_rate!r}"
        )
    if not isinstance(clip_grad_per_group, bool):
        raise ValueError(f"clip_grad_per_group must be a bool, got {clip_grad_per_group!r}")
    is_number = isinstance(desired_kl, (int, float)) and not isinstance(desired_kl, bool)
    if desired_kl is not None and not (is_number and desired_kl > 0):
        raise ValueError(f"desired_kl must be a float > 0, or None to keep the learning rate's schedule, got {desired_kl!r}")


def parameter_groups(policy: ActorCriticPolicy) -> dict[str, list[th.nn.Parameter]]:
    """
    :param policy: An actor-critic policy
    :return: Its trainable parameters in three groups, each parameter in one: ``critic`` (the value network and a
        features extractor of its own), ``std`` (a learned state-independent ``log_std``, if any) and ``actor`` (the
        rest: the observation encoder, the denoiser, and a features extractor shared with the critic)
    """
    critic = critic_parameters(policy)
    log_std = getattr(policy, "log_std", None)
    std = [log_std] if isinstance(log_std, th.nn.Parameter) and log_std.requires_grad else []
    taken = {id(p) for p in critic + std}
    actor = [p for p in policy.parameters() if p.requires_grad and id(p) not in taken]
    return {"actor": actor, "critic": critic, "std": std}


def clip_gradients(groups: dict[str, list[th.nn.Parameter]], max_grad_norm: float) -> tuple[th.Tensor, dict[str, float]]:
    """
    Clip each group's gradient norm to ``max_grad_norm`` separately, so that one group's large gradient (usually the
    critic's) does not scale down the others' as one norm over all parameters does.

    :param groups: The parameter groups (:func:`parameter_groups`)
    :param max_grad_norm: The largest gradient norm of a group
    :return: The norm of all the gradients before clipping (what SB3's clip returns) and each group's
    """
    norms = {name: th.nn.utils.clip_grad_norm_(params, max_grad_norm) for name, params in groups.items() if params}
    total = th.linalg.vector_norm(th.stack(list(norms.values())))
    return total, {name: norm.item() for name, norm in norms.items()}


def adapted_lr_scale(scale: float, approx_kl: float, desired_kl: float) -> float:
    """
    rsl_rl's adaptive rule on a multiplier of the learning rate, applied once per update (rsl_rl applies it per
    minibatch, of which it has a handful; PPO's usual 10 epochs of many minibatches would drive it to its floor): after
    an update whose approximate KL divergence exceeds twice ``desired_kl`` the learning rate is divided by
    :data:`LR_STEP`, below half of it multiplied, within :data:`LR_SCALE_RANGE` of the scheduled rate (so it never
    exceeds the rate the user gave).

    :param scale: The current multiplier
    :param approx_kl: The update's approximate KL divergence between the rollout's policy and the updated one (the
        mean over its last epoch's minibatches, which SB3 logs as ``train/approx_kl``)
    :param desired_kl: The KL divergence aimed at
    :return: The new multiplier
    """
    low, high = LR_SCALE_RANGE
    if approx_kl > 2 * desired_kl:
        return max(scale / LR_STEP, low)
    if approx_kl < desired_kl / 2:
        return min(scale * LR_STEP, high)
    return scale


#: The name of the optimizer's parameter group of the critic, where it has a learning rate of its own
CRITIC_GROUP = "critic"


def critic_group_optimizer(policy: ActorCriticPolicy, learning_rate: float, critic_learning_rate: float) -> th.optim.Optimizer:
    """
    :param policy: An actor-critic policy (its ``optimizer_class`` and ``optimizer_kwargs`` are used)
    :param learning_rate: The rate of every parameter but the critic's
    :param critic_learning_rate: The critic's rate (its group is named :data:`CRITIC_GROUP`)
    :return: A new optimizer of the policy's class with two parameter groups: the critic's and all the others
    """
    critic = critic_parameters(policy)
    taken = {id(p) for p in critic}
    others = [p for p in policy.parameters() if id(p) not in taken]
    groups = [{"params": others}, {"params": critic, "lr": critic_learning_rate, "name": CRITIC_GROUP}]
    return policy.optimizer_class(groups, lr=learning_rate, **policy.optimizer_kwargs)  # type: ignore[call-arg, arg-type]


def set_learning_rates(optimizer: th.optim.Optimizer, learning_rate: float, critic_learning_rate: float | None) -> None:
    """
    :param optimizer: An optimizer (made by :func:`critic_group_optimizer` or not)
    :param learning_rate: The rate of every group but the critic's
    :param critic_learning_rate: The critic group's rate (``None``: ``learning_rate``)
    """
    for group in optimizer.param_groups:
        is_critic = group.get("name") == CRITIC_GROUP and critic_learning_rate is not None
        group["lr"] = critic_learning_rate if is_critic else learning_rate
