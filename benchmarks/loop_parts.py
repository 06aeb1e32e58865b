"""
NCDPO's rollout and update timed inside one process, without env start-up or model building: the time of
``collect_rollouts`` and of ``train`` on PPO's packaged settings for the env, medians over ``--iterations`` rounds
(after one warm-up round). Meant for old-vs-new checks of a code change, one process per version, alternating, pinned
to one core (the machine's speed drifts more between whole runs than such a change moves it)::

    for i in 1 2 3 4; do for v in /tmp/at-0df43c7 .; do PYTHONPATH=$v taskset -c 1 python benchmarks/loop_parts.py; done; done
"""

import argparse
import statistics
import time
from pathlib import Path

import torch as th
import yaml
from stable_baselines3.common.env_util import make_vec_env
from torch import nn

from sb3_ncdpo import NCDPO


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="Hopper-v5", help="an env with an entry in hyperparams/ppo.yml (one env)")
    parser.add_argument("--k", type=int, default=10, help="denoising steps")
    parser.add_argument("--iterations", type=int, default=4)
    args = parser.parse_args()
    th.set_num_threads(1)
    # This checkout's file, not the package's: the script also measures older versions put first on PYTHONPATH.
    with open(Path(__file__).resolve().parent.parent / "hyperparams" / "ppo.yml") as file:
        hyperparams = dict(yaml.safe_load(file)[args.env])
    for key in ("n_timesteps", "policy", "normalize", "n_envs"):
        hyperparams.pop(key, None)
    policy_kwargs = hyperparams.get("policy_kwargs", {})
    if isinstance(policy_kwargs, str):
        policy_kwargs = eval(policy_kwargs, {"dict": dict, "nn": nn, "th": th})
    hyperparams["policy_kwargs"] = {**policy_kwargs, "n_denoising_steps": args.k}
    model = NCDPO("MlpPolicy", make_vec_env(args.env, n_envs=1, seed=0), seed=0, device="cpu", **hyperparams)
    model.learn(model.n_steps)  # warm-up: traces built, buffers allocated
    callback = model._init_callback(None)
    rollouts, updates = [], []
    for _ in range(args.iterations):
        start = time.perf_counter()
        model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
        rollouts.append(time.perf_counter() - start)
        start = time.perf_counter()
        model.train()
        updates.append(time.perf_counter() - start)
    print(f"rollout {statistics.median(rollouts):.3f} s, update {statistics.median(updates):.3f} s (n_steps={model.n_steps})")


if __name__ == "__main__":
    main()
