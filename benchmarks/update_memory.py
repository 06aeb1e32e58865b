"""
The memory and time of one NCDPO update minibatch against the number of denoising steps K, with and without
``gradient_checkpointing``: the bytes autograd keeps for the backward pass (the distinct storages of its saved
tensors, which is what grows with K), and the time of forward + backward (median of ``--repeats``). Hopper-v5's sizes
(11 observations, 3 actions), the policy's defaults otherwise.

Example::

    python benchmarks/update_memory.py --ks 1 5 10 20 50 --batch 5000 --out benchmarks/results/update_memory.md
"""

import argparse
import statistics
import time
from pathlib import Path

import torch as th
from gymnasium import spaces

from sb3_ncdpo import DiffusionActorCriticPolicy
from sb3_ncdpo.common.memory import saved_tensor_bytes


def measure(k: int, batch: int, checkpointing: bool, repeats: int) -> tuple[float, float]:
    """:return: (MB kept for backward, median seconds of forward + backward) of one minibatch"""
    th.manual_seed(0)
    policy = DiffusionActorCriticPolicy(
        spaces.Box(-1.0, 1.0, (11,)), spaces.Box(-1.0, 1.0, (3,)), lambda _: 3e-4, n_denoising_steps=k,
        gradient_checkpointing=checkpointing,
    )  # fmt: skip
    obs, actions = th.randn(batch, 11), th.rand(batch, 3) * 2 - 1
    noises = policy.sample_noise(batch)

    def loss() -> th.Tensor:
        values, log_prob, entropy = policy.evaluate_actions(obs, actions, noises)
        return log_prob.mean() + values.mean() + entropy.mean()

    memory, _ = saved_tensor_bytes(loss)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        policy.zero_grad()
        loss().backward()
        times.append(time.perf_counter() - start)
    return memory / 2**20, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ks", nargs="+", type=int, default=[1, 5, 10, 20, 50])
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, help="also write the table here (markdown, with this command)")
    args = parser.parse_args()
    th.set_num_threads(1)
    lines = [
        "| K | MB kept | MB kept, checkpointing | checkpointing / K=1 | update s | update s, checkpointing | time ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    base = None
    for k in args.ks:
        plain_mb, plain_s = measure(k, args.batch, False, args.repeats)
        check_mb, check_s = measure(k, args.batch, True, args.repeats)
        base = plain_mb if base is None else base
        lines.append(
            f"| {k} | {plain_mb:.1f} | {check_mb:.1f} | {check_mb / base:.2f} | {plain_s:.3f} | {check_s:.3f} | "
            f"{check_s / plain_s:.2f} |"
        )
        print(lines[-1] if len(lines) > 3 else "\n".join(lines), flush=True)
    if args.out is not None:
        settings = f"--ks {' '.join(map(str, args.ks))} --batch {args.batch} --repeats {args.repeats} --out {args.out}"
        command = f"python benchmarks/update_memory.py {settings}"
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + f"\n\nReproduce (one torch thread, nothing else running):\n\n    {command}\n")


if __name__ == "__main__":
    main()
