"""
The base class of the on-policy algorithms on :class:`~sb3_ncdpo.common.policies.DiffusionActorCriticPolicy` (NCDPO,
DPPO), as SB3's ``OnPolicyAlgorithm`` is A2C's and PPO's: argument checks, setup, the rollout loop (written once),
starting from a pre-trained folder, critic warm-up, the BC reference policy, atomic saves and loads that keep the
chain. PPO's update over it is :class:`~sb3_ncdpo.common.diffusion_ppo.DiffusionPPO`.
"""

import io
import pathlib
import warnings
import zipfile
from collections.abc import Iterable
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.save_util import json_to_data, open_path
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, PyTorchObs, Schedule
from stable_baselines3.common.utils import FloatSchedule, obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv

from sb3_ncdpo.common.atomic import atomic_file
from sb3_ncdpo.common.chunk_rollout import (
    ChunkRollout,
    Decisions,
    Row,
    check_chunk_reward,
    decision_gamma,
    take_observations,
)
from sb3_ncdpo.common.finetune import check_finetune_args, frozen_copy, train_critic_only
from sb3_ncdpo.common.observation_history import ObservationHistory, stacked_space
from sb3_ncdpo.common.policies import CnnDiffusionPolicy, DiffusionActorCriticPolicy, MultiInputDiffusionPolicy
from sb3_ncdpo.common.policy_settings import check_action_space, check_policy_kwargs
from sb3_ncdpo.common.pretrained import check_kept_policy_kwargs, init_from_pretrained, pretrained_policy_kwargs
from sb3_ncdpo.common.update_rules import check_update_rules, critic_group_optimizer

SelfOnPolicyDiffusionAlgorithm = TypeVar("SelfOnPolicyDiffusionAlgorithm", bound="OnPolicyDiffusionAlgorithm")


class OnPolicyDiffusionAlgorithm(OnPolicyAlgorithm):
    """
    The base class of PPO-style algorithms on a diffusion policy. A subclass sets ``rollout_buffer_classes`` and
    ``supported_action_spaces`` and implements :meth:`_rollout_buffer_kwargs` (what its buffer needs from the policy),
    :meth:`_policy_step` (what the policy returns for an observation and the buffer stores) and ``train()``, as
    ``ppo.py`` does over ``OnPolicyAlgorithm`` (:class:`~sb3_ncdpo.common.diffusion_ppo.DiffusionPPO` gives PPO's
    update). The constructor takes PPO's arguments with PPO's meaning and defaults
    (gSDE excepted) plus the fine-tuning ones: :class:`~sb3_ncdpo.NCDPO` documents them.
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpDiffusionPolicy": DiffusionActorCriticPolicy,
        "CnnDiffusionPolicy": CnnDiffusionPolicy,
        "MultiInputDiffusionPolicy": MultiInputDiffusionPolicy,
        "MlpPolicy": DiffusionActorCriticPolicy,
        "CnnPolicy": CnnDiffusionPolicy,
        "MultiInputPolicy": MultiInputDiffusionPolicy,
    }
    #: Policy keyword arguments the algorithm uses unless ``policy_kwargs`` says otherwise
    default_policy_kwargs: ClassVar[dict[str, Any]] = {}
    #: The rollout buffer classes for ``Box`` (or any non-``Dict``) observations and for ``Dict`` observations
    rollout_buffer_classes: ClassVar[tuple[type[RolloutBuffer], type[RolloutBuffer]]]
    #: The action spaces the algorithm supports (checked by SB3)
    supported_action_spaces: ClassVar[tuple[type[spaces.Space], ...]]
    #: What ``batch_size`` counts, for its error message (empty: transitions)
    batch_size_unit: ClassVar[str] = ""

    policy: DiffusionActorCriticPolicy
    reference_policy: DiffusionActorCriticPolicy
    #: With ``n_obs_steps`` > 1: the envs' observation histories, and the ``_last_obs`` they end with
    _observation_history: ObservationHistory
    _history_last_obs: Any

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
        clip_grad_per_group: bool = True,
        desired_kl: float | None = None,
        chunk_reward: str = "discounted",
        critic_learning_rate: float | None = None,
        _init_setup_model: bool = True,
        *,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
    ):
        # Everything that can be checked without the environment is checked before the environment is built.
        if use_sde:
            raise ValueError(
                "use_sde=True is not supported: a diffusion policy explores through its denoising noise (gSDE is SB3's "
                "state-dependent exploration for Gaussian policies); leave use_sde=False (sde_sample_freq is then ignored)"
            )
        check_finetune_args(critic_warmup_iters, bc_coef)
        check_update_rules(clip_grad_per_group, desired_kl, critic_learning_rate)
        check_chunk_reward(chunk_reward)
        policy_class = self._get_policy_from_name(policy) if isinstance(policy, str) else policy
        if not (isinstance(policy_class, type) and issubclass(policy_class, DiffusionActorCriticPolicy)):
            raise ValueError(
                f"policy must be a DiffusionActorCriticPolicy (or one of {sorted(self.policy_aliases)}), got {policy!r}; "
                f"when loading a file, this means it was not saved by {type(self).__name__}"
            )
        policy_kwargs = {**self.default_policy_kwargs, **(policy_kwargs or {})}
        if pretrained is not None:
            policy_kwargs = pretrained_policy_kwargs(pretrained, policy_kwargs)
        check_policy_kwargs(policy_kwargs)
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1{self.batch_size_unit}, got {batch_size!r}")
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
            supported_action_spaces=self.supported_action_spaces,
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
        self.clip_grad_per_group = clip_grad_per_group
        self.desired_kl = desired_kl
        self.critic_learning_rate = critic_learning_rate
        self.chunk_reward = chunk_reward
        self.lr_scale = 1.0
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
        """
        :param batch_size: Minibatch size, in transitions
        :param normalize_advantage: Whether advantages are normalised per minibatch
        """
        assert self.env is not None
        buffer_size = self.env.num_envs * self.n_decisions
        how_many = f"n_steps * n_envs = {self.n_steps} * {self.env.num_envs}"
        if self.n_decisions != self.n_steps:
            how_many = f"ceil(n_steps / n_action_steps) * n_envs = {self.n_decisions} * {self.env.num_envs} decisions"
        if normalize_advantage and buffer_size < 2:
            raise ValueError(
                f"the rollout buffer must hold more than one sample with normalize_advantage=True, got {how_many}"
            )
        self._check_minibatches(batch_size, buffer_size, how_many)

    @property
    def n_decisions(self) -> int:
        """
        Rows of the rollout buffer: decisions per env per rollout, ``ceil(n_steps / n_action_steps)`` (``n_steps`` counts
        env steps, as in SB3; with ``n_action_steps`` > 1 a rollout can take fewer env steps, where episodes end
        inside chunks, whose rest is dropped).
        """
        return -(-self.n_steps // self.policy_kwargs.get("n_action_steps", 1))

    @staticmethod
    def _check_minibatches(batch_size: int, n_samples: int, how_many: str, what: str = "the rollout buffer") -> None:
        """
        Warn, as SB3's PPO does, where minibatches do not divide a rollout (a ``batch_size`` larger than the rollout
        makes each minibatch the whole rollout, as in SB3's PPO, which rl-zoo3's tuned values rely on).

        :param batch_size: Minibatch size
        :param n_samples: Samples of a rollout
        :param how_many: How ``n_samples`` is computed, for the messages
        :param what: What the samples are, for the messages
        """
        if batch_size > n_samples:
            warnings.warn(
                f"batch_size={batch_size} is larger than {what} ({how_many} = {n_samples}): each minibatch is the "
                f"whole of it, as in SB3's PPO (batch_size={n_samples} says so)"
            )
        elif n_samples % batch_size > 0:
            warnings.warn(
                f"batch_size={batch_size} does not divide {what} ({how_many} = {n_samples}): every epoch ends "
                f"with a truncated mini-batch of {n_samples % batch_size}"
            )

    def _rollout_buffer_kwargs(self) -> dict[str, Any]:
        """:return: The keyword arguments the rollout buffer needs beyond SB3's (from the policy)"""
        raise NotImplementedError

    def _setup_model(self) -> None:
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        # The policy is built before the buffer because the buffer's shapes come from the policy.
        self.policy = self.policy_class(  # type: ignore[assignment]
            self.observation_space, self.action_space, self.lr_schedule, **self.policy_kwargs
        )
        self.policy = self.policy.to(self.device)
        if self.critic_learning_rate is not None:
            self.policy.optimizer = critic_group_optimizer(self.policy, self.lr_schedule(1), self.critic_learning_rate)
        # Saved with the model, so that the file loads with this chain whatever a later version's default.
        self.policy_kwargs["x0_clip_final"] = self.policy.chain.config.x0_clip_final
        self._set_up_reference_policy()

        if self.rollout_buffer_class is None:
            plain, dict_observations = self.rollout_buffer_classes
            self.rollout_buffer_class = dict_observations if isinstance(self.observation_space, spaces.Dict) else plain
        observation_space = self.observation_space
        if self.policy.n_obs_steps > 1:
            observation_space = stacked_space(self.observation_space, self.policy.n_obs_steps)  # type: ignore[arg-type]
        self.rollout_buffer = self.rollout_buffer_class(  # type: ignore[call-arg]
            self.n_decisions,
            observation_space,  # type: ignore[arg-type]
            self._chunk_space(),
            device=self.device,
            gamma=decision_gamma(self.gamma, self.policy.n_action_steps, self.chunk_reward),
            gae_lambda=self.gae_lambda,
            n_envs=self.n_envs,
            **self._rollout_buffer_kwargs(),
            **self.rollout_buffer_kwargs,
        )

        self.clip_range = FloatSchedule(self.clip_range)
        if self.clip_range_vf is not None:
            if isinstance(self.clip_range_vf, (float, int)) and self.clip_range_vf <= 0:
                raise ValueError(f"clip_range_vf must be > 0, or None to deactivate value clipping, got {self.clip_range_vf}")
            self.clip_range_vf = FloatSchedule(self.clip_range_vf)

    def _chunk_space(self) -> spaces.Space:
        """:return: The space of one decision's actions, as the buffer stores them (the action space without chunks)"""
        if self.policy.horizon == 1:
            return self.action_space
        return spaces.Box(-np.inf, np.inf, shape=self.policy.chunk_shape, dtype=np.float32)

    # --- Rollouts ---

    def _policy_step(self, obs_tensor: PyTorchObs) -> tuple[th.Tensor, th.Tensor, th.Tensor, dict[str, th.Tensor]]:
        """
        The policy's part of one rollout step (called without gradient).

        :param obs_tensor: The observations of every env
        :return: ``(actions, values, log_probs, extras)``: the actions in the policy's space (Box: normalised,
            unclipped) with the action space's shape, the values, the log-probabilities the buffer stores, and what else
            the buffer's ``add`` takes (by keyword)
        """
        raise NotImplementedError

    def collect_rollouts(
        self,
        env: VecEnv,
        callback: BaseCallback,
        rollout_buffer: RolloutBuffer,
        n_rollout_steps: int,
    ) -> bool:
        """
        Collect experiences using the current policy and fill the rollout buffer. Same loop as SB3's
        ``OnPolicyAlgorithm.collect_rollouts`` (and the same local names, for callbacks: ``new_obs``, ``rewards``,
        ``dones``, ``infos`` are those of one env step) except for the policy call (:meth:`_policy_step`), what ``add``
        stores besides SB3's fields, and action chunks: with the policy's ``n_action_steps`` > 1 each env executes a
        decision's actions one env step at a time and the buffer gets one row per decision
        (:class:`~sb3_ncdpo.common.chunk_rollout.ChunkRollout`); callbacks, ``num_timesteps`` and the episode statistics
        still see every env step. The rollout ends when the buffer is full.

        :param env: The training environment
        :param callback: Callback that will be called at each step (and at the beginning and end of the rollout)
        :param rollout_buffer: Buffer to fill with rollouts (one of ``rollout_buffer_classes``, or compatible)
        :param n_rollout_steps: SB3's argument (its ``n_steps``); the buffer's size decides the rollout's length
        :return: True if function returned with at least `n_rollout_steps` collected, False if callback terminated
            rollout prematurely.
        """
        assert self._last_obs is not None, "No previous observation was provided"
        # Switch to eval mode (this affects batch norm / dropout)
        self.policy.set_training_mode(False)

        n_steps = 0
        rollout_buffer.reset()
        callback.on_rollout_start()
        chunks = ChunkRollout(env.num_envs, self.policy.n_action_steps, self.gamma, self.chunk_reward)
        executed_shape = (self.policy.n_action_steps, *self.action_space.shape)  # type: ignore[misc]
        history = self._history_of_last_obs()

        while not rollout_buffer.full:
            deciding = chunks.deciding()
            if deciding.size > 0:
                everyone = deciding.size == env.num_envs
                last_obs = self._last_obs if history is None else history.stacked
                observations = last_obs if everyone else take_observations(last_obs, deciding)  # type: ignore[arg-type]
                with th.no_grad():
                    # Convert to pytorch tensor or to TensorDict
                    obs_tensor = obs_as_tensor(observations, self.device)  # type: ignore[arg-type]
                    actions_tensor, values, log_probs, rollout_extras = self._policy_step(obs_tensor)
                chunk_actions = actions_tensor.cpu().numpy()
                if isinstance(self.action_space, spaces.Box) and not np.isfinite(chunk_actions).all():
                    # The traced Gaussian skips torch's argument checks, which stop PPO here (a categorical still has them).
                    raise ValueError(
                        f"the policy's actions are not finite at step {self.num_timesteps}: the observations or the policy's "
                        "parameters hold NaN or inf (SB3's VecCheckNan wrapper finds the step and the env that produce them)"
                    )
                episode_starts = self._last_episode_starts if everyone else self._last_episode_starts[deciding]  # type: ignore[index]
                executed = chunk_actions.reshape((deciding.size, -1, *executed_shape[1:]))[:, : executed_shape[0]]
                chunks.decide(
                    Decisions(
                        deciding,
                        observations,  # type: ignore[arg-type]
                        chunk_actions,
                        executed,
                        episode_starts,  # type: ignore[arg-type]
                        values,
                        log_probs,
                        rollout_extras,
                    )
                )
            actions = chunks.actions()

            clipped_actions = actions
            if isinstance(self.action_space, spaces.Box):
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
                    if history is not None:
                        terminal_obs = obs_as_tensor(history.ending_with(idx, infos[idx]["terminal_observation"]), self.device)
                    with th.no_grad():
                        terminal_value = self.policy.predict_values(terminal_obs)[0]  # type: ignore[arg-type]
                    rewards[idx] += self.gamma * terminal_value

            row = chunks.record(rewards, dones)
            while row is not None and not rollout_buffer.full:
                self._add_row(rollout_buffer, row)
                row = chunks.pop_row()
            self._last_obs = new_obs  # type: ignore[assignment]
            self._last_episode_starts = dones
            if history is not None:
                history.push(new_obs, dones)  # type: ignore[arg-type]
                self._history_last_obs = new_obs

        with th.no_grad():
            # Compute value for the last timestep
            values = self.policy.predict_values(
                obs_as_tensor(new_obs if history is None else history.stacked, self.device)  # type: ignore[arg-type]
            )
        # Where an env's next decision was already made (it did not make a row), its last row bootstraps from it
        # (a copy of dones: it is also _last_episode_starts, the envs' own state for the next rollout).
        last_dones = dones.copy()
        for env_index, following in enumerate(chunks.next_decisions()):
            if following is not None:
                values[env_index], last_dones[env_index] = following

        rollout_buffer.compute_returns_and_advantage(last_values=values, dones=last_dones)

        callback.update_locals(locals())

        callback.on_rollout_end()

        return True

    def _history_of_last_obs(self) -> ObservationHistory | None:
        """
        :return: The histories of the envs' observations up to ``_last_obs`` (with ``n_obs_steps`` > 1; ``None``
            otherwise), kept from the last rollout, or started anew where the env was reset since (``_setup_learn``)
        """
        if self.policy.n_obs_steps == 1:
            return None
        history = getattr(self, "_observation_history", None)
        if history is None or getattr(self, "_history_last_obs", None) is not self._last_obs:
            history = self._observation_history = ObservationHistory(self.policy.n_obs_steps)
            history.reset(self._last_obs)  # type: ignore[arg-type]
            self._history_last_obs = self._last_obs
        return history

    @staticmethod
    def _add_row(rollout_buffer: RolloutBuffer, row: Row) -> None:
        """:param row: One decision of every env, added to ``rollout_buffer`` as SB3's loop adds a step"""
        decisions = row.decisions
        rollout_buffer.add(
            decisions.observations,  # type: ignore[arg-type]
            decisions.actions,
            row.rewards,
            decisions.episode_starts,
            decisions.values,
            decisions.log_probs,
            **decisions.extras,
        )

    # --- Fine-tuning: the pre-trained folder, critic warm-up, the BC reference ---

    def _set_up_reference_policy(self) -> None:
        # The BC regulariser's reference: the initial policy, replaced by the pre-trained one in _load_pretrained and
        # restored from the saved file by load().
        if self.bc_coef > 0:
            self.reference_policy = frozen_copy(self.policy)

    def _load_pretrained(self) -> None:
        """Load the pre-trained folder's weights and observation statistics (if any); the reference policy follows."""
        if self.pretrained is not None:
            init_from_pretrained(self, self.pretrained)
            self._set_up_reference_policy()

    def _critic_warmup_step(self) -> bool:
        """:return: Whether this iteration was a critic warm-up iteration (the critic trained, the actor frozen)"""
        self._n_iterations_trained += 1
        if self._n_iterations_trained > self.critic_warmup_iters:
            return False
        self._update_learning_rate(self.policy.optimizer)
        train_critic_only(self.policy, self.rollout_buffer, self.n_epochs, self.batch_size, self.max_grad_norm, self.logger)
        return True

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "reference_policy", "_observation_history", "_history_last_obs"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts, tensors = super()._get_torch_save_params()
        return ([*state_dicts, "reference_policy"] if self.bc_coef > 0 else state_dicts), tensors

    def save(
        self,
        path: str | pathlib.Path | io.BufferedIOBase,
        exclude: Iterable[str] | None = None,
        include: Iterable[str] | None = None,
    ) -> None:
        """
        SB3's ``save``, written atomically: to a temporary file in the same folder, then renamed over ``path``, so that
        a kill while saving leaves the previous file or the new one, never a broken one (every callback that saves the
        model, rl-zoo3's best-model and checkpoints included). As SB3, a path without a suffix gets ``.zip``. A
        file-like object is written as SB3 writes it.

        :param path: Path to the file where the model should be saved, or a file-like object
        :param exclude: Names of the parameters that should be excluded in addition to the default ones
        :param include: Names of the parameters that might be excluded but should be included anyway
        """
        if not isinstance(path, (str, pathlib.Path)) or pathlib.Path(path).is_dir():
            super().save(path, exclude, include)  # SB3's own handling (a folder: it saves to "<path>_2")
            return
        target = pathlib.Path(path)
        if target.suffix == "":
            target = target.with_name(f"{target.name}.zip")
        with atomic_file(target) as tmp:
            super().save(tmp, exclude, include)

    @classmethod
    def load(  # type: ignore[override]
        cls: type[SelfOnPolicyDiffusionAlgorithm],
        path: str | pathlib.Path | io.BufferedIOBase,
        env: GymEnv | None = None,
        device: th.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        **kwargs: Any,
    ) -> SelfOnPolicyDiffusionAlgorithm:
        """
        SB3's ``load``, except that the model keeps the chain and networks it was trained with: ``policy_kwargs``, given
        as a keyword argument or through ``custom_objects``, may change only the fine-tuning settings
        (:meth:`DiffusionActorCriticPolicy.finetune_overridable_kwargs`). See SB3's ``BaseAlgorithm.load`` for the
        arguments.

        :raises ValueError: naming the settings that ``policy_kwargs`` would change
        """
        if "policy_kwargs" in kwargs:
            # Checked here like custom_objects' (SB3 refuses any difference, the fine-tuning settings included).
            custom_objects = {**(custom_objects or {}), "policy_kwargs": kwargs.pop("policy_kwargs")}
            argument = "policy_kwargs"
        else:
            argument = "custom_objects['policy_kwargs']"
        file = open_path(path, "r", suffix="zip")
        try:
            with zipfile.ZipFile(file) as archive:
                others = {key: value for key, value in (custom_objects or {}).items() if key != "policy_kwargs"}
                data = json_to_data(archive.read("data").decode(), custom_objects=others)
        finally:
            if isinstance(path, io.BufferedIOBase):
                path.seek(0)  # the caller's file: SB3 reads it next
            else:
                file.close()
        saved = data.get("policy_kwargs") or {}
        if custom_objects is not None and "policy_kwargs" in custom_objects:
            check_kept_policy_kwargs(saved, custom_objects["policy_kwargs"], argument)
        if "x0_clip_final" not in saved:  # saved by 0.1, whose default was to clip a Box action's final mean
            given = (custom_objects or {}).get("policy_kwargs", saved)
            custom_objects = {**(custom_objects or {}), "policy_kwargs": {"x0_clip_final": None, **given}}
        model = super().load(path, env, device, custom_objects, print_system_info, force_reset, **kwargs)
        if "clip_grad_per_group" not in data:  # saved by 0.1: its updates go on with 0.1's rules
            model.clip_grad_per_group, model.desired_kl, model.lr_scale = False, None, 1.0
        return model

    def learn(
        self: SelfOnPolicyDiffusionAlgorithm,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str | None = None,
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfOnPolicyDiffusionAlgorithm:
        """
        SB3's ``learn``; ``tb_log_name`` defaults to the algorithm's name (``"NCDPO"``, ``"DPPO"``).
        """
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=type(self).__name__ if tb_log_name is None else tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
