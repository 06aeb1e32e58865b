"""
The denoising chain for rollouts and prediction: a TorchScript trace of the same eager code, used where no gradient is
recorded.

Why: with PPO's settings for Hopper-v5 (one env) every rollout call denoises a batch of one, K steps of about ten tiny
tensor operations each, and the per-operation cost of Python and the dispatcher dominates the arithmetic. Tracing
records those operations once; TorchScript's interpreter then runs them without the Python overhead, and since they are
the same operations on the same kernels, the result is bit-identical to the eager chain (tested), so the log-probability
stored at rollout time is the one that ``train()`` recomputes. Updates back-propagate through the eager chain.

Only the denoiser and the chain are traced: they are this package's code and have no data-dependent control flow. The
observation encoder and the critic, which may be user code (custom features extractors), always run eagerly.
"""

import warnings
from typing import Any

import torch as th
from torch import nn

from sb3_ncdpo.common.denoiser import DenoiserMLP
from sb3_ncdpo.common.diffusion import NoiseConditionedChain


class _ChainCall(nn.Module):
    """``(latent_pi, noise) -> mean of the final step``: the module that is traced."""

    def __init__(self, denoiser: DenoiserMLP, chain: NoiseConditionedChain) -> None:
        super().__init__()
        self.denoiser = denoiser
        self.chain = chain

    def forward(self, latent_pi: th.Tensor, noise: th.Tensor) -> th.Tensor:
        cond = self.denoiser.project_condition(latent_pi)
        return self.chain.final_mean(self.denoiser.step_predictor(cond, self.chain.n_steps), noise)


class TracedChain:
    """
    The final mean of a policy's chain given the conditioning latent and the noise, without gradient, through a
    TorchScript trace that shares the denoiser's parameters (in-place updates by the optimizer or ``load_state_dict``
    are seen at the next call). One trace per batch size, dtype, device and train/eval mode (tracing takes ~0.1 s). Not
    an ``nn.Module``: it adds nothing to the policy's ``state_dict``; pickling and copying drop the traces.

    :param denoiser: The policy's denoiser
    :param chain: The policy's chain
    """

    def __init__(self, denoiser: DenoiserMLP, chain: NoiseConditionedChain) -> None:
        self.call = _ChainCall(denoiser, chain)
        self.traces: dict[tuple[Any, ...], Any] = {}

    def __call__(self, latent_pi: th.Tensor, noise: th.Tensor) -> th.Tensor:
        """
        :param latent_pi: Conditioning latent, ``(batch, latent_dim)``
        :param noise: Stored noise, ``(batch, K, dim)``
        :return: Mean of the final step, ``(batch, dim)``
        """
        key = (tuple(latent_pi.shape), tuple(noise.shape), latent_pi.dtype, latent_pi.device, self.call.training)
        if key not in self.traces:
            self.traces[key] = self._trace(latent_pi, noise)
        trace = self.traces[key]
        if trace is None:
            return self.call(latent_pi, noise)
        with th.jit.optimized_execution(False):
            return trace(latent_pi, noise)

    def _trace(self, latent_pi: th.Tensor, noise: th.Tensor) -> Any:
        """:return: The trace for these inputs' key, or ``None`` (eager calls) where TorchScript cannot trace it"""
        with warnings.catch_warnings():
            # The chain's only Python-level conditions are on shapes and settings, fixed for a given key. TorchScript
            # is deprecated in favour of torch.compile / torch.export, neither of which helps here (torch.compile was
            # slower than eager for this call on CPU); if a torch release drops or breaks tracing, calls stay eager.
            warnings.simplefilter("ignore", th.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                with th.jit.optimized_execution(False):
                    return th.jit.trace(self.call, (latent_pi, noise), check_trace=False)
            except Exception as error:  # any tracing failure means: run eagerly (the same numbers, slower)
                warnings.warn(f"the denoising chain could not be traced, rollouts run it eagerly (slower): {error!r}")
                return None

    def __getstate__(self) -> dict[str, Any]:
        return {"call": self.call, "traces": {}}
