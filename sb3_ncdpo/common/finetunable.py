"""
What NCDPO and DPPO share on top of SB3's ``OnPolicyAlgorithm`` to start from a pre-trained folder: its weights and
observation statistics, critic warm-up iterations with the actor frozen, and the frozen reference policy of the BC
regulariser (saved with the model). Each algorithm keeps its own rollouts, losses and regulariser.
"""

from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

from sb3_ncdpo.common.finetune import frozen_copy, train_critic_only
from sb3_ncdpo.common.policies import DiffusionActorCriticPolicy
from sb3_ncdpo.pretrain.pretrained import init_from_pretrained


class FinetunableAlgorithm(OnPolicyAlgorithm):
    """
    Base of the algorithms on :class:`~sb3_ncdpo.common.policies.DiffusionActorCriticPolicy` that fine-tune a
    pre-trained policy. A subclass sets ``pretrained``, ``critic_warmup_iters``, ``bc_coef`` (validated with
    :func:`~sb3_ncdpo.common.finetune.check_finetune_args`) and ``n_epochs``, ``batch_size`` before
    :meth:`_setup_model`, calls :meth:`_set_up_reference_policy` from it and :meth:`_load_pretrained` after it, and
    starts ``train()`` with ``if self._critic_warmup_step(): return``.
    """

    policy: DiffusionActorCriticPolicy
    reference_policy: DiffusionActorCriticPolicy
    pretrained: str | None
    critic_warmup_iters: int
    bc_coef: float
    n_epochs: int
    batch_size: int
    _n_iterations_trained: int

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
        return [*super()._excluded_save_params(), "reference_policy"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts, tensors = super()._get_torch_save_params()
        return ([*state_dicts, "reference_policy"] if self.bc_coef > 0 else state_dicts), tensors
