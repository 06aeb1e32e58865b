"""
What a behaviour-cloned policy scores depending on how its action is read out. A diffusion clone has no single
"deterministic" action: the package's (``predict(deterministic=True)``, what ``compare`` and ``EvalCallback`` evaluate)
runs the chain from zero noise, which is not the mean of the clone's action distribution; a Gaussian clone's
deterministic action is its mean, the average of the demonstrations' actions in a state. Per pre-trained folder this
plays ``--n-episodes`` episodes (envs seeded ``--seed``, ``--seed`` + 1, ...: one episode each) with each read-out and
prints the return (mean ± std over episodes):

- diffusion clone, through the policy's ``deterministic_draws``: ``zero-noise`` (0, the package's default deterministic
  action), ``sampled`` (1: one chain sample, its final mean: the clone as a generative model, as NCDPO's rollouts act
  before the final step's noise) and ``mean of N`` (N: the average final mean over ``--n-draws`` chain samples, the
  clone's estimate of the demonstrations' mean action, what a Gaussian clone acts with); each with the chunk's
  ``n_action_steps`` actions run open loop, as trained, and re-planned every env step (``replan``: only the chunk's
  first action runs);
- Gaussian clone: ``mean`` (its deterministic action) and ``sampled`` (its own std).

Writes a markdown table to ``--out`` and a JSON line per row beside it (``.jsonl``).

    python benchmarks/clone_modes.py --env Hopper-v5 Walker2d-v5 HalfCheetah-v5 \\
        --pretrained "benchmarks/out/locomotion/pretrained/{env}/diffusion_chunk4x4" \\
        --gaussian "benchmarks/out/locomotion/pretrained/{env}/gaussian" \\
        --out benchmarks/results/locomotion_diagnosis/clone_modes.md
"""

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.policies import ActorCriticPolicy

from sb3_ncdpo.common.policies import DiffusionActorCriticPolicy
from sb3_ncdpo.common.pretrained import Pretrained, load_pretrained
from sb3_ncdpo.compare.results import write_atomically

#: A read-out: normalised observations (n_envs, obs_dim) -> actions in the env's units (n_envs, n_exec, action_dim)
ReadOut = Callable[[th.Tensor], np.ndarray]


def play(env_id: str, pretrained: Pretrained, read_out: ReadOut, n_exec: int, args: argparse.Namespace) -> list[float]:
    """
    :param env_id: The env
    :param pretrained: The clone (its observation normalisation is applied to the observations)
    :param read_out: Its actions for a batch of observations: ``n_exec`` actions per env, run open loop
    :param n_exec: Env steps per decision
    :param args: The command line (``n_episodes``, ``seed``)
    :return: The return of each env's first episode
    """
    venv = make_vec_env(env_id, n_envs=args.n_episodes, seed=args.seed)
    obs = venv.reset()
    assert isinstance(obs, np.ndarray), "a Box observation space is needed"
    returns: list[float | None] = [None] * args.n_episodes
    while any(r is None for r in returns):
        normalised = obs if pretrained.vec_normalize is None else pretrained.vec_normalize.normalize_obs(obs)
        with th.no_grad():
            chunk = read_out(th.as_tensor(np.asarray(normalised, dtype=np.float32)))
        for step in range(n_exec):
            # An env whose first episode ended runs on (its later episodes are not counted), so the batch stays whole.
            obs, _, dones, infos = venv.step(chunk[:, step])
            assert isinstance(obs, np.ndarray)
            for index in np.flatnonzero(dones):
                if returns[index] is None:
                    returns[index] = float(infos[index]["episode"]["r"])
    venv.close()
    return [float(r) for r in returns if r is not None]


def diffusion_read_outs(policy: DiffusionActorCriticPolicy, n_draws: int) -> dict[str, tuple[ReadOut, int]]:
    """
    :param policy: A diffusion clone (Box actions)
    :param n_draws: Chain samples averaged by ``mean of N``
    :return: Each read-out with its env steps per decision
    """
    chunk_shape = (policy.horizon, *policy.action_space.shape)  # type: ignore[misc]

    def read_out(draws: int, n_exec: int) -> ReadOut:
        def act(obs: th.Tensor) -> np.ndarray:
            policy.deterministic_draws = draws  # the policy's own read-out (0: zero noise; n: the mean of n samples)
            chunks = policy._predict(obs, deterministic=True).reshape(-1, *chunk_shape)[:, :n_exec].cpu().numpy()
            return policy.unscale_action(chunks)

        return act

    chains = {"zero-noise": 0, "sampled": 1, f"mean of {n_draws}": n_draws}
    read_outs: dict[str, tuple[ReadOut, int]] = {}
    for replan in (False, True):
        n_exec = 1 if replan else policy.n_action_steps
        for name, draws in chains.items():
            read_outs[name + (", replan" if replan else "")] = (read_out(draws, n_exec), n_exec)
    return read_outs


def gaussian_read_outs(pretrained: Pretrained) -> dict[str, tuple[ReadOut, int]]:
    """
    :param pretrained: A Gaussian clone (SB3's ``ActorCriticPolicy``, Box actions)
    :return: Its mean and its samples, clipped to the action bounds as SB3's ``predict`` does
    """
    policy = pretrained.policy
    space = policy.action_space
    assert isinstance(policy, ActorCriticPolicy) and isinstance(space, spaces.Box)

    def read(deterministic: bool) -> ReadOut:
        def read_out(obs: th.Tensor) -> np.ndarray:
            actions = policy.get_distribution(obs).get_actions(deterministic=deterministic).cpu().numpy()
            return np.clip(actions, space.low, space.high)[:, None]

        return read_out

    return {"mean": (read(True), 1), "sampled": (read(False), 1)}


def measure(env_id: str, folder: str, kind: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """
    :param env_id: The env
    :param folder: The clone's pre-trained folder
    :param kind: ``diffusion`` or ``gaussian``
    :param args: The command line
    :return: One row per read-out
    """
    pretrained = load_pretrained(folder, device="cpu")
    pretrained.policy.set_training_mode(False)
    if kind == "diffusion":
        assert isinstance(pretrained.policy, DiffusionActorCriticPolicy)
        read_outs = diffusion_read_outs(pretrained.policy, args.n_draws)
    else:
        read_outs = gaussian_read_outs(pretrained)
    rows = []
    for name, (read_out, n_exec) in read_outs.items():
        th.manual_seed(args.seed)
        returns = play(env_id, pretrained, read_out, n_exec, args)
        rows.append({"env": env_id, "clone": kind, "read_out": name, "returns": returns})
        print(f"{env_id} {kind} {name}: {np.mean(returns):.0f} ± {np.std(returns):.0f}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", nargs="+", required=True)
    parser.add_argument("--pretrained", required=True, help="diffusion clone's folder; {env} is replaced by the env id")
    parser.add_argument("--gaussian", default=None, help="Gaussian clone's folder, likewise (optional)")
    parser.add_argument("--n-episodes", type=int, default=10)
    parser.add_argument("--n-draws", type=int, default=32, help="chain samples averaged by the 'mean of N' read-out")
    parser.add_argument(
        "--seed", type=int, default=10_000, help="seed of the first env (compare's evaluation env: 10,000 + seed)"
    )
    parser.add_argument("--out", type=Path, required=True, help="markdown table (JSON lines beside it, .jsonl)")
    args = parser.parse_args()
    for name in ("n_episodes", "n_draws"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    folders = [
        (e, t.format(env=e), kind)
        for e in args.env
        for t, kind in ((args.pretrained, "diffusion"), (args.gaussian, "gaussian"))
        if t
    ]
    for _, folder, _ in folders:
        if not Path(folder).is_dir():
            parser.error(f"no pre-trained folder {folder}")
    th.set_num_threads(1)
    rows = [row for env_id, folder, kind in folders for row in measure(env_id, folder, kind, args)]
    lines = ["| env | clone | read-out | return (mean ± std) | per episode |", "|---|---|---|---|---|"]
    lines += [
        f"| {r['env']} | {r['clone']} | {r['read_out']} | {np.mean(r['returns']):.0f} ± {np.std(r['returns']):.0f} | "
        + ", ".join(f"{x:.0f}" for x in r["returns"])
        + " |"
        for r in rows
    ]
    text = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # atomically: a kill while writing leaves the previous table whole
    write_atomically(args.out, text + "\n")
    write_atomically(args.out.with_suffix(".jsonl"), "".join(json.dumps(r) + "\n" for r in rows))
    print(text)


if __name__ == "__main__":
    main()
