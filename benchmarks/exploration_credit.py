"""
How much of a diffusion clone's exploration NCDPO's likelihood ratio credits. NCDPO conditions on the stored chain
noise ``xi = (x_K, z_K, ..., z_2)``: its ratio is the final step's Gaussian ``N(a; mu_theta(xi, s), sigma^2)``, so only
the final step's noise ``sigma z_1`` is exploration that the policy gradient can credit; the spread of ``mu(xi, s)``
over ``xi`` (the clone's own action distribution: demonstrations with noisy actions make it wide) moves the executed
actions without entering the ratio. Per pre-trained clone and final std, on states of the clone's own deterministic
rollouts (``--n-envs`` envs seeded 0, one state every ``--every`` steps), this measures the std of the final mean over
``--n-draws`` chain-noise draws per state (per action value of the chunk; median, mean, 90th percentile) and the credited
share of the executed action's variance, ``sigma^2 / (sigma^2 + E[Var_xi mu])``. Prints a markdown table and writes it
to ``--out`` (and a JSON line per row next to it).

    python benchmarks/exploration_credit.py --env sb3_ncdpo/metaworld-pick-place-sparse-v3 \\
        --pretrained "benchmarks/out/metaworld/pretrained/{env}/diffusion_chunk4x4" --fixed-std 0.1 0.2 0.4 \\
        --out benchmarks/results/metaworld_tuning2/exploration_credit.md
"""

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.env_util import make_vec_env

from sb3_ncdpo import NCDPO


def chain_spread(env_id: str, pretrained: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """
    :param env_id: The clone's env
    :param pretrained: Its pre-trained folder
    :param args: The command line (``fixed_std``, ``n_envs``, ``n_steps``, ``every``, ``n_draws``)
    :return: Per final std NCDPO could fine-tune with: the spread of the final mean over the chain noise (the same for
        every std: the final step's std does not enter the mean) and the credited share of the action variance
    """
    env = make_vec_env(env_id, n_envs=args.n_envs, seed=0)
    model = NCDPO("MlpDiffusionPolicy", env, pretrained=pretrained, seed=0)
    venv = model.get_env()  # the clone's observation normaliser wraps the env
    assert venv is not None
    obs, states = venv.reset(), []
    for step in range(args.n_steps):
        action, _ = model.predict(obs, deterministic=True)  # type: ignore[arg-type]
        if step % args.every == 0:
            states.append(np.asarray(obs, dtype=np.float32).copy())
        obs, *_ = venv.step(action)
    venv.close()
    batch = th.as_tensor(np.concatenate(states), device=model.device)
    with th.no_grad():
        distribution = model.policy.get_distribution(batch.repeat_interleave(args.n_draws, 0))
        gaussian = distribution.distribution
        assert isinstance(gaussian, th.distributions.Normal), "a Box action space's clone is needed"
        means = gaussian.mean.reshape(batch.shape[0], args.n_draws, -1)
    spread = means.std(dim=1).flatten().cpu().numpy()
    chain_variance = float((means.var(dim=1)).mean())
    stats = {
        "env": env_id,
        "n_states": int(batch.shape[0]),
        "chain_std_median": float(np.median(spread)),
        "chain_std_mean": float(spread.mean()),
        "chain_std_p90": float(np.quantile(spread, 0.9)),
    }
    return [{**stats, "fixed_std": std, "credited_share": std**2 / (std**2 + chain_variance)} for std in args.fixed_std]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", nargs="+", required=True)
    parser.add_argument("--pretrained", required=True, help="pre-trained folder; {env} is replaced by the env id")
    parser.add_argument("--fixed-std", type=float, nargs="+", default=[0.1])
    parser.add_argument("--n-envs", type=int, default=4)
    parser.add_argument("--n-steps", type=int, default=300, help="deterministic rollout steps per env")
    parser.add_argument("--every", type=int, default=12, help="one state every this many steps")
    parser.add_argument("--n-draws", type=int, default=128, help="chain-noise draws per state")
    parser.add_argument("--out", type=Path, required=True, help="markdown table (JSON lines beside it, .jsonl)")
    args = parser.parse_args()
    if min(args.fixed_std) <= 0:
        parser.error(f"--fixed-std: values must be > 0, got {args.fixed_std}")
    for name in ("n_envs", "n_steps", "every", "n_draws"):
        if getattr(args, name) < 1 or (name == "n_draws" and args.n_draws < 2):
            parser.error(f"--{name.replace('_', '-')} must be >= {2 if name == 'n_draws' else 1}, got {getattr(args, name)}")
    for env_id in args.env:
        if not Path(args.pretrained.format(env=env_id)).is_dir():
            parser.error(f"--pretrained: no folder {args.pretrained.format(env=env_id)}")
    th.set_num_threads(1)
    rows = [row for e in args.env for row in chain_spread(e, args.pretrained.format(env=e), args)]
    lines = [
        "| env | final std (credited) | std of the final mean over the chain noise: median / mean / p90 | credited share of "
        "the action variance |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['env']} | {r['fixed_std']} | {r['chain_std_median']:.3f} / {r['chain_std_mean']:.3f} / "
        f"{r['chain_std_p90']:.3f} | {r['credited_share']:.2f} |"
        for r in rows
    ]
    text = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    args.out.with_suffix(".jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(text)


if __name__ == "__main__":
    main()
