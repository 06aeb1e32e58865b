"""
The policy's computations through TorchScript traces of the same eager code (rollouts, prediction and updates).

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

import warnings
from typing import Any

import torch as th
from stable_baselines3.common.torch_layers import FlattenExtractor, MlpExtractor, NatureCNN
from torch import nn

from sb3_ncdpo.common.denoiser import DenoiserMLP
from sb3_ncdpo.common.diffusion import NoiseConditionedChain

#: Encoder modules known to be traceable (no data-dependent control flow): SB3's own.
TRACEABLE_MODULES = (FlattenExtractor, NatureCNN, MlpExtractor)


class ChainCall(nn.Module):
    """
    ``(latent_pi, noise, time_projections) -> mean of the final step`` (the eager chain, as a module to trace;
    ``time_projections`` is :meth:`DenoiserMLP.time_projections`, an input so that calls without gradient can reuse
    it while the parameters do not change).
    """

    def __init__(self, denoiser: DenoiserMLP, chain: NoiseConditionedChain) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.chain = chain

    def forward(self, latent_pi: th.Tensor, noise: th.Tensor, time_projections: th.Tensor) -> th.Tensor:
        cond = self.denoiser.project_condition(latent_pi)
        return self.chain.final_mean(self.denoiser.step_predictor(cond, self.chain.n_steps, time_projections), noise)


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

    def __call__(self, *inputs: th.Tensor) -> Any:
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
