"""
DPPO's rollout chain: the denoising chain that also returns every step's input ``x_k`` and mean ``mu(x_k, k, s)``, run
without gradient through a TorchScript trace of the eager code (:class:`~sb3_ncdpo.common.traced.Traced`: same
operations, bit-identical results, less per-operation overhead at small batches).
"""

import torch as th

from sb3_ncdpo.common.diffusion import EpsModel, NoiseConditionedChain
from sb3_ncdpo.common.traced import ChainCall


def record_chain(chain: NoiseConditionedChain, eps_model: EpsModel, noise: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
    """
    Run the chain ``x_K -> x_1`` with the given noise (:meth:`NoiseConditionedChain.final_mean`) and keep its inputs.

    :param chain: The chain
    :param eps_model: ``eps_model(x_k, k)``, the network's prediction at step ``k``
    :param noise: Stored noise, shape ``(batch, K, dim)``
    :return: ``(inputs, means)``, each ``(batch, K, dim)``: ``x_k`` and ``mu(x_k, k)`` of step ``k`` at index ``K - k``
        (``means[:, -1]`` is the mean of the final step)
    """
    inputs: list[th.Tensor] = []
    means: list[th.Tensor] = []

    def recording_eps_model(x: th.Tensor, k: int) -> th.Tensor:
        # final_mean calls eps_model(x_k, k) for k = K .. 1 in that order: its inputs are the chain
        prediction = eps_model(x, k)
        inputs.append(x)
        means.append(chain.step_mean(x, prediction, k))
        return prediction

    chain.final_mean(recording_eps_model, noise)
    return th.stack(inputs, dim=1), th.stack(means, dim=1)


class RecordedChainCall(ChainCall):
    """
    ``(latent_pi, noise, time_projections) -> (inputs, means)`` of :func:`record_chain` (the eager code, as a module
    to trace).
    """

    def forward(  # type: ignore[override]
        self, latent_pi: th.Tensor, noise: th.Tensor, time_projections: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor]:
        cond = self.denoiser.project_condition(latent_pi)
        return record_chain(self.chain, self.denoiser.step_predictor(cond, self.chain.n_steps, time_projections), noise)
