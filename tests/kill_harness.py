"""
Kill real processes while they save, at random moments, and check what they leave: the harness behind
tests/test_atomic_writes.py. Also a script, to count many tries against any version of the package::

    python tests/kill_harness.py --tries 100                          # this checkout
    PYTHONPATH=/tmp/at-0df43c7 python tests/kill_harness.py --tries 20  # the code before atomic saves
"""

import argparse
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

#: The child: saves the same small model (or pre-trained folder) over ``target`` in a loop; prints "ready" once one
#: complete save exists, so that every kill lands on an overwrite of a good file.
CHILD = """
import sys
import torch as th
th.set_num_threads(1)
from sb3_ncdpo import NCDPO
kind, target = sys.argv[1], sys.argv[2]
kwargs = dict(n_denoising_steps=3, denoiser_hidden_sizes=[256, 256], net_arch=dict(pi=[256], vf=[256]))
model = NCDPO("MlpPolicy", "Pendulum-v1", n_steps=16, batch_size=16, policy_kwargs=kwargs, seed=0, device="cpu")
if kind == "model":
    save = lambda: model.save(target)
else:
    from sb3_ncdpo.common.pretrained import save_pretrained
    save = lambda: save_pretrained(target, model.policy, None, {"kind": "kill test"}, overwrite=True)
save()
print("ready", flush=True)
while True:
    save()
"""


def kill_while_saving(kind: str, folder: Path, tries: int, seed: int = 0, max_delay: float = 0.5) -> tuple[int, int]:
    """
    Start a child that saves over the same target in a loop, SIGKILL it at a random moment, then load the target.

    :param kind: ``"model"`` (``NCDPO.save`` of a zip file) or ``"pretrained"`` (``save_pretrained`` of a folder)
    :param folder: Where the targets go (one per try)
    :param tries: Children to kill
    :param seed: Seed of the random moments
    :param max_delay: The kill comes uniformly within this many seconds after the first complete save
    :return: ``(loaded, lost)``: tries after which the target loaded, and tries after which it did not
    """
    from sb3_ncdpo import NCDPO
    from sb3_ncdpo.pretrain import load_pretrained

    rng = random.Random(seed)
    loaded = lost = 0
    for i in range(tries):
        target = folder / (f"model_{i}.zip" if kind == "model" else f"pretrained_{i}")
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, kind, str(target)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert child.stdout is not None and child.stdout.readline().strip() == "ready", "the child did not start"
        time.sleep(rng.uniform(0.0, max_delay))
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        try:
            if kind == "model":
                NCDPO.load(target, device="cpu")
            else:
                load_pretrained(target, device="cpu")
            loaded += 1
        except Exception:
            lost += 1
    return loaded, lost


def main() -> None:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tries", type=int, default=20, help="kills per kind of file")
    parser.add_argument("--kinds", nargs="+", default=["model", "pretrained"], choices=["model", "pretrained"])
    args = parser.parse_args()
    print("| file | tries | loaded after the kill | lost |\n|---|---|---|---|")
    for kind in args.kinds:
        with tempfile.TemporaryDirectory() as folder:
            loaded, lost = kill_while_saving(kind, Path(folder), args.tries)
        print(f"| {kind} | {args.tries} | {loaded} | {lost} |", flush=True)


if __name__ == "__main__":
    main()
