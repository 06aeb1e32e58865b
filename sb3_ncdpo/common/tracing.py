"""
All of the policy's tracing: its computations through TorchScript traces of the same eager code (rollouts,
prediction and updates), the modules that are traced, and the one rule for when a call runs through its trace
(:meth:`PolicyTraces.pick`).

Why: with PPO's settings for Hopper-v5 (one env) every rollout call denoises a batch of one, K steps of about ten tiny
tensor operations each, and the per-operation cost of Python and the dispatcher dominates the arithmetic. Tracing
records those operations once; TorchScript's interpreter then runs them without the Python overhead (measured: the
chain ~1.9x faster at K=10, batch 1). The traces run with TorchScript's graph optimisations off: with them, results at
batch sizes > 1 differed from the eager code in the last bits (up to 2e-4 without the x0 clip, which amplifies
rounding); without them they are the same operations on the same kernels and the results are bit-identical to the
eager code (tested), so the log-probability stored at rollout time is the one that ``train()`` recomputes. Updates
back-propagate through the traced operations (autograd records them as it records eager ones; the gradients are
bit-identical too), except where the gradient diagnostic hooks need the eager graph.

What is traced must have no data-dependent control flow: the denoiser and the chain always (this package's code), the
observation encoder and the critic only when they are SB3's own modules (:data:`TRACEABLE_MODULES`), never user code.
"""

import contextlib
import math
import warnings
from collections.abc import Iterator
from typing import Any, Protocol

import torch as th
from stable_baselines3.common.torch_layers import FlattenExtractor, MlpExtractor, NatureCNN
from stable_baselines3.common.type_aliases import PyTorchObs
from torch import nn

from sb3_ncdpo.common.diffusion import DenoiserMLP, DenoisingChain, EpsGradHook

#: Encoder modules known to be traceable (no data-dependent control flow): SB3's own.
TRACEABLE_MODULES = (FlattenExtractor, NatureCNN, MlpExtractor)


class ChainCall(nn.Module):
    """
    ``(latent_pi, noise, time_projections) -> mean of the final step`` (the eager chain, as a module to trace;
    ``time_projections`` is :meth:`DenoiserMLP.time_projections`, an input so that calls without gradient can reuse
    it while the parameters do not change).
    """

    def __init__(self, denoiser: DenoiserMLP, chain: DenoisingChain) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.chain = chain

    def forward(self, latent_pi: th.Tensor, noise: th.Tensor, time_projections: th.Tensor) -> th.Tensor:
        cond = self.denoiser.project_condition(latent_pi)
        return self.chain.final_mean(self.denoiser.step_predictor(cond, self.chain.n_steps, time_projections), noise)


class RecordedChainCall(ChainCall):
    """
    ``(latent_pi, noise, time_projections) -> (inputs, means)`` of :meth:`DenoisingChain.record` (DPPO's rollout
    chain: every step's input and mean), as a module to trace.
    """

    def forward(  # type: ignore[override]
        self, latent_pi: th.Tensor, noise: th.Tensor, time_projections: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor]:
        cond = self.denoiser.project_condition(latent_pi)
        return self.chain.record(self.denoiser.step_predictor(cond, self.chain.n_steps, time_projections), noise)


class TracedPolicy(Protocol):
    """What the traced calls use of the policy (:class:`~sb3_ncdpo.common.policies.DiffusionActorCriticPolicy`)."""

    @property
    def denoiser(self) -> DenoiserMLP: ...

    @property
    def chain(self) -> DenoisingChain: ...

    @property
    def value_net(self) -> nn.Module: ...

    @property
    def frozen_actor(self) -> nn.Module | None: ...

    @property
    def gradient_checkpointing(self) -> bool: ...

    def _latents(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor]: ...

    def _floored_log_std(self) -> th.Tensor: ...

    @property
    def _scored_dims(self) -> int | None: ...


class ActorCriticCall(nn.Module):
    """
    ``(obs, noise, time_projections) -> (mean of the final step, value)``: everything a rollout or an update computes
    but the final distribution, as a module to trace when the policy's encoders are SB3's own
    (:data:`TRACEABLE_MODULES`).

    :param policy: The policy
    """

    def __init__(self, policy: TracedPolicy) -> None:
        super().__init__()
        self.policy = policy
        self.chain = ChainCall(policy.denoiser, policy.chain)

    def forward(self, obs: th.Tensor, noise: th.Tensor, time_projections: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        latent_pi, latent_vf = self.policy._latents(obs)
        return self.chain(latent_pi, noise, time_projections), self.policy.value_net(latent_vf)


class GaussianActCall(nn.Module):
    """
    ``(obs, noise, draw, time_projections) -> (actions, values, log_prob)``: a Box policy's whole rollout call, final
    Gaussian included, as a module to trace. The same operations as SB3's ``DiagGaussianDistribution`` on torch's
    ``Normal`` (``sample`` is ``draw * std + mean`` on a standard normal draw, ``log_prob`` is ``Normal.log_prob``
    summed over the action), so the results are bit-identical to it (tested); at batch 1 the distribution objects cost
    more than their arithmetic (~130 µs of a ~600 µs rollout call on Hopper-v5).

    :param policy: The policy (a Box action space)
    """

    def __init__(self, policy: TracedPolicy) -> None:
        super().__init__()
        self.policy = policy
        self.actor_critic = ActorCriticCall(policy)

    def forward(
        self, obs: th.Tensor, noise: th.Tensor, draw: th.Tensor, time_projections: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        mean, values = self.actor_critic(obs, noise, time_projections)
        std = th.ones_like(mean) * self.policy._floored_log_std().exp()
        actions = draw * std + mean
        log_prob = -((actions - mean) ** 2) / (2 * std**2) - std.log() - math.log(math.sqrt(2 * math.pi))
        scored = self.policy._scored_dims
        return actions, values, (log_prob if scored is None else log_prob[:, :scored]).sum(dim=1)


class Traced:
    """
    Calls ``module(*inputs)`` (tensors in, tensors out) through a TorchScript trace that shares the module's
    parameters, so that in-place updates (the optimizer, ``load_state_dict``) are seen at the next call. Autograd
    records the traced operations like eager ones (same gradients, bit for bit: tested), without Python's overhead in
    the forward. One trace per input shapes, dtype, device, train/eval mode and grad mode (tracing takes ~0.1 s); where
    tracing fails, calls stay eager. Not an ``nn.Module``: it adds nothing to the owner's ``state_dict``, and pickling
    or copying drops the traces.

    :param module: What to trace
    :param mode_of: The module whose train/eval mode is the traced code's (the policy: ``set_training_mode`` switches
        the policy's modules, not this wrapper's ``module``); ``module`` itself by default
    """

    def __init__(self, module: nn.Module, mode_of: nn.Module | None = None) -> None:
        self.module = module
        self.mode_of = module if mode_of is None else mode_of
        self.traces: dict[tuple[Any, ...], Any] = {}
        #: Set to False to run ``module`` eagerly (debugging, or to compare against the eager code)
        self.enabled = True

    def __call__(self, *inputs: Any) -> Any:
        if not self.enabled:
            return self.module(*inputs)
        first = inputs[0]
        key = (*(tuple(x.shape) for x in inputs), first.dtype, first.device, self.mode_of.training, th.is_grad_enabled())
        if key not in self.traces:
            self.traces[key] = self._trace(inputs)
        trace = self.traces[key]
        if trace is None:
            return self.module(*inputs)
        with th.jit.optimized_execution(False):
            return trace(*inputs)

    def _trace(self, inputs: tuple[th.Tensor, ...]) -> Any:
        """:return: The trace for these inputs' key, or ``None`` (eager calls) where TorchScript cannot trace it"""
        with warnings.catch_warnings():
            # The traced code's only Python-level conditions are on shapes and settings, fixed for a given key.
            # TorchScript is deprecated in favour of torch.compile / torch.export, neither of which helps here
            # (torch.compile was slower than eager for the rollout call on CPU); if a torch release drops or breaks
            # tracing, calls stay eager (same numbers, slower).
            warnings.simplefilter("ignore", th.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                with th.jit.optimized_execution(False):
                    trace = th.jit.trace(self.module, inputs, check_trace=False)
                # Submodule calls inlined (same operations, fewer interpreter call frames: ~45 µs of a ~630 µs rollout
                # call on Hopper-v5). A private pass: without it the trace still runs, not inlined.
                inline = getattr(th._C, "_jit_pass_inline", None)
                if inline is not None:
                    inline(trace.graph)
                return trace
            except Exception as error:  # any tracing failure means: run eagerly
                warnings.warn(f"{type(self.module).__name__} could not be traced, it runs eagerly (slower): {error!r}")
                return None

    def __getstate__(self) -> dict[str, Any]:
        return {"module": self.module, "mode_of": self.mode_of, "traces": {}, "enabled": self.enabled}


class PolicyTraces:
    """
    The traced calls of one policy, and the one rule for when a call runs through its trace (:meth:`pick`).

    ``chain`` (latent -> final mean) and ``recorded_chain`` (latent -> every step's input and mean) trace only this
    package's code and always exist; ``actor_critic`` (observation -> final mean, value) and ``act`` (observation ->
    actions, values, log-probs: the final Gaussian inside the trace) also trace the observation encoders and the critic,
    so they exist only where those are SB3's own modules (:data:`TRACEABLE_MODULES`), ``act`` only for a Box.

    :param policy: The policy (its ``denoiser``, ``chain`` and encoders exist)
    :param encoders: The policy's encoder modules (features extractors, MLP extractor)
    :param gaussian: Whether the final step is a Gaussian (Box actions)
    """

    def __init__(self, policy: TracedPolicy, encoders: tuple[nn.Module, ...], gaussian: bool) -> None:
        assert isinstance(policy, nn.Module)
        self.policy = policy
        self.chain = Traced(ChainCall(policy.denoiser, policy.chain), mode_of=policy)
        self.recorded_chain = Traced(RecordedChainCall(policy.denoiser, policy.chain), mode_of=policy)
        traceable = all(type(module) in TRACEABLE_MODULES for module in encoders)
        self.actor_critic = Traced(ActorCriticCall(policy), mode_of=policy) if traceable else None
        self.act = Traced(GaussianActCall(policy), mode_of=policy) if traceable and gaussian else None
        self._time_projections: tuple[tuple[tuple[int, int], ...], th.Tensor] | None = None

    def time_projections(self) -> th.Tensor:
        """
        The traces' time input: :meth:`DenoiserMLP.time_projections` of the policy's K steps. With gradient it is
        computed anew; without (rollouts, prediction) it is kept until one of the parameters it depends on changes
        storage or is updated in place (which bumps its version counter), and at most until the next
        :meth:`forget_time_projections` (the policy's ``set_training_mode``: SB3 calls it at the start of every rollout
        and ``predict``; changes through ``param.data`` bump no version counter). A rollout then pays for the time MLP
        once, not once per call (~10 operations of the ~100 µs fixed cost of the chain at batch 1).

        :return: Shape ``(K, width)``; row ``k - 1`` belongs to step ``k``
        """
        denoiser, n_steps = self.policy.denoiser, self.policy.chain.n_steps
        if th.is_grad_enabled():
            return denoiser.time_projections(n_steps)
        key = tuple((p.data_ptr(), p._version) for p in (*denoiser.time_mlp.parameters(), denoiser.input_t.weight))
        if self._time_projections is None or self._time_projections[0] != key:
            self._time_projections = (key, denoiser.time_projections(n_steps))
        return self._time_projections[1]

    def forget_time_projections(self) -> None:
        """Compute the time projections anew at the next call without gradient."""
        self._time_projections = None

    def pick(
        self, traced: Traced | None, obs: PyTorchObs | None = None, eps_grad_hook: EpsGradHook | None = None
    ) -> Traced | None:
        """
        The rule: a call runs through its trace unless a gradient hook needs the eager graph, or the early denoising
        steps run the frozen copy of the actor (``n_finetuned_steps``: two denoisers in one chain), or the call computes
        gradients with ``gradient_checkpointing`` (traces cannot recompute a step), or the call takes the observation
        and that is a ``Dict`` (traces take tensors), or the call has no trace (user encoders).

        :param traced: The call's trace, one of this object's attributes (``None`` where it has none)
        :param obs: The observation, for the calls that take one
        :param eps_grad_hook: The gradient hook the caller needs, if any
        :return: ``traced`` where the rule allows it, else ``None`` (run the eager code)
        """
        if traced is None or eps_grad_hook is not None or self.policy.frozen_actor is not None:
            return None
        if self.policy.gradient_checkpointing and th.is_grad_enabled():
            return None
        return traced if obs is None or isinstance(obs, th.Tensor) else None

    @contextlib.contextmanager
    def eager(self) -> Iterator[None]:
        """Context in which every call runs the eager code (to compare against it, or to debug)."""
        traces = [t for t in (self.chain, self.recorded_chain, self.actor_critic, self.act) if t is not None]
        enabled = [t.enabled for t in traces]
        for t in traces:
            t.enabled = False
        try:
            yield
        finally:
            for t, state in zip(traces, enabled, strict=True):
                t.enabled = state
