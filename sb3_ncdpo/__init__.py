import os

from sb3_ncdpo.common.buffers import NoiseDictRolloutBuffer, NoiseRolloutBuffer
from sb3_ncdpo.common.chain_buffers import ChainDictRolloutBuffer, ChainRolloutBuffer
from sb3_ncdpo.common.policies import CnnDiffusionPolicy, DiffusionActorCriticPolicy, MultiInputDiffusionPolicy
from sb3_ncdpo.dppo import DPPO
from sb3_ncdpo.ncdpo import NCDPO
from sb3_ncdpo.registration import register_tasks

register_tasks()  # gym ids of the multi-agent tasks (sb3_ncdpo/<task>): PettingZoo is imported only when one is made

MlpDiffusionPolicy = DiffusionActorCriticPolicy

# Read version from file
version_file = os.path.join(os.path.dirname(__file__), "version.txt")
with open(version_file) as file_handler:
    __version__ = file_handler.read().strip()

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
]
