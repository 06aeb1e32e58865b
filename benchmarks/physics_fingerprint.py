"""
What a MuJoCo version changes in gymnasium's MuJoCo envs: each env is stepped 2,000 times with the same seeded
random actions (reset with seed 0, then with the step index after each episode's end), and the script prints the
sha256 of the observations, the summed reward, and the first step at which the observation differs from the rows of
another version's file. Run it under each MuJoCo version and pass the first run's file to the second:

    python benchmarks/physics_fingerprint.py --out fingerprint_4.0.0.json                      # with mujoco 4.0.0
    python benchmarks/physics_fingerprint.py --out fingerprint_3.3.0.json --against fingerprint_4.0.0.json
"""

import argparse
import hashlib
import importlib.metadata
import json
from pathlib import Path

import gymnasium as gym
import numpy as np

ENVS = ["Hopper-v5", "Walker2d-v5", "HalfCheetah-v5", "Ant-v5", "InvertedDoublePendulum-v5", "Pusher-v5", "Reacher-v5"]


def fingerprint(env_id: str, n_steps: int = 2000) -> dict:
    """:return: The env's observation hash, summed reward and observations (rounded to 1e-9) under seeded random actions"""
    env = gym.make(env_id)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    digest, total, observations = hashlib.sha256(), 0.0, []
    for t in range(n_steps):
        observation, reward, terminated, truncated, _ = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
        digest.update(observation.tobytes())
        total += float(reward)
        observations.append(np.round(observation, 9).tolist())
        if terminated or truncated:
            env.reset(seed=t)
    return {"sha256": digest.hexdigest()[:16], "reward_sum": round(total, 6), "observations": observations}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="JSON file of this version's fingerprints")
    parser.add_argument("--against", type=Path, help="another version's file: print where the observations part")
    args = parser.parse_args()
    version = importlib.metadata.version("mujoco")
    results = {env_id: fingerprint(env_id) for env_id in ENVS}
    other = json.loads(args.against.read_text()) if args.against else None
    print(
        f"| env | mujoco {version}: sha256 | reward sum |"
        + (f" mujoco {other['mujoco']}: sha256 | reward sum | first step that differs |" if other else "")
    )
    print("|---|---|---|" + ("---|---|---|" if other else ""))
    for env_id, result in results.items():
        line = f"| {env_id} | {result['sha256']} | {result['reward_sum']:.1f} |"
        if other:
            theirs = other["envs"][env_id]
            ours = np.array(result["observations"])
            differs = np.flatnonzero(np.any(np.abs(ours - np.array(theirs["observations"])) > 1e-6, axis=1))
            first = str(differs[0]) if len(differs) else "none"
            line += f" {theirs['sha256']} | {theirs['reward_sum']:.1f} | {first} |"
        print(line)
    args.out.write_text(json.dumps({"mujoco": version, "envs": results}))


if __name__ == "__main__":
    main()
