"""What one update of an on-policy diffusion algorithm logs: SB3's PPO keys, plus the final std, gradient norms, BC KL."""

from dataclasses import dataclass, field

import numpy as np
import torch as th
from stable_baselines3.common.logger import Logger


@dataclass
class TrainLog:
    """What one ``train()`` call collects for the logger, minibatch by minibatch (SB3's PPO keys)."""

    entropy_losses: list[float] = field(default_factory=list)
    pg_losses: list[float] = field(default_factory=list)
    value_losses: list[float] = field(default_factory=list)
    clip_fractions: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)
    bc_losses: list[float] = field(default_factory=list)
    #: Each minibatch's gradient norm per parameter group, before clipping (with ``clip_grad_per_group``)
    group_grad_norms: list[dict[str, float]] = field(default_factory=list)
    #: The approximate KLs of the last epoch only (SB3's PPO logs those)
    approx_kl_divs: list[np.ndarray] = field(default_factory=list)

    def record(
        self,
        logger: Logger,
        loss: th.Tensor,
        explained_var: float,
        final_std: float | None,
        n_updates: int,
        clip_range: float,
        clip_range_vf: float | None,
    ) -> None:
        """
        Log what SB3's PPO logs after an update, the final-step std (Box), and the gradient norm and BC KL (if any).

        :param logger: The algorithm's logger
        :param loss: The last minibatch's loss
        :param explained_var: Explained variance of the rollout's returns by its values
        :param final_std: Mean final-step std (``None``: no final Gaussian)
        :param n_updates: The algorithm's update count
        :param clip_range: The clip range of the update
        :param clip_range_vf: The value clip range (``None``: no value clipping)
        """
        logger.record("train/entropy_loss", np.mean(self.entropy_losses))
        logger.record("train/policy_gradient_loss", np.mean(self.pg_losses))
        logger.record("train/value_loss", np.mean(self.value_losses))
        logger.record("train/approx_kl", np.mean(self.approx_kl_divs))
        logger.record("train/clip_fraction", np.mean(self.clip_fractions))
        logger.record("train/loss", loss.item())
        logger.record("train/explained_variance", explained_var)
        if final_std is not None:
            logger.record("train/std", final_std)
        if self.grad_norms:
            logger.record("train/grad_norm", np.mean(self.grad_norms))
        for group in dict.fromkeys(name for norms in self.group_grad_norms for name in norms):
            logger.record(f"train/grad_norm_{group}", np.mean([norms[group] for norms in self.group_grad_norms]))
        if self.bc_losses:
            logger.record("train/bc_kl", np.mean(self.bc_losses))
        logger.record("train/n_updates", n_updates, exclude="tensorboard")
        logger.record("train/clip_range", clip_range)
        if clip_range_vf is not None:
            logger.record("train/clip_range_vf", clip_range_vf)
