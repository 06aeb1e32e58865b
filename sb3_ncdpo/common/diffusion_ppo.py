"""
PPO's clipped update for the algorithms on a diffusion policy, written once: SB3's PPO loop (epochs, minibatches, KL
early stop, gradient clip, logs) and loss, over each algorithm's minibatch loss (NCDPO: the chain replayed from the
stored noise; DPPO: one Gaussian step per (environment step, denoising step) pair).
"""

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.utils import explained_variance
from torch.nn import functional as F

from sb3_ncdpo.common.on_policy_diffusion_algorithm import OnPolicyDiffusionAlgorithm
from sb3_ncdpo.common.train_log import TrainLog
from sb3_ncdpo.common.update_rules import adapted_lr_scale, clip_gradients, parameter_groups, set_learning_rates


class DiffusionPPO(OnPolicyDiffusionAlgorithm):
    """
    :class:`~sb3_ncdpo.common.on_policy_diffusion_algorithm.OnPolicyDiffusionAlgorithm` with PPO's update: a subclass
    implements :meth:`_minibatch_loss` (usually through :meth:`_ppo_loss`) and calls :meth:`_ppo_update` from ``train()``.
    """

    def _minibatch_loss(
        self, rollout_data: Any, minibatch: int, clip_range: float, clip_range_vf: float | None, log: TrainLog
    ) -> tuple[th.Tensor, th.Tensor]:
        """
        :param rollout_data: A minibatch of the rollout buffer
        :param minibatch: Its index in the epoch
        :param clip_range: The clip range at the current progress
        :param clip_range_vf: The value clip range (``None``: no value clipping)
        :param log: Where the minibatch's statistics go
        :return: The loss to minimise and the log-probabilities it used (for the KL early stop, against
            ``rollout_data.old_log_prob``)
        """
        raise NotImplementedError

    def _ppo_update(self) -> tuple[TrainLog, float]:
        """
        SB3's PPO update loop over :meth:`_minibatch_loss`: ``n_epochs`` passes over the rollout buffer, one gradient step
        per minibatch, early stop at ``1.5 * target_kl``; then the logs.

        :return: What the update logged, and the clip range it used
        """
        # Switch to train mode (this affects batch norm / dropout)
        self.policy.set_training_mode(True)
        # Update optimizer learning rate
        self._update_learning_rate(self.policy.optimizer)
        # Compute current clip range (and the value function's, None: no clipping)
        clip_range = self.clip_range(self._current_progress_remaining)  # type: ignore[operator]
        clip_range_vf = None
        if self.clip_range_vf is not None:
            clip_range_vf = self.clip_range_vf(self._current_progress_remaining)  # type: ignore[operator]
        log = TrainLog()
        groups = parameter_groups(self.policy) if self.clip_grad_per_group else {}

        continue_training = True
        # train for n_epochs epochs
        for epoch in range(self.n_epochs):
            log.approx_kl_divs = []
            # Do a complete pass on the rollout buffer
            for minibatch, rollout_data in enumerate(self.rollout_buffer.get(self.batch_size)):
                loss, log_prob = self._minibatch_loss(rollout_data, minibatch, clip_range, clip_range_vf, log)

                # Calculate approximate form of reverse KL Divergence for early stopping
                # see issue #417: https://github.com/DLR-RM/stable-baselines3/issues/417
                # and discussion in PR #419: https://github.com/DLR-RM/stable-baselines3/pull/419
                # and Schulman blog: http://joschu.net/blog/kl-approx.html
                with th.no_grad():
                    log_ratio = log_prob - rollout_data.old_log_prob
                    approx_kl_div = th.mean((th.exp(log_ratio) - 1) - log_ratio).cpu().numpy()
                    log.approx_kl_divs.append(approx_kl_div)

                if self.target_kl is not None and approx_kl_div > 1.5 * self.target_kl:
                    continue_training = False
                    if self.verbose >= 1:
                        print(f"Early stopping at step {epoch} due to reaching max kl: {approx_kl_div:.2f}")
                    break

                # Optimization step
                self.policy.optimizer.zero_grad()
                loss.backward()
                # Clip grad norm
                if groups:
                    grad_norm, group_norms = clip_gradients(groups, self.max_grad_norm)
                    log.group_grad_norms.append(group_norms)
                else:
                    grad_norm = th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                log.grad_norms.append(grad_norm.item())
                self.policy.optimizer.step()

            self._n_updates += 1
            if not continue_training:
                break

        if self.desired_kl is not None:  # the next update's rate, from how far this one moved the policy
            self.lr_scale = adapted_lr_scale(self.lr_scale, float(np.mean(log.approx_kl_divs)), self.desired_kl)
        explained_var = explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten())
        final_std = self.policy.final_std().mean().item() if isinstance(self.action_space, spaces.Box) else None
        log.record(self.logger, loss, explained_var, final_std, self._n_updates, clip_range, clip_range_vf)
        return log, clip_range

    def _update_learning_rate(self, optimizers: list[th.optim.Optimizer] | th.optim.Optimizer) -> None:
        """
        SB3's scheduled learning rate, times the KL-adapted ``lr_scale`` with ``desired_kl`` (logged as SB3 does); the
        critic's group at ``critic_learning_rate`` where one is given (logged as ``train/critic_learning_rate``).
        """
        learning_rate = self.lr_schedule(self._current_progress_remaining)
        if self.desired_kl is not None:
            learning_rate *= self.lr_scale
        self.logger.record("train/learning_rate", learning_rate)
        if self.critic_learning_rate is not None:
            self.logger.record("train/critic_learning_rate", self.critic_learning_rate)
        for optimizer in optimizers if isinstance(optimizers, list) else [optimizers]:
            set_learning_rates(optimizer, learning_rate, self.critic_learning_rate)

    def _normalized(self, advantages: th.Tensor) -> th.Tensor:
        """:return: The advantages normalised over the minibatch, if ``normalize_advantage`` (not for one sample)"""
        # Normalization does not make sense if mini batchsize == 1, see GH issue #325
        if self.normalize_advantage and len(advantages) > 1:
            return (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        return advantages

    def _ppo_loss(
        self,
        log_prob: th.Tensor,
        entropy: th.Tensor | None,
        values: th.Tensor,
        advantages: th.Tensor,
        rollout_data: Any,
        clip_range: float | th.Tensor,
        clip_range_vf: float | None,
        log: TrainLog,
    ) -> th.Tensor:
        """
        PPO's loss on a minibatch: the clipped surrogate, the value loss and the entropy bonus (statistics to ``log``).

        :param log_prob: The log-probabilities under the current policy
        :param entropy: The entropies (``None``: approximated by ``-log_prob``)
        :param values: The values, flat
        :param advantages: The advantages (normalised, and scaled as the algorithm wants)
        :param rollout_data: The minibatch (its ``old_log_prob``, ``old_values``, ``returns``)
        :param clip_range: The clip range, or one per sample
        :param clip_range_vf: The value clip range (``None``: no value clipping)
        :param log: Where the statistics go
        :return: ``policy_loss + ent_coef * entropy_loss + vf_coef * value_loss``
        """
        # ratio between old and new policy, should be one at the first iteration
        ratio = th.exp(log_prob - rollout_data.old_log_prob)

        # clipped surrogate loss
        policy_loss_1 = advantages * ratio
        policy_loss_2 = advantages * th.clamp(ratio, 1 - clip_range, 1 + clip_range)  # type: ignore[arg-type, operator]
        policy_loss = -th.min(policy_loss_1, policy_loss_2).mean()

        # Logging
        log.pg_losses.append(policy_loss.item())
        clip_fraction = th.mean((th.abs(ratio - 1) > clip_range).float()).item()
        log.clip_fractions.append(clip_fraction)

        if clip_range_vf is None:
            # No clipping
            values_pred = values
        else:
            # Clip the difference between old and new value
            # NOTE: this depends on the reward scaling
            values_pred = rollout_data.old_values + th.clamp(values - rollout_data.old_values, -clip_range_vf, clip_range_vf)
        # Value loss using the TD(gae_lambda) target
        value_loss = F.mse_loss(rollout_data.returns, values_pred)
        log.value_losses.append(value_loss.item())

        # Entropy loss favor exploration
        if entropy is None:
            # Approximate entropy when no analytical form
            entropy_loss = -th.mean(-log_prob)
        else:
            entropy_loss = -th.mean(entropy)
        log.entropy_losses.append(entropy_loss.item())

        return policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss
