"""Demonstrations (Minari) and behaviour cloning; the pre-trained folder they write is :mod:`sb3_ncdpo.common.pretrained`."""

from sb3_ncdpo.common.pretrained import (
    FrozenRunningMeanStd,
    Pretrained,
    init_from_pretrained,
    load_pretrained,
    pretrained_policy_kwargs,
    save_pretrained,
)

__all__ = [
    "FrozenRunningMeanStd",
    "Pretrained",
    "init_from_pretrained",
    "load_pretrained",
    "pretrained_policy_kwargs",
    "save_pretrained",
]
