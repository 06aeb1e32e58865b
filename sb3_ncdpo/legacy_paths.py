"""
Module paths under which files saved by sb3-ncdpo 0.1 name classes that have since moved: a saved model's
``rollout_buffer_class`` and DPPO's ``denoising_mdp``, a fine-tuned model's ``vecnormalize.pkl``
(``FrozenRunningMeanStd``). Unpickling imports the old path; :func:`register` makes it the module that now holds the
class, so those files keep loading (tests/test_legacy_files.py).
"""

import sys
from types import ModuleType

from sb3_ncdpo.common import pretrained
from sb3_ncdpo.dppo import buffers as dppo_buffers
from sb3_ncdpo.dppo import denoising_mdp
from sb3_ncdpo.ncdpo import buffers as ncdpo_buffers

#: Old module path -> the module that holds its classes now
MOVED_MODULES: dict[str, ModuleType] = {
    "sb3_ncdpo.common.buffers": ncdpo_buffers,
    "sb3_ncdpo.common.chain_buffers": dppo_buffers,
    "sb3_ncdpo.common.denoising_mdp": denoising_mdp,
    "sb3_ncdpo.pretrain.pretrained": pretrained,
}


def register() -> None:
    """Make every old module path importable (the package's ``__init__`` calls it)."""
    for name, module in MOVED_MODULES.items():
        sys.modules.setdefault(name, module)
