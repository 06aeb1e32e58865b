from sb3_ncdpo.dppo.dppo import DPPO
from sb3_ncdpo.dppo.policies import CnnPolicy, MlpPolicy, MultiInputPolicy

__all__ = ["DPPO", "CnnPolicy", "MlpPolicy", "MultiInputPolicy"]
