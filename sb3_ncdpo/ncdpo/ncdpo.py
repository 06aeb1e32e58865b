import math
from typing import Any

import torch as th
from stable_baselines3.common.distributions import Distribution, kl_divergence
from stable_baselines3.common.type_aliases import PyTorchObs

from sb3_ncdpo.common.diffusion_ppo import DiffusionPPO
from sb3_ncdpo.common.policy_settings import SUPPORTED_ACTION_SPACES
from sb3_ncdpo.common.train_log import TrainLog
from sb3_ncdpo.ncdpo.buffers import NoiseDictRolloutBuffer, NoiseRolloutBuffer


class NCDPO(DiffusionPPO):
    """
    Noise-Conditioned Diffusion Policy Optimisation (NCDPO): PPO for diffusion policies, with back-propagation
    through every denoising step.

    Paper: "Fine-tuning Diffusion Policies with Backpropagation Through Diffusion Timesteps",
    Yang et al., https://arxiv.org/abs/2505.10482 (reconstructed: no official code is public).

    During rollouts the noise ``xi = (x_K, z_K, ..., z_2)`` of every action is stored in the rollout buffer. Given
    ``xi``, the denoising chain is a deterministic function of the parameters and the action has the tractable
    log-probability of the final Gaussian step; ``train()`` recomputes the chain from the stored noise with autograd,
    so PPO's clipped ratio back-propagates through all K steps. The critic is ``V(s)``.

    The constructor takes PPO's arguments with PPO's meaning (gSDE excepted); the diffusion settings are policy
    keyword arguments (see :class:`~sb3_ncdpo.common.policies.DiffusionActorCriticPolicy`). Action spaces: a bounded
    ``Box``, ``Discrete`` or ``MultiDiscrete`` (the chain then denoises logits and the last step is categorical).

    :param policy: The policy model to use (MlpDiffusionPolicy, CnnDiffusionPolicy, MultiInputDiffusionPolicy, or
        their aliases MlpPolicy, CnnPolicy, MultiInputPolicy)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param learning_rate: The learning rate, it can be a function of the current progress remaining (from 1 to 0)
    :param n_steps: The number of steps to run for each environment per update
        (i.e. rollout buffer size is n_steps * n_envs where n_envs is number of environment copies running in parallel)
    :param batch_size: Minibatch size (a larger one makes each minibatch the whole rollout, as in SB3's PPO)
    :param n_epochs: Number of epoch when optimizing the surrogate loss
    :param gamma: Discount factor
    :param gae_lambda: Factor for trade-off of bias vs variance for Generalized Advantage Estimator
    :param clip_range: Clipping parameter, it can be a function of the current progress remaining (from 1 to 0)
    :param clip_range_vf: Clipping parameter for the value function, it can be a function of the current progress
        remaining (from 1 to 0). If None (default), no clipping will be done on the value function.
    :param normalize_advantage: Whether to normalize or not the advantage
    :param ent_coef: Entropy coefficient for the loss calculation (the entropy is that of the final step given the
        noise: the Gaussian's, or the categorical's for discrete actions)
    :param vf_coef: Value function coefficient for the loss calculation
    :param max_grad_norm: The maximum value for the gradient clipping
    :param rollout_buffer_class: Rollout buffer class to use. If ``None``, it will be automatically selected
        (:class:`NoiseRolloutBuffer` or :class:`NoiseDictRolloutBuffer`); a custom one must accept ``noise_shape``
    :param rollout_buffer_kwargs: Keyword arguments to pass to the rollout buffer on creation
    :param target_kl: Limit the KL divergence between updates (None: no limit)
    :param stats_window_size: Window size for the rollout logging, specifying the number of episodes to average
        the reported success rate, mean episode length, and mean reward over
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation
    :param verbose: Verbosity level: 0 for no output, 1 for info messages, 2 for debug messages
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run. "auto" uses the GPU if possible
    :param pretrained: Folder written by ``sb3-ncdpo pretrain`` to start from: the policy is rebuilt with its saved
        settings (``policy_kwargs`` may only override the fine-tuning settings, e.g. ``fixed_std``), its weights are
        loaded (all but the final-step std) and its observation normalisation is installed, frozen, in the env
        (:func:`~sb3_ncdpo.common.pretrained.init_from_pretrained`)
    :param critic_warmup_iters: Number of first iterations (rollout + update) in which only the critic is trained,
        the actor frozen (a pre-trained actor with an untrained critic would otherwise follow noisy advantages)
    :param bc_coef: Weight of the BC regulariser: the KL between the final-step Gaussians of the policy and of a
        frozen copy of the initial (pre-trained) policy given the same stored noise, on the rollout's states
    :param clip_grad_per_group: Clip the gradient norm to ``max_grad_norm`` per parameter group (actor, critic, final
        std; default) instead of over all parameters together (SB3's, ``False``): the critic's gradient, often 100 times
        the actor's, then no longer scales the actor's step down by a factor that changes from minibatch to minibatch
        (measured: docs/benchmarks/defaults.md, "Action bounds"; logged: ``train/grad_norm_<group>``)
    :param desired_kl: Adapt the learning rate to the updates' KL divergence (rsl_rl's rule, once per update): after
        an update whose ``train/approx_kl`` exceeds ``2 * desired_kl`` the next one's rate is divided by 1.5, below
        ``desired_kl / 2`` multiplied by 1.5, between 1/100 of the scheduled rate and the scheduled rate itself.
        ``None``: the schedule alone
    :param chunk_reward: With action chunks (the policy's ``n_action_steps`` > 1), how the rewards of a decision's env
        steps make its reward: ``"discounted"`` (``sum_i gamma^i r_i``, and ``gamma^n_action_steps`` per decision: the
        return of the step-by-step MDP, default) or ``"sum"`` (DPPO's plain sum, and ``gamma`` per decision). A rollout
        then holds ``ceil(n_steps / n_action_steps)`` decisions per env, ``batch_size`` counts decisions, and
        ``num_timesteps`` env steps (docs/guide/chunks.md)
    :param critic_learning_rate: The critic's own learning rate, constant (the value network and a features extractor
        of its own; one shared with the actor follows ``learning_rate``), logged as ``train/critic_learning_rate``:
        when fine-tuning, a fresh critic beside a pre-trained actor (DPPO trains its critic at 100 times its actor's
        rate). ``None`` (default): every parameter at ``learning_rate``, as SB3's PPO
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    :param use_sde: PPO's gSDE switch, for PPO's argument list: must be False (a diffusion policy explores through its
        denoising noise)
    :param sde_sample_freq: PPO's gSDE setting, ignored
    """

    rollout_buffer_classes = (NoiseRolloutBuffer, NoiseDictRolloutBuffer)
    supported_action_spaces = SUPPORTED_ACTION_SPACES
    rollout_buffer: NoiseRolloutBuffer | NoiseDictRolloutBuffer  # type: ignore[assignment]
    _step_grads: dict[int, th.Tensor]

    def _rollout_buffer_kwargs(self) -> dict[str, Any]:
        return {"noise_shape": self.policy.noise_shape}

    def _policy_step(self, obs_tensor: PyTorchObs) -> tuple[th.Tensor, th.Tensor, th.Tensor, dict[str, th.Tensor]]:
        # The rollout stores the noise that made each action: train() replays it.
        actions, values, log_probs, noises = self.policy.forward_with_noise(obs_tensor)
        return actions, values, log_probs, {"noises": noises}

    def train(self) -> None:
        """
        Update policy using the currently gathered rollout buffer: PPO's clipped objective, with the log-probabilities
        recomputed through the whole denoising chain from the stored noise.
        """
        if self._critic_warmup_step():
            return
        # Squared norm of d(loss)/d(eps prediction) at the first (k = K) and last (k = 1) denoising steps, kept on the
        # policy's device until the end of train() so that the hook adds no device synchronisation. Measured on the
        # first minibatch of each epoch only: the hooks cost ~7% of an update when registered on every minibatch.
        n_steps = self.policy.chain.n_steps
        self._step_grads = {1: th.zeros((), device=self.device), n_steps: th.zeros((), device=self.device)}
        log, _ = self._ppo_update()
        if log.grad_norms:
            # Gradient that reaches the first denoising step (k = K) relative to the last one (k = 1): a value near
            # 0 means the early steps get almost no learning signal through the chain.
            first, last = math.sqrt(self._step_grads[n_steps].item()), math.sqrt(self._step_grads[1].item())
            self.logger.record("train/eps_grad_norm_first_step", first)
            self.logger.record("train/eps_grad_ratio_first_last", first / last if last > 0 else float("nan"))

    def _minibatch_loss(
        self, rollout_data: Any, minibatch: int, clip_range: float, clip_range_vf: float | None, log: TrainLog
    ) -> tuple[th.Tensor, th.Tensor]:
        # The chain recomputed from the stored noise, with autograd through every step: log pi(a | s, noise).
        values, distribution = self.policy.evaluate_distribution(
            rollout_data.observations,
            rollout_data.noises,
            eps_grad_hook=self._record_step_grad if minibatch == 0 else None,
        )
        log_prob = self.policy.final_log_prob(distribution, rollout_data.actions)
        entropy = distribution.entropy()
        values = values.flatten()
        advantages = self._normalized(rollout_data.advantages)
        loss = self._ppo_loss(log_prob, entropy, values, advantages, rollout_data, clip_range, clip_range_vf, log)
        loss = loss + self._bc_regulariser(distribution, rollout_data.observations, rollout_data.noises, log)
        return loss, log_prob

    def _record_step_grad(self, k: int, grad: th.Tensor) -> None:
        """Gradient hook of the prediction at step ``k``: its squared norm added to the first or last step's."""
        if k in self._step_grads:
            self._step_grads[k] = self._step_grads[k] + grad.detach().pow(2).sum()

    def _bc_regulariser(
        self, distribution: Distribution, observations: PyTorchObs, noises: th.Tensor, log: TrainLog
    ) -> th.Tensor:
        """
        :return: ``bc_coef`` times the mean KL between the final steps of the policy and of the reference
            policy given the stored noise (0 when ``bc_coef`` is 0); the KL is logged
        """
        if self.bc_coef == 0:
            return th.zeros((), device=self.device)
        with th.no_grad():
            reference = self.reference_policy.get_distribution(observations, noises)
        kl = conditional_kl(distribution, reference).mean()
        log.bc_losses.append(kl.item())
        return self.bc_coef * kl


def conditional_kl(distribution: Distribution, reference: Distribution) -> th.Tensor:
    """
    ``KL(pi_theta(.|s, xi) || pi_ref(.|s, xi))`` of the final steps given the same stored noise (Gaussians summed over
    action dimensions, an action chunk's executed ones only with ``chunk_log_prob="executed"``; categoricals summed over
    sub-spaces): per sample, an upper bound of the KL between the marginal
    policies (joint convexity of the KL).

    :param distribution: The current policy's final step
    :param reference: The reference policy's final step (no gradient)
    :return: Per-sample KL, shape ``(batch,)``
    """
    kl = kl_divergence(distribution, reference)
    scored = getattr(distribution, "scored_dims", None)
    if scored is not None:  # an action chunk's executed actions, those its log-probability covers
        kl = kl[..., :scored]
    return kl.sum(dim=-1) if kl.ndim > 1 else kl
