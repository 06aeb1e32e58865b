from sb3_ncdpo import legacy_paths
from sb3_ncdpo.common.policies import CnnDiffusionPolicy, DiffusionActorCriticPolicy, MultiInputDiffusionPolicy
from sb3_ncdpo.dppo import DPPO
from sb3_ncdpo.dppo.buffers import ChainDictRolloutBuffer, ChainRolloutBuffer
from sb3_ncdpo.ncdpo import NCDPO
from sb3_ncdpo.ncdpo.buffers import NoiseDictRolloutBuffer, NoiseRolloutBuffer
from sb3_ncdpo.registration import register_tasks
from sb3_ncdpo.version import __version__

register_tasks()  # gym ids of the multi-agent tasks (sb3_ncdpo/<task>): PettingZoo is imported only when one is made
legacy_paths.register()  # files saved by 0.1 name some classes by their old module paths

MlpDiffusionPolicy = DiffusionActorCriticPolicy

__all__ = [
    "DPPO",
    "NCDPO",
    "ChainDictRolloutBuffer",
    "ChainRolloutBuffer",
    "CnnDiffusionPolicy",
    "DiffusionActorCriticPolicy",
    "MlpDiffusionPolicy",
    "MultiInputDiffusionPolicy",
    "NoiseDictRolloutBuffer",
    "NoiseRolloutBuffer",
    "__version__",
]
