from sb3_ncdpo.ncdpo.ncdpo import NCDPO
from sb3_ncdpo.ncdpo.policies import CnnPolicy, MlpPolicy, MultiInputPolicy

__all__ = ["NCDPO", "CnnPolicy", "MlpPolicy", "MultiInputPolicy"]
