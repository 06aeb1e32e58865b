"""Policy aliases of DPPO: the same diffusion policies as NCDPO's (SB3 naming: ``MlpPolicy``, ``CnnPolicy``, ...)."""

from sb3_ncdpo.common.policies import CnnDiffusionPolicy, DiffusionActorCriticPolicy, MultiInputDiffusionPolicy

MlpPolicy = DiffusionActorCriticPolicy
CnnPolicy = CnnDiffusionPolicy
MultiInputPolicy = MultiInputDiffusionPolicy

MlpDiffusionPolicy = DiffusionActorCriticPolicy
