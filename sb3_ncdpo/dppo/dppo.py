from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.type_aliases import GymEnv, PyTorchObs, Schedule
from stable_baselines3.common.vec_env import VecEnv

from sb3_ncdpo.common.diffusion import ChainConfig
from sb3_ncdpo.common.diffusion_ppo import DiffusionPPO
from sb3_ncdpo.common.policies import DiffusionActorCriticPolicy
from sb3_ncdpo.common.policy_settings import check_action_space
from sb3_ncdpo.common.train_log import TrainLog
from sb3_ncdpo.dppo.buffers import ChainDictRolloutBuffer, ChainRolloutBuffer
from sb3_ncdpo.dppo.denoising_mdp import DenoisingMDP

#: Policy settings DPPO uses unless ``policy_kwargs`` says otherwise: DPPO's minimum sampling std 0.1 for every
#: denoising step (``min_step_std`` for the steps k >= 2; the final step, whose DDPM std is 0, as ``fixed_std``) and
#: its clip of the sampled normal draws at 3 (``randn_clip_value`` in DPPO's Gym configs).
DEFAULT_POLICY_KWARGS: dict[str, Any] = {"min_step_std": 0.1, "fixed_std": 0.1, "noise_clip": 3.0, "x0_clip_final": True}


class DPPO(DiffusionPPO):
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

    The constructor takes PPO's arguments (gSDE excepted) plus DPPO's loss settings; the diffusion settings are policy
    keyword arguments, defaulting to :data:`DEFAULT_POLICY_KWARGS` over the policy's own defaults. These arguments mean
    what they mean for NCDPO, PPO's meaning (see :class:`~sb3_ncdpo.NCDPO`): ``policy``, ``env``, ``learning_rate``,
    ``n_steps``, ``gamma``, ``gae_lambda``, ``clip_range_vf``, ``vf_coef``, ``max_grad_norm``,
    ``rollout_buffer_kwargs``, ``target_kl``, ``stats_window_size``, ``tensorboard_log``, ``verbose``, ``seed``,
    ``device``, ``_init_setup_model``, ``use_sde`` (must be False), ``sde_sample_freq``. DPPO's own, or with another
    meaning:

    :param batch_size: Minibatch size in (environment step, denoising step) pairs, at most ``n_steps * n_envs * K'``
    :param n_epochs: Number of passes over all pairs when optimizing the surrogate loss
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
    :param normalize_advantage: Whether to normalize or not the advantage (over the pairs of each minibatch)
    :param ent_coef: Entropy coefficient for the loss calculation (the entropy of each pair's step Gaussian, which
        depends on the parameters only through a learned final-step std)
    :param rollout_buffer_class: Rollout buffer class to use. If ``None``, it will be automatically selected
        (:class:`ChainRolloutBuffer` or :class:`ChainDictRolloutBuffer`); a custom one must accept
        ``n_denoising_steps`` and ``n_trained_steps``
    :param policy_kwargs: additional arguments to be passed to the policy on creation (over
        :data:`DEFAULT_POLICY_KWARGS`)
    :param pretrained: Folder written by ``sb3-ncdpo pretrain`` to start from: the policy is rebuilt with its saved
        settings (``policy_kwargs``, over :data:`DEFAULT_POLICY_KWARGS`, may only override the fine-tuning settings,
        e.g. ``fixed_std`` or ``n_finetuned_steps``), its weights are loaded (all but the final-step std; the frozen
        copy of the early steps is the pre-trained actor) and its observation normalisation is installed, frozen, in the
        env (:func:`~sb3_ncdpo.common.pretrained.init_from_pretrained`)
    :param critic_warmup_iters: Number of first iterations (rollout + update) in which only the critic is trained,
        the actor frozen (DPPO's ``n_critic_warmup_itr``)
    :param bc_coef: Weight of the BC regulariser: the KL between each trained denoising step's Gaussian under the
        policy and under a frozen copy of the initial (pre-trained) policy, at the rollout's (state, ``x_k``) pairs
    :param clip_grad_per_group: Clip the gradient norm to ``max_grad_norm`` per parameter group (actor, critic, final
        std) instead of over all parameters together, as :class:`~sb3_ncdpo.NCDPO` does
    :param desired_kl: Adapt the learning rate to the update's KL divergence, as :class:`~sb3_ncdpo.NCDPO` does
        (``None``: the schedule alone)
    :param critic_learning_rate: The critic's own constant learning rate, as :class:`~sb3_ncdpo.NCDPO` has it (DPPO's
        fine-tuning configs: ``critic_lr`` 1e-3 beside an actor's 1e-5); ``None``: ``learning_rate``
    """

    default_policy_kwargs = DEFAULT_POLICY_KWARGS
    rollout_buffer_classes = (ChainRolloutBuffer, ChainDictRolloutBuffer)
    supported_action_spaces = (spaces.Box,)
    batch_size_unit = " (pairs of environment and denoising steps)"
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
        clip_grad_per_group: bool = False,
        desired_kl: float | None = None,
        critic_learning_rate: float | None = None,
        _init_setup_model: bool = True,
        *,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
    ):
        if (policy_kwargs or {}).get("chain_noise_scale", 1.0) != 1.0:
            # DPPO's likelihood is each step's Gaussian at the chain's own std: scaled noise would sample another policy
            raise ValueError(
                f"chain_noise_scale must be 1 with DPPO (an NCDPO option), got {policy_kwargs['chain_noise_scale']!r}"  # type: ignore[index]
            )
        self.denoising_mdp = DenoisingMDP(
            gamma_denoising=gamma_denoising,
            min_logprob_std=min_logprob_std,
            log_prob_clamp=None if log_prob_clamp is None else tuple(log_prob_clamp),  # type: ignore[arg-type]
            log_prob_reduction=log_prob_reduction,
            clip_range_base=clip_range_base,
            clip_range_rate=clip_range_rate,
        )
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            batch_size=batch_size,
            n_epochs=n_epochs,
            gamma=gamma,
            gae_lambda=gae_lambda,
            clip_range=clip_range,
            clip_range_vf=clip_range_vf,
            normalize_advantage=normalize_advantage,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            rollout_buffer_class=rollout_buffer_class,
            rollout_buffer_kwargs=rollout_buffer_kwargs,
            target_kl=target_kl,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            pretrained=pretrained,
            critic_warmup_iters=critic_warmup_iters,
            bc_coef=bc_coef,
            clip_grad_per_group=clip_grad_per_group,
            desired_kl=desired_kl,
            critic_learning_rate=critic_learning_rate,
            _init_setup_model=_init_setup_model,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
        )

    @staticmethod
    def _wrap_env(env: GymEnv, verbose: int = 0, monitor_wrapper: bool = True) -> VecEnv:
        # DPPO's inner MDP is over Gaussian denoising steps, the final one included: discrete actions are NCDPO's only.
        check_action_space(env.action_space)
        if not isinstance(env.action_space, spaces.Box):
            raise ValueError(f"DPPO supports only Box action spaces (use NCDPO for discrete ones), got {env.action_space}")
        return OnPolicyAlgorithm._wrap_env(env, verbose, monitor_wrapper)

    def _check_batch_size(self, batch_size: int, normalize_advantage: bool) -> None:
        assert self.env is not None
        # K' as the policy will have it, from its keyword arguments
        n_trained_steps = self.policy_kwargs.get("n_finetuned_steps") or self.policy_kwargs.get(
            "n_denoising_steps", ChainConfig.n_denoising_steps
        )
        n_pairs = self.env.num_envs * self.n_decisions * n_trained_steps
        steps = "n_steps" if self.n_decisions == self.n_steps else "ceil(n_steps / n_action_steps)"
        self._check_minibatches(
            batch_size,
            n_pairs,
            f"{steps} * n_envs * K' = {self.n_decisions} * {self.env.num_envs} * {n_trained_steps}",
            what="the number of (environment step, denoising step) pairs of a rollout",
        )

    def _rollout_buffer_kwargs(self) -> dict[str, Any]:
        return {"n_denoising_steps": self.policy.chain.n_steps, "n_trained_steps": self.policy.trained_steps}

    def step_log_probs(self, chains: th.Tensor, means: th.Tensor) -> th.Tensor:
        """
        The log-probability of every trained denoising step of a batch of chains, as the loss computes it.

        :param chains: ``x_K, ..., x_0``, shape ``(batch, K + 1, dim)`` (see :meth:`DiffusionActorCriticPolicy.sample_chain`)
        :param means: The steps' means, shape ``(batch, K, dim)``
        :return: Shape ``(batch, K')``, step ``k`` (``K' .. 1``) at index ``K' - k``
        """
        n_steps, n_trained = self.policy.chain.n_steps, self.policy.trained_steps
        stds = self.policy.step_stds()[:n_trained].flip(0)  # steps K' .. 1
        scored = self.policy.scored
        return self.denoising_mdp.log_prob(
            scored(chains[:, n_steps - n_trained + 1 :]), scored(means[:, n_steps - n_trained :]), scored(stds)
        )

    def _policy_step(self, obs_tensor: PyTorchObs) -> tuple[th.Tensor, th.Tensor, th.Tensor, dict[str, th.Tensor]]:
        # The rollout stores the whole chain of each action and its trained steps' log-probabilities.
        actions, values, chains, means = self.policy.sample_chain(obs_tensor)
        step_log_probs = self.step_log_probs(chains, means)
        actions = actions.reshape((-1, *self.policy.chunk_shape))
        return actions, values, step_log_probs.sum(dim=1), {"chains": chains, "step_log_probs": step_log_probs}

    def train(self) -> None:
        """
        Update policy using the currently gathered rollout buffer: PPO's clipped objective on (environment step,
        denoising step) pairs, each step's log-probability recomputed from its stored input and output.
        """
        if self._critic_warmup_step():
            return
        _, clip_range = self._ppo_update()
        n_trained = self.policy.trained_steps
        first_step = self.denoising_mdp.clip_ranges(th.tensor([n_trained], device=self.device), clip_range, n_trained)
        self.logger.record("train/clip_range_first_step", first_step.item())

    def _minibatch_loss(
        self, rollout_data: Any, minibatch: int, clip_range: float, clip_range_vf: float | None, log: TrainLog
    ) -> tuple[th.Tensor, th.Tensor]:
        # Each (environment step, denoising step) pair is one Gaussian step of the denoising MDP.
        mdp, steps = self.denoising_mdp, rollout_data.steps
        values, means = self.policy.denoising_step_means(rollout_data.observations, rollout_data.x_k, steps)
        values = values.flatten()
        stds = self.policy.step_stds()[steps - 1]
        # With action chunks, the executed actions' values (chunk_log_prob="executed", DPPO's choice) or all of them
        scored = self.policy.scored
        log_prob = mdp.log_prob(scored(rollout_data.x_prev), scored(means), scored(stds))
        entropy = mdp.entropy(scored(stds))
        # Normalize advantage (over the pairs), then discount it by the denoising step
        advantages = self._normalized(rollout_data.advantages) * mdp.discount(steps)
        # each step's own clip range
        step_clip_range = mdp.clip_ranges(steps, clip_range, self.policy.trained_steps)
        loss = self._ppo_loss(log_prob, entropy, values, advantages, rollout_data, step_clip_range, clip_range_vf, log)
        if self.bc_coef > 0:
            bc_loss = self._bc_kl(rollout_data, means, stds)
            log.bc_losses.append(bc_loss.item())
            loss = loss + self.bc_coef * bc_loss
        return loss, log_prob

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
        kl = self.policy.scored(kl)
        return self.denoising_mdp.reduce(kl).mean()
