"""
Refactoring must not change a number the code computes: the parameters after a fixed short run are pinned, for both
algorithms, as the code computed them at commit 0df43c7 (before the one-core refactor) with torch 2.13.0 CPU, one
thread, and MuJoCo 4.0.0. NCDPO's defaults of 0.2 changed what it computes on purpose (the gradient clipped per
parameter group): the 0.1 rule still gives 0.1's parameters, and the new default has its own pinned hash. MuJoCo 3.3.0
(the project's since Meta-World joined it) simulates differently: its hashes were computed by the same code (commit
1252371), which gave 4.0.0's hashes on 4.0.0.

The same wheels also round differently on different CPUs: on the machine of 2026-12-05 (an AVX-512 Xeon) the
simulation is bit-identical to the earlier machine's (``benchmarks/physics_fingerprint.py``) but the runs end with
other parameters. So the hashes are pinned per machine kind, told apart by :func:`numerics_fingerprint`; that
machine's were computed by the code of commit a5feac8, which gave the earlier machine's hashes there (its CI run).
On that machine, forcing other kernels (``ATEN_CPU_CAPABILITY=default``, ``MKL_ENABLE_INSTRUCTIONS=AVX2`` or
``SSE4_2``, ``MKL_CBWR=COMPATIBLE``) changed the fingerprint exactly when it changed the runs' hashes, and settings
that left the runs alone (``ONEDNN_MAX_CPU_ISA=AVX2``, numpy without AVX-512) left the fingerprint alone.
The earlier machine's fingerprint was not recorded: its hashes are accepted on a machine of unknown fingerprint, and
on such a machine any other result skips the test, printing the fingerprint to pin.
"""

import hashlib
import importlib.metadata

import numpy as np
import pytest
import torch as th

from sb3_ncdpo import DPPO, NCDPO

#: The pinned hashes of the three runs below (torch 2.13.0+cpu), by MuJoCo version and :func:`numerics_fingerprint`
#: (``None``: a machine whose fingerprint was not recorded).
PINNED: dict[tuple[str, str | None], tuple[str, str, str]] = {
    ("4.0.0", None): ("d720b7551187a8f0", "91adc115b2040f08", "98fbd9ee25122958"),
    ("3.3.0", None): ("588e7bfb291cf1fb", "caf6dc33f8c5c766", "9040a63f9a01b838"),
    ("3.3.0", "4f66550d2f00d8f6"): ("9943413d92b13593", "556fb132f9462005", "3ee328234262e3c8"),
}
MUJOCO = importlib.metadata.version("mujoco")
PINNED_MUJOCO = sorted({version for version, _ in PINNED})
PINNED_BUILD = th.__version__ == "2.13.0+cpu" and MUJOCO in PINNED_MUJOCO


def numerics_fingerprint() -> str:
    """
    :return: The first 16 hex digits of the sha256 of a small fixed computation with the operations of a training
        run (matrix products, tanh, exp, log, softplus and Adam in torch; a matrix product and exp in numpy): machines
        that round these differently get different fingerprints
    """
    generator = th.Generator().manual_seed(0)
    x = th.randn(256, 11, generator=generator)
    weights = [th.randn(11, 64, generator=generator) / 3, th.randn(64, 3, generator=generator) / 8]
    for weight in weights:
        weight.requires_grad_(True)
    optimizer = th.optim.Adam(weights, lr=1e-3)
    for _ in range(3):
        out = th.tanh(x @ weights[0]) @ weights[1]
        loss = (th.nn.functional.softplus(out).log() + out.exp()).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((64, 64))
    digest = hashlib.sha256(b"".join(w.detach().numpy().tobytes() for w in weights))
    digest.update(np.exp(np.tanh(matrix @ matrix.T / 8)).tobytes())
    return digest.hexdigest()[:16]


def parameter_hash(model) -> str:
    """:return: The first 16 hex digits of the sha256 of the concatenated parameter bytes (the README's command)"""
    return hashlib.sha256(b"".join(p.detach().cpu().numpy().tobytes() for p in model.policy.parameters())).hexdigest()[:16]


@pytest.mark.skipif(
    not PINNED_BUILD, reason=f"the hashes are those of torch 2.13.0+cpu with mujoco {' or '.join(PINNED_MUJOCO)}"
)
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
    fingerprint = numerics_fingerprint()
    if (MUJOCO, fingerprint) in PINNED:
        assert parameter_hash(model) == PINNED[MUJOCO, fingerprint][run]
    elif (MUJOCO, None) not in PINNED or parameter_hash(model) != PINNED[MUJOCO, None][run]:
        pytest.skip(f"no hashes pinned for this machine's numerics (fingerprint {fingerprint}, mujoco {MUJOCO})")
