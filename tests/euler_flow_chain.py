"""
A chain that is not a diffusion chain, written against the chain interface only: a rectified-flow Euler chain (Liu et
al., 2022), ``x_t = (1 - t) x_0 + t eps`` with ``t = k / K``. tests/test_chain_interface.py registers it under
``sampler="euler"`` and runs the policy, behaviour cloning, NCDPO and DPPO on it: a new chain is this one file plus one
``register_chain`` call.
"""

import torch as th
from torch.nn import functional as F

from sb3_ncdpo.common.diffusion import BatchPredictor, DenoisingChain


class EulerFlowChain(DenoisingChain):
    """
    Euler steps of the flow from noise (``t = 1``) to data (``t = 0``). With ``prediction_type="sample"`` the network
    predicts the clean sample ``x0_hat`` (clipped like the diffusion chains') and the step is
    ``x_{k-1} = x_k + (x0_hat - x_k) / k``, which lands on ``x0_hat`` at ``k = 1``; with ``"epsilon"`` it predicts the
    velocity ``eps - x_0`` and the step is ``x_{k-1} = x_k - velocity / K``. Steps ``k >= 2`` add ``min_step_std``
    noise (none by default: a deterministic chain, the exploration is the final Gaussian's).
    """

    def step_mean(self, x_k: th.Tensor, prediction: th.Tensor, k: int) -> th.Tensor:
        if self.config.prediction_type == "epsilon":
            return x_k - prediction / self.n_steps
        clip = self.config.x0_clip
        if clip is not None and (k > 1 or self.config.x0_clip_final):
            prediction = prediction.clamp(-clip, clip)
        return x_k + (prediction - x_k) / k

    def noise_std(self, k: int) -> float:
        return 0.0 if k == 1 else float(self.config.min_step_std)

    def training_loss(self, predict: BatchPredictor, targets: th.Tensor, generator: th.Generator | None = None) -> th.Tensor:
        steps = th.randint(1, self.n_steps + 1, (targets.shape[0],), generator=generator).to(targets.device)
        noise = th.randn(targets.shape, generator=generator).to(targets)
        t = (steps.to(targets) / self.n_steps).unsqueeze(-1)
        noisy = (1 - t) * targets + t * noise
        target = noise - targets if self.config.prediction_type == "epsilon" else targets
        return F.mse_loss(predict(noisy, steps), target)
