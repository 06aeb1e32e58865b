"""
The diffusion side of the package, torch only (no Stable-Baselines3, no gymnasium): the chain interface and its
registry (:mod:`.chain`), the DDPM / DDIM chains (:mod:`.gaussian`), their noise schedules and the denoiser network.
"""

from sb3_ncdpo.common.diffusion.chain import (
    BatchPredictor,
    ChainConfig,
    DenoisingChain,
    EpsGradHook,
    EpsModel,
    chain_class,
    make_chain,
    register_chain,
    registered_samplers,
)
from sb3_ncdpo.common.diffusion.denoiser import DenoiserMLP
from sb3_ncdpo.common.diffusion.gaussian import DDIMChain, DDPMChain, DiffusionChain, StepCoefficients
from sb3_ncdpo.common.diffusion.schedules import cosine_betas, linear_betas, make_betas

__all__ = [
    "BatchPredictor",
    "ChainConfig",
    "DDIMChain",
    "DDPMChain",
    "DenoiserMLP",
    "DenoisingChain",
    "DiffusionChain",
    "EpsGradHook",
    "EpsModel",
    "StepCoefficients",
    "chain_class",
    "cosine_betas",
    "linear_betas",
    "make_betas",
    "make_chain",
    "register_chain",
    "registered_samplers",
]
