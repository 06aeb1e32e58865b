"""
Refactoring must not change a number the code computes: the parameters after a fixed short run are pinned, for both
algorithms, as the code computed them at commit 0df43c7 (before the one-core refactor) with torch 2.13.0 CPU, one
thread, and MuJoCo 4.0.0. Other builds round differently: the test is skipped there. NCDPO's defaults of 0.2 changed
what it computes on purpose (the gradient clipped per parameter group): the 0.1 rule still gives 0.1's parameters,
and the new default has its own pinned hash. MuJoCo 3.3.0 (the project's since Meta-World joined it) simulates
differently: its hashes were computed by the same code (commit 1252371), which gave 4.0.0's hashes on 4.0.0.
"""

import hashlib
import importlib.metadata

import pytest
import torch as th

from sb3_ncdpo import DPPO, NCDPO

#: The pinned hashes of the three runs below, by MuJoCo version (torch 2.13.0+cpu).
PINNED = {
    "4.0.0": ("d720b7551187a8f0", "91adc115b2040f08", "98fbd9ee25122958"),
    "3.3.0": ("588e7bfb291cf1fb", "caf6dc33f8c5c766", "9040a63f9a01b838"),
}
MUJOCO = importlib.metadata.version("mujoco")
PINNED_BUILD = th.__version__ == "2.13.0+cpu" and MUJOCO in PINNED


def parameter_hash(model) -> str:
    """:return: The first 16 hex digits of the sha256 of the concatenated parameter bytes (the README's command)"""
    return hashlib.sha256(b"".join(p.detach().cpu().numpy().tobytes() for p in model.policy.parameters())).hexdigest()[:16]


@pytest.mark.skipif(not PINNED_BUILD, reason=f"the hashes are those of torch 2.13.0+cpu with mujoco {' or '.join(PINNED)}")
@pytest.mark.parametrize(
    "run, algo, kwargs",
    [
        (0, NCDPO, dict(batch_size=32, clip_grad_per_group=False, policy_kwargs=dict(log_std_init=-2))),
        (1, NCDPO, dict(batch_size=32, policy_kwargs=dict(log_std_init=-2))),
        (2, DPPO, dict(batch_size=320)),
    ],
)
def test_a_fixed_run_ends_with_the_pinned_parameters(run, algo, kwargs):
    assert th.get_num_threads() == 1  # conftest.py
    model = algo("MlpPolicy", "Hopper-v5", n_steps=256, n_epochs=2, seed=0, device="cpu", **kwargs).learn(1024)
    assert parameter_hash(model) == PINNED[MUJOCO][run]
