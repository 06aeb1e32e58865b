import warnings
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import FloatSchedule, explained_variance, obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv
from torch.nn import functional as F

from sb3_ncdpo.common.chain_buffers import ChainDictRolloutBuffer, ChainRolloutBuffer
from sb3_ncdpo.common.denoising_mdp import DenoisingMDP
from sb3_ncdpo.common.diffusion import ChainConfig
from sb3_ncdpo.common.finetunable import FinetunableAlgorithm
from sb3_ncdpo.common.finetune import check_finetune_args
from sb3_ncdpo.common.policies import DiffusionActorCriticPolicy, check_action_space, check_policy_kwargs
from sb3_ncdpo.dppo.policies import CnnPolicy, MlpPolicy, MultiInputPolicy
from sb3_ncdpo.pretrain.pretrained import pretrained_policy_kwargs

SelfDPPO = TypeVar("SelfDPPO", bound="DPPO")

#: Policy settings DPPO uses unless ``policy_kwargs`` says otherwise: DPPO's minimum sampling std 0.1 for every
#: denoising step (``min_step_std`` for the steps k >= 2; the final step, whose DDPM std is 0, as ``fixed_std``) and
#: its clip of the sampled normal draws at 3 (``randn_clip_value`` in DPPO's Gym configs).
DEFAULT_POLICY_KWARGS: dict[str, Any] = {"min_step_std": 0.1, "fixed_std": 0.1, "noise_clip": 3.0}


class DPPO(FinetunableAlgorithm):
    """
    Diffusion Policy Policy Optimization (DPPO): PPO on the denoising MDP of a diffusion policy.

    Paper: "Diffusion Policy Policy Optimization", Ren et al., https://arxiv.org/abs/2409.00588

    Each denoising step ``x_{k-1} ~ N(mu_theta(x_k, k, s), std_k^2)`` is an action of an inner MDP with its own
    Gaussian log-probability. Rollouts store the whole chain ``x_K, ..., x_1, x_0`` of every environment step
    (``x_0`` is the executed, unclipped normalised action); ``train()`` draws minibatches of (environment step,
    denoising step) pairs over the last ``K'`` steps (the policy's ``n_finetuned_steps``; all K by default) and applies
    PPO's clipped objective to each pair with the advantage of its environment step times ``gamma_denoising^(k - 1)``
    and a clip range that grows from the first to the last trained step. No gradient flows from one step to another.
    The critic is ``V(s)``. The policy is the same :class:`~sb3_ncdpo.common.policies.DiffusionActorCriticPolicy` as
    NCDPO's, so one pre-trained policy can be trained by either algorithm.

    The constructor takes PPO's arguments with PPO's meaning (gSDE excepted), except ``batch_size``, which counts
    pairs, plus DPPO's loss settings; the diffusion settings are policy keyword arguments, defaulting to
    :data:`DEFAULT_POLICY_KWARGS` over the policy's own defaults.

    :param policy: The policy model to use (MlpDiffusionPolicy, CnnDiffusionPolicy, MultiInputDiffusionPolicy, or
        their aliases MlpPolicy, CnnPolicy, MultiInputPolicy)
    :param env: The environment to learn from (if registered in Gym, can be str)
    :param learning_rate: The learning rate, it can be a function of the current progress remaining (from 1 to 0)
    :param n_steps: The number of steps to run for each environment per update
        (i.e. rollout buffer size is n_steps * n_envs where n_envs is number of environment copies running in parallel)
    :param batch_size: Minibatch size in (environment step, denoising step) pairs, at most ``n_steps * n_envs * K'``
    :param n_epochs: Number of passes over all pairs when optimizing the surrogate loss
    :param gamma: Discount factor
    :param gae_lambda: Factor for trade-off of bias vs variance for Generalized Advantage Estimator
    :param clip_range: Clip range of the final denoising step; it can be a function of the current progress
        remaining (from 1 to 0)
    :param clip_range_base: Clip range of the first trained denoising step; the clip range grows exponentially from
        it to ``clip_range`` over the trained steps (DPPO's schedule; DPPO's code default is 1e-3). ``None``:
        ``clip_range`` at every step (DPPO's Gym settings)
    :param clip_range_rate: Rate of that exponential growth
    :param gamma_denoising: Discount of the denoising MDP: the advantage of step ``k`` is scaled by
        ``gamma_denoising^(k - 1)``
    :param min_logprob_std: Floor of each step's std in its log-probability
    :param log_prob_clamp: ``(low, high)`` clamp of the per-dimension log-probabilities, or ``None``
    :param log_prob_reduction: ``"mean"`` (DPPO) or ``"sum"`` (SB3) of the log-probabilities over action dimensions
    :param clip_range_vf: Clipping parameter for the value function, it can be a function of the current progress
        remaining (from 1 to 0). If None (default), no clipping will be done on the value function.
    :param normalize_advantage: Whether to normalize or not the advantage (over the pairs of each minibatch)
    :param ent_coef: Entropy coefficient for the loss calculation (the entropy of each pair's step Gaussian, which
        depends on the parameters only through a learned final-step std)
    :param vf_coef: Value function coefficient for the loss calculation
    :param max_grad_norm: The maximum value for the gradient clipping
    :param rollout_buffer_class: Rollout buffer class to use. If ``None``, it will be automatically selected
        (:class:`ChainRolloutBuffer` or :class:`ChainDictRolloutBuffer`); a custom one must accept
        ``n_denoising_steps`` and ``n_trained_steps``
    :param rollout_buffer_kwargs: Keyword arguments to pass to the rollout buffer on creation
    :param target_kl: Limit the KL divergence between updates (None: no limit)
    :param stats_window_size: Window size for the rollout logging, specifying the number of episodes to average
        the reported success rate, mean episode length, and mean reward over
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation (over
        :data:`DEFAULT_POLICY_KWARGS`)
    :param verbose: Verbosity level: 0 for no output, 1 for info messages, 2 for debug messages
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run. "auto" uses the GPU if possible
    :param pretrained: Folder written by ``sb3-ncdpo pretrain`` to start from: the policy is rebuilt with its saved
        settings (``policy_kwargs``, over :data:`DEFAULT_POLICY_KWARGS`, may only override the fine-tuning settings,
        e.g. ``fixed_std`` or ``n_finetuned_steps``), its weights are loaded (all but the final-step std; the frozen
        copy of the early steps is the pre-trained actor) and its observation normalisation is installed, frozen, in the
        env (:func:`~sb3_ncdpo.pretrain.pretrained.init_from_pretrained`)
    :param critic_warmup_iters: Number of first iterations (rollout + update) in which only the critic is trained,
        the actor frozen (DPPO's ``n_critic_warmup_itr``)
    :param bc_coef: Weight of the BC regulariser: the KL between each trained denoising step's Gaussian under the
        policy and under a frozen copy of the initial (pre-trained) policy, at the rollout's (state, ``x_k``) pairs
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
    rollout_buffer: ChainRolloutBuffer | ChainDictRolloutBuffer  # type: ignore[assignment]

    def __init__(
        self,
        policy: str | type[DiffusionActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-4,
        n_steps: int = 2048,
        batch_size: int = 640,
        n_epochs: int = 10,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        clip_range: float | Schedule = 0.1,
        clip_range_base: float | None = None,
        clip_range_rate: float = 3.0,
        gamma_denoising: float = 0.99,
        min_logprob_std: float = 0.1,
        log_prob_clamp: tuple[float, float] | None = (-5.0, 2.0),
        log_prob_reduction: str = "mean",
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
        policy_class = self._get_policy_from_name(policy) if isinstance(policy, str) else policy
        if not (isinstance(policy_class, type) and issubclass(policy_class, DiffusionActorCriticPolicy)):
            raise ValueError(
                f"policy must be a DiffusionActorCriticPolicy (or one of {sorted(self.policy_aliases)}), got {policy!r}; "
                "when loading a file, this means it was not saved by DPPO"
            )
        policy_kwargs = {**DEFAULT_POLICY_KWARGS, **(policy_kwargs or {})}
        if pretrained is not None:
            policy_kwargs = pretrained_policy_kwargs(pretrained, policy_kwargs)
        check_policy_kwargs(policy_kwargs)
        self.denoising_mdp = DenoisingMDP(
            gamma_denoising=gamma_denoising,
            min_logprob_std=min_logprob_std,
            log_prob_clamp=None if log_prob_clamp is None else tuple(log_prob_clamp),  # type: ignore[arg-type]
            log_prob_reduction=log_prob_reduction,
            clip_range_base=clip_range_base,
            clip_range_rate=clip_range_rate,
        )
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1 (pairs of environment and denoising steps), got {batch_size!r}")
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
            supported_action_spaces=(spaces.Box,),
        )

        if self.env is not None:
            self._check_batch_size(batch_size, self._trained_steps(policy_kwargs))
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
        # Checked before anything else is built (SB3's own check is an assertion). DPPO's inner MDP is over Gaussian
        # denoising steps, the final one included: discrete actions are NCDPO's only.
        check_action_space(env.action_space)
        if not isinstance(env.action_space, spaces.Box):
            raise ValueError(f"DPPO supports only Box action spaces (use NCDPO for discrete ones), got {env.action_space}")
        return OnPolicyAlgorithm._wrap_env(env, verbose, monitor_wrapper)

    @staticmethod
    def _trained_steps(policy_kwargs: dict[str, Any]) -> int:
        """:return: K' as the policy will have it, from its keyword arguments"""
        n_steps = policy_kwargs.get("n_denoising_steps", ChainConfig.n_denoising_steps)
        return policy_kwargs.get("n_finetuned_steps") or n_steps

    def _check_batch_size(self, batch_size: int, n_trained_steps: int) -> None:
        assert self.env is not None
        n_pairs = self.env.num_envs * self.n_steps * n_trained_steps
        if batch_size > n_pairs:
            raise ValueError(
                f"batch_size={batch_size} is larger than the number of (environment step, denoising step) pairs of a "
                f"rollout (n_steps * n_envs * K' = {self.n_steps} * {self.env.num_envs} * {n_trained_steps} = {n_pairs}): "
                f"use batch_size <= {n_pairs}"
            )
        if n_pairs % batch_size > 0:
            warnings.warn(
                f"batch_size={batch_size} does not divide the number of pairs n_steps * n_envs * K' = {n_pairs}: "
                f"every epoch ends with a truncated mini-batch of {n_pairs % batch_size}"
            )

    def _setup_model(self) -> None:
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        # The policy is built before the buffer because the chain's length comes from the policy.
        self.policy = self.policy_class(  # type: ignore[assignment]
            self.observation_space, self.action_space, self.lr_schedule, **self.policy_kwargs
        )
        self.policy = self.policy.to(self.device)
        self._set_up_reference_policy()

        if self.rollout_buffer_class is None:
            is_dict = isinstance(self.observation_space, spaces.Dict)
            self.rollout_buffer_class = ChainDictRolloutBuffer if is_dict else ChainRolloutBuffer
        self.rollout_buffer = self.rollout_buffer_class(  # type: ignore[assignment, call-arg]
            self.n_steps,
            self.observation_space,  # type: ignore[arg-type]
            self.action_space,
            device=self.device,
            gamma=self.gamma,
            gae_lambda=self.gae_lambda,
            n_envs=self.n_envs,
            n_denoising_steps=self.policy.chain.n_steps,
            n_trained_steps=self.policy.trained_steps,
            **self.rollout_buffer_kwargs,
        )

        self.clip_range = FloatSchedule(self.clip_range)
        if self.clip_range_vf is not None:
            if isinstance(self.clip_range_vf, (float, int)) and self.clip_range_vf <= 0:
                raise ValueError(f"clip_range_vf must be > 0, or None to deactivate value clipping, got {self.clip_range_vf}")
            self.clip_range_vf = FloatSchedule(self.clip_range_vf)

    def step_log_probs(self, chains: th.Tensor, means: th.Tensor) -> th.Tensor:
        """
        The log-probability of every trained denoising step of a batch of chains, as the loss computes it.

        :param chains: ``x_K, ..., x_0``, shape ``(batch, K + 1, dim)`` (see :meth:`DiffusionActorCriticPolicy.sample_chain`)
        :param means: The steps' means, shape ``(batch, K, dim)``
        :return: Shape ``(batch, K')``, step ``k`` (``K' .. 1``) at index ``K' - k``
        """
        n_steps, n_trained = self.policy.chain.n_steps, self.policy.trained_steps
        stds = self.policy.step_stds()[:n_trained].flip(0)  # steps K' .. 1
        return self.denoising_mdp.log_prob(chains[:, n_steps - n_trained + 1 :], means[:, n_steps - n_trained :], stds)

    def collect_rollouts(
        self,
        env: VecEnv,
        callback: BaseCallback,
        rollout_buffer: RolloutBuffer,
        n_rollout_steps: int,
    ) -> bool:
        """
        Collect experiences using the current policy and fill the rollout buffer, storing the denoising chain of
        every action and the log-probability of its trained steps along with SB3's fields. Same loop as SB3's
        ``OnPolicyAlgorithm.collect_rollouts`` (and the same local names, for callbacks) except for the policy call
        and ``add``.

        :param env: The training environment
        :param callback: Callback that will be called at each step (and at the beginning and end of the rollout)
        :param rollout_buffer: Buffer to fill with rollouts (a chain rollout buffer)
        :param n_rollout_steps: Number of experiences to collect per environment
        :return: True if function returned with at least `n_rollout_steps` collected, False if callback terminated
            rollout prematurely.
        """
        assert isinstance(rollout_buffer, (ChainRolloutBuffer, ChainDictRolloutBuffer)), "DPPO needs a chain buffer"
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
                actions_tensor, values, chains, means = self.policy.sample_chain(obs_tensor)
                step_log_probs = self.step_log_probs(chains, means)
                log_probs = step_log_probs.sum(dim=1)
            actions = actions_tensor.cpu().numpy().reshape((-1, *self.action_space.shape))  # type: ignore[arg-type, misc]

            # The policy acts in [-1, 1]: clip the sample, then map it to the Box bounds
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
                chains=chains,
                step_log_probs=step_log_probs,
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
        Update policy using the currently gathered rollout buffer: PPO's clipped objective on (environment step,
        denoising step) pairs, each step's log-probability recomputed from its stored input and output.
        """
        if self._critic_warmup_step():
            return
        # Switch to train mode (this affects batch norm / dropout)
        self.policy.set_training_mode(True)
        # Update optimizer learning rate
        self._update_learning_rate(self.policy.optimizer)
        # Compute current clip range (of the final denoising step)
        clip_range = self.clip_range(self._current_progress_remaining)  # type: ignore[operator]
        # Optional: clip range for the value function
        if self.clip_range_vf is not None:
            clip_range_vf = self.clip_range_vf(self._current_progress_remaining)  # type: ignore[operator]
        mdp, n_trained = self.denoising_mdp, self.policy.trained_steps

        entropy_losses = []
        pg_losses, value_losses = [], []
        clip_fractions = []
        grad_norms: list[float] = []
        bc_losses: list[float] = []

        continue_training = True
        # train for n_epochs epochs
        for epoch in range(self.n_epochs):
            approx_kl_divs = []
            # Do a complete pass on the (environment step, denoising step) pairs
            for rollout_data in self.rollout_buffer.get(self.batch_size):
                steps = rollout_data.steps
                values, means = self.policy.denoising_step_means(rollout_data.observations, rollout_data.x_k, steps)
                values = values.flatten()
                stds = self.policy.step_stds()[steps - 1]
                log_prob = mdp.log_prob(rollout_data.x_prev, means, stds)
                entropy = mdp.entropy(stds)

                # Normalize advantage (over the pairs), then discount it by the denoising step
                advantages = rollout_data.advantages
                # Normalization does not make sense if mini batchsize == 1, see GH issue #325
                if self.normalize_advantage and len(advantages) > 1:
                    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
                advantages = advantages * mdp.discount(steps)

                # ratio between old and new policy of each denoising step, should be one at the first iteration
                ratio = th.exp(log_prob - rollout_data.old_log_prob)

                # clipped surrogate loss, with each step's own clip range
                step_clip_range = mdp.clip_ranges(steps, clip_range, n_trained)
                policy_loss_1 = advantages * ratio
                policy_loss_2 = advantages * th.clamp(ratio, 1 - step_clip_range, 1 + step_clip_range)
                policy_loss = -th.min(policy_loss_1, policy_loss_2).mean()

                # Logging
                pg_losses.append(policy_loss.item())
                clip_fraction = th.mean((th.abs(ratio - 1) > step_clip_range).float()).item()
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
                entropy_loss = -th.mean(entropy)
                entropy_losses.append(entropy_loss.item())

                loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss
                if self.bc_coef > 0:
                    bc_loss = self._bc_kl(rollout_data, means, stds)
                    bc_losses.append(bc_loss.item())
                    loss = loss + self.bc_coef * bc_loss

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
        self.logger.record("train/std", self.policy.final_std().mean().item())
        if grad_norms:
            self.logger.record("train/grad_norm", np.mean(grad_norms))
        if bc_losses:
            self.logger.record("train/bc_kl", np.mean(bc_losses))
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/clip_range", clip_range)
        first_step = th.tensor([n_trained], device=self.device)
        self.logger.record("train/clip_range_first_step", mdp.clip_ranges(first_step, clip_range, n_trained).item())
        if self.clip_range_vf is not None:
            self.logger.record("train/clip_range_vf", clip_range_vf)

    def _bc_kl(self, rollout_data: Any, means: th.Tensor, stds: th.Tensor) -> th.Tensor:
        """
        :return: The mean over the minibatch's pairs of ``KL(pi_theta(x_{k-1}|s, x_k) || pi_ref(x_{k-1}|s, x_k))``,
            the step Gaussians with the log-probability's std floor, reduced over action dims like the log-probability
        """
        with th.no_grad():
            reference, steps = self.reference_policy, rollout_data.steps
            _, reference_means = reference.denoising_step_means(rollout_data.observations, rollout_data.x_k, steps)
            reference_stds = reference.step_stds()[steps - 1]
        floor = self.denoising_mdp.min_logprob_std
        kl = th.distributions.kl_divergence(
            th.distributions.Normal(means, stds.clamp(min=floor)),
            th.distributions.Normal(reference_means, reference_stds.clamp(min=floor)),
        )
        return self.denoising_mdp.reduce(kl).mean()

    def learn(
        self: SelfDPPO,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "DPPO",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfDPPO:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
