"""Demonstrations (Minari), behaviour cloning and the pre-trained file that fine-tuning starts from."""

from sb3_ncdpo.pretrain.pretrained import (
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
