"""Policy aliases of NCDPO (SB3 naming: ``MlpPolicy``, ``CnnPolicy``, ``MultiInputPolicy``)."""

from sb3_ncdpo.common.policies import CnnDiffusionPolicy, DiffusionActorCriticPolicy, MultiInputDiffusionPolicy

MlpPolicy = DiffusionActorCriticPolicy
CnnPolicy = CnnDiffusionPolicy
MultiInputPolicy = MultiInputDiffusionPolicy

MlpDiffusionPolicy = DiffusionActorCriticPolicy
