import math
import warnings
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import FloatSchedule, explained_variance, obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv
from torch.nn import functional as F

from sb3_ncdpo.common.buffers import NoiseDictRolloutBuffer, NoiseRolloutBuffer
from sb3_ncdpo.common.finetunable import FinetunableAlgorithm
from sb3_ncdpo.common.finetune import check_finetune_args, conditional_kl
from sb3_ncdpo.common.policies import (
    SUPPORTED_ACTION_SPACES,
    DiffusionActorCriticPolicy,
    check_action_space,
    check_policy_kwargs,
)
from sb3_ncdpo.ncdpo.policies import CnnPolicy, MlpPolicy, MultiInputPolicy
from sb3_ncdpo.pretrain.pretrained import pretrained_policy_kwargs

SelfNCDPO = TypeVar("SelfNCDPO", bound="NCDPO")


class NCDPO(FinetunableAlgorithm):
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
    :param batch_size: Minibatch size (at most ``n_steps * n_envs``)
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
        (:func:`~sb3_ncdpo.pretrain.pretrained.init_from_pretrained`)
    :param critic_warmup_iters: Number of first iterations (rollout + update) in which only the critic is trained,
        the actor frozen (a pre-trained actor with an untrained critic would otherwise follow noisy advantages)
    :param bc_coef: Weight of the BC regulariser: the KL between the final-step Gaussians of the policy and of a
        frozen copy of the initial (pre-trained) policy given the same stored noise, on the rollout's states
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpDiffusionPolicy": MlpPolicy,
        "CnnDiffusionPolicy": CnnPolicy,
        "MultiInputDiffusionPolicy": MultiInputPolicy,
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }
    policy: DiffusionActorCriticPolicy
    rollout_buffer: NoiseRolloutBuffer | NoiseDictRolloutBuffer  # type: ignore[assignment]

    def __init__(
        self,
        policy: str | type[DiffusionActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-4,
        n_steps: int = 2048,
        batch_size: int = 64,
        n_epochs: int = 10,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        clip_range: float | Schedule = 0.2,
        clip_range_vf: float | Schedule | None = None,
        normalize_advantage: bool = True,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        rollout_buffer_class: type[RolloutBuffer] | None = None,
        rollout_buffer_kwargs: dict[str, Any] | None = None,
        target_kl: float | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        pretrained: str | None = None,
        critic_warmup_iters: int = 0,
        bc_coef: float = 0.0,
        _init_setup_model: bool = True,
    ):
        # Everything that can be checked without the environment is checked before the environment is built.
        check_finetune_args(critic_warmup_iters, bc_coef)
        if pretrained is not None:
            policy_kwargs = pretrained_policy_kwargs(pretrained, policy_kwargs)
        policy_class = self._get_policy_from_name(policy) if isinstance(policy, str) else policy
        if not (isinstance(policy_class, type) and issubclass(policy_class, DiffusionActorCriticPolicy)):
            raise ValueError(
                f"policy must be a DiffusionActorCriticPolicy (or one of {sorted(self.policy_aliases)}), got {policy!r}; "
                "when loading a file, this means it was not saved by NCDPO"
            )
        check_policy_kwargs(policy_kwargs or {})
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if normalize_advantage and batch_size == 1:
            raise ValueError("batch_size must be > 1 when normalize_advantage=True (the advantage std of one sample is 0)")

        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            gamma=gamma,
            gae_lambda=gae_lambda,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            use_sde=False,
            sde_sample_freq=-1,
            rollout_buffer_class=rollout_buffer_class,
            rollout_buffer_kwargs=rollout_buffer_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            device=device,
            seed=seed,
            _init_setup_model=False,
            supported_action_spaces=SUPPORTED_ACTION_SPACES,
        )

        if self.env is not None:
            self._check_batch_size(batch_size, normalize_advantage)
        self.batch_size = batch_size
        self.n_epochs = n_epochs
        self.clip_range = clip_range
        self.clip_range_vf = clip_range_vf
        self.normalize_advantage = normalize_advantage
        self.target_kl = target_kl
        self.pretrained = pretrained
        self.critic_warmup_iters = critic_warmup_iters
        self.bc_coef = bc_coef
        self._n_iterations_trained = 0

        if _init_setup_model:
            self._setup_model()
            self._load_pretrained()

    @staticmethod
    def _wrap_env(env: GymEnv, verbose: int = 0, monitor_wrapper: bool = True) -> VecEnv:
        # SB3 calls this right after making the env (and from set_env): the action space is checked before anything
        # else is built, with a ValueError that names the supported spaces (SB3's own check is an assertion).
        check_action_space(env.action_space)
        return OnPolicyAlgorithm._wrap_env(env, verbose, monitor_wrapper)

    def _check_batch_size(self, batch_size: int, normalize_advantage: bool) -> None:
        assert self.env is not None
        buffer_size = self.env.num_envs * self.n_steps
        if normalize_advantage and buffer_size < 2:
            raise ValueError(f"n_steps * n_envs must be > 1 with normalize_advantage=True, got {self.n_steps} * {self.n_envs}")
        if batch_size > buffer_size:
            raise ValueError(
                f"batch_size={batch_size} is larger than the rollout buffer (n_steps * n_envs = {self.n_steps} * "
                f"{self.env.num_envs} = {buffer_size}): use batch_size <= {buffer_size}"
            )
        if buffer_size % batch_size > 0:
            warnings.warn(
                f"batch_size={batch_size} does not divide the rollout buffer size n_steps * n_envs = {buffer_size}: "
                f"every epoch ends with a truncated mini-batch of {buffer_size % batch_size}"
            )

    def _setup_model(self) -> None:
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        # The policy is built before the buffer because the noise shape comes from the policy.
        self.policy = self.policy_class(  # type: ignore[assignment]
            self.observation_space, self.action_space, self.lr_schedule, **self.policy_kwargs
        )
        self.policy = self.policy.to(self.device)
        self._set_up_reference_policy()

        if self.rollout_buffer_class is None:
            is_dict = isinstance(self.observation_space, spaces.Dict)
            self.rollout_buffer_class = NoiseDictRolloutBuffer if is_dict else NoiseRolloutBuffer
        self.rollout_buffer = self.rollout_buffer_class(  # type: ignore[assignment, call-arg]
            self.n_steps,
            self.observation_space,  # type: ignore[arg-type]
            self.action_space,
            device=self.device,
            gamma=self.gamma,
            gae_lambda=self.gae_lambda,
            n_envs=self.n_envs,
            noise_shape=self.policy.noise_shape,
            **self.rollout_buffer_kwargs,
        )

        self.clip_range = FloatSchedule(self.clip_range)
        if self.clip_range_vf is not None:
            if isinstance(self.clip_range_vf, (float, int)) and self.clip_range_vf <= 0:
                raise ValueError(f"clip_range_vf must be > 0, or None to deactivate value clipping, got {self.clip_range_vf}")
            self.clip_range_vf = FloatSchedule(self.clip_range_vf)

    def collect_rollouts(
        self,
        env: VecEnv,
        callback: BaseCallback,
        rollout_buffer: RolloutBuffer,
        n_rollout_steps: int,
    ) -> bool:
        """
        Collect experiences using the current policy and fill the rollout buffer, storing the denoising noise of
        every action along with SB3's fields. Same loop as SB3's ``OnPolicyAlgorithm.collect_rollouts`` (and the same
        local names, for callbacks) except for the policy call and ``add``.

        :param env: The training environment
        :param callback: Callback that will be called at each step (and at the beginning and end of the rollout)
        :param rollout_buffer: Buffer to fill with rollouts (a noise rollout buffer)
        :param n_rollout_steps: Number of experiences to collect per environment
        :return: True if function returned with at least `n_rollout_steps` collected, False if callback terminated
            rollout prematurely.
        """
        assert isinstance(rollout_buffer, (NoiseRolloutBuffer, NoiseDictRolloutBuffer)), "NCDPO needs a noise buffer"
        assert self._last_obs is not None, "No previous observation was provided"
        # Switch to eval mode (this affects batch norm / dropout)
        self.policy.set_training_mode(False)

        n_steps = 0
        rollout_buffer.reset()
        callback.on_rollout_start()

        while n_steps < n_rollout_steps:
            with th.no_grad():
                # Convert to pytorch tensor or to TensorDict
                obs_tensor = obs_as_tensor(self._last_obs, self.device)  # type: ignore[arg-type]
                actions_tensor, values, log_probs, noises = self.policy.forward_with_noise(obs_tensor)
            actions = actions_tensor.cpu().numpy()

            clipped_actions = actions
            if isinstance(self.action_space, spaces.Box):
                # The policy acts in [-1, 1]: clip the Gaussian sample, then map it to the Box bounds
                clipped_actions = self.policy.unscale_action(np.clip(actions, -1.0, 1.0))

            new_obs, rewards, dones, infos = env.step(clipped_actions)

            self.num_timesteps += env.num_envs

            # Give access to local variables
            callback.update_locals(locals())
            if not callback.on_step():
                return False

            self._update_info_buffer(infos, dones)
            n_steps += 1

            # Handle timeout by bootstrapping with value function
            # see GitHub issue #633
            for idx, done in enumerate(dones):
                if (
                    done
                    and infos[idx].get("terminal_observation") is not None
                    and infos[idx].get("TimeLimit.truncated", False)
                ):
                    terminal_obs = self.policy.obs_to_tensor(infos[idx]["terminal_observation"])[0]
                    with th.no_grad():
                        terminal_value = self.policy.predict_values(terminal_obs)[0]  # type: ignore[arg-type]
                    rewards[idx] += self.gamma * terminal_value

            rollout_buffer.add(
                self._last_obs,  # type: ignore[arg-type]
                actions,
                rewards,
                self._last_episode_starts,  # type: ignore[arg-type]
                values,
                log_probs,
                noises=noises,
            )
            self._last_obs = new_obs  # type: ignore[assignment]
            self._last_episode_starts = dones

        with th.no_grad():
            # Compute value for the last timestep
            values = self.policy.predict_values(obs_as_tensor(new_obs, self.device))  # type: ignore[arg-type]

        rollout_buffer.compute_returns_and_advantage(last_values=values, dones=dones)

        callback.update_locals(locals())

        callback.on_rollout_end()

        return True

    def train(self) -> None:
        """
        Update policy using the currently gathered rollout buffer: PPO's clipped objective, with the log-probabilities
        recomputed through the whole denoising chain from the stored noise.
        """
        if self._critic_warmup_step():
            return
        # Switch to train mode (this affects batch norm / dropout)
        self.policy.set_training_mode(True)
        # Update optimizer learning rate
        self._update_learning_rate(self.policy.optimizer)
        # Compute current clip range
        clip_range = self.clip_range(self._current_progress_remaining)  # type: ignore[operator]
        # Optional: clip range for the value function
        if self.clip_range_vf is not None:
            clip_range_vf = self.clip_range_vf(self._current_progress_remaining)  # type: ignore[operator]

        entropy_losses = []
        pg_losses, value_losses = [], []
        clip_fractions = []
        grad_norms: list[float] = []
        bc_losses: list[float] = []
        # Squared norm of d(loss)/d(eps prediction) at the first (k = K) and last (k = 1) denoising steps, kept on the
        # policy's device until the end of train() so that the hook adds no device synchronisation. Measured on the
        # first minibatch of each epoch only: the hooks cost ~7% of an update when registered on every minibatch.
        step_grads = {1: th.zeros((), device=self.device), self.policy.chain.n_steps: th.zeros((), device=self.device)}

        def record_step_grad(k: int, grad: th.Tensor) -> None:
            if k in step_grads:
                step_grads[k] = step_grads[k] + grad.detach().pow(2).sum()

        continue_training = True
        # train for n_epochs epochs
        for epoch in range(self.n_epochs):
            approx_kl_divs = []
            # Do a complete pass on the rollout buffer
            for minibatch, rollout_data in enumerate(self.rollout_buffer.get(self.batch_size)):
                values, distribution = self.policy.evaluate_distribution(
                    rollout_data.observations,
                    rollout_data.noises,
                    eps_grad_hook=record_step_grad if minibatch == 0 else None,
                )
                log_prob = self.policy.final_log_prob(distribution, rollout_data.actions)
                entropy = distribution.entropy()
                values = values.flatten()
                # Normalize advantage
                advantages = rollout_data.advantages
                # Normalization does not make sense if mini batchsize == 1, see GH issue #325
                if self.normalize_advantage and len(advantages) > 1:
                    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

                # ratio between old and new policy (same noise), should be one at the first iteration
                ratio = th.exp(log_prob - rollout_data.old_log_prob)

                # clipped surrogate loss
                policy_loss_1 = advantages * ratio
                policy_loss_2 = advantages * th.clamp(ratio, 1 - clip_range, 1 + clip_range)
                policy_loss = -th.min(policy_loss_1, policy_loss_2).mean()

                # Logging
                pg_losses.append(policy_loss.item())
                clip_fraction = th.mean((th.abs(ratio - 1) > clip_range).float()).item()
                clip_fractions.append(clip_fraction)

                if self.clip_range_vf is None:
                    # No clipping
                    values_pred = values
                else:
                    # Clip the difference between old and new value
                    # NOTE: this depends on the reward scaling
                    values_pred = rollout_data.old_values + th.clamp(
                        values - rollout_data.old_values, -clip_range_vf, clip_range_vf
                    )
                # Value loss using the TD(gae_lambda) target
                value_loss = F.mse_loss(rollout_data.returns, values_pred)
                value_losses.append(value_loss.item())

                # Entropy loss favor exploration
                if entropy is None:
                    # Approximate entropy when no analytical form
                    entropy_loss = -th.mean(-log_prob)
                else:
                    entropy_loss = -th.mean(entropy)

                entropy_losses.append(entropy_loss.item())

                loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss
                loss = loss + self._bc_regulariser(distribution, rollout_data, bc_losses)

                # Calculate approximate form of reverse KL Divergence for early stopping
                # see issue #417: https://github.com/DLR-RM/stable-baselines3/issues/417
                # and discussion in PR #419: https://github.com/DLR-RM/stable-baselines3/pull/419
                # and Schulman blog: http://joschu.net/blog/kl-approx.html
                with th.no_grad():
                    log_ratio = log_prob - rollout_data.old_log_prob
                    approx_kl_div = th.mean((th.exp(log_ratio) - 1) - log_ratio).cpu().numpy()
                    approx_kl_divs.append(approx_kl_div)

                if self.target_kl is not None and approx_kl_div > 1.5 * self.target_kl:
                    continue_training = False
                    if self.verbose >= 1:
                        print(f"Early stopping at step {epoch} due to reaching max kl: {approx_kl_div:.2f}")
                    break

                # Optimization step
                self.policy.optimizer.zero_grad()
                loss.backward()
                # Clip grad norm
                grad_norm = th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                grad_norms.append(grad_norm.item())
                self.policy.optimizer.step()

            self._n_updates += 1
            if not continue_training:
                break

        explained_var = explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten())

        # Logs
        self.logger.record("train/entropy_loss", np.mean(entropy_losses))
        self.logger.record("train/policy_gradient_loss", np.mean(pg_losses))
        self.logger.record("train/value_loss", np.mean(value_losses))
        self.logger.record("train/approx_kl", np.mean(approx_kl_divs))
        self.logger.record("train/clip_fraction", np.mean(clip_fractions))
        self.logger.record("train/loss", loss.item())
        self.logger.record("train/explained_variance", explained_var)
        self._record_bc(bc_losses)
        self._record_chain_logs(grad_norms, step_grads)
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/clip_range", clip_range)
        if self.clip_range_vf is not None:
            self.logger.record("train/clip_range_vf", clip_range_vf)

    def _record_chain_logs(self, grad_norms: list[float], step_grads: dict[int, th.Tensor]) -> None:
        """
        Log what PPO does not have: the final std, the gradient norm, and how much gradient reaches the first step.

        :param grad_norms: Gradient norms of the iteration's minibatches (before clipping)
        :param step_grads: Squared norms of the loss gradient w.r.t. the prediction at the steps ``K`` and ``1``
        """
        if isinstance(self.action_space, spaces.Box):
            self.logger.record("train/std", self.policy.final_std().mean().item())
        if grad_norms:
            self.logger.record("train/grad_norm", np.mean(grad_norms))
            # Gradient that reaches the first denoising step (k = K) relative to the last one (k = 1): a value near
            # 0 means the early steps get almost no learning signal through the chain.
            first, last = math.sqrt(step_grads[self.policy.chain.n_steps].item()), math.sqrt(step_grads[1].item())
            self.logger.record("train/eps_grad_norm_first_step", first)
            self.logger.record("train/eps_grad_ratio_first_last", first / last if last > 0 else float("nan"))

    def _bc_regulariser(self, distribution: Distribution, rollout_data: Any, bc_losses: list[float]) -> th.Tensor:
        """
        :return: ``bc_coef`` times the mean KL between the final steps of the policy and of the reference
            policy given the stored noise (0 when ``bc_coef`` is 0); the KL is appended to ``bc_losses``
        """
        if self.bc_coef == 0:
            return th.zeros((), device=self.device)
        with th.no_grad():
            reference = self.reference_policy.get_distribution(rollout_data.observations, rollout_data.noises)
        kl = conditional_kl(distribution, reference).mean()
        bc_losses.append(kl.item())
        return self.bc_coef * kl

    def _record_bc(self, bc_losses: list[float]) -> None:
        if bc_losses:
            self.logger.record("train/bc_kl", np.mean(bc_losses))

    def learn(
        self: SelfNCDPO,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "NCDPO",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfNCDPO:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
