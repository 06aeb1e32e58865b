"""
The fine-tuning benchmark: expert -> medium demonstrations (Minari) -> behaviour cloning -> online fine-tuning.

Stages (each one skips what its outputs already hold, so the script resumes where it stopped):

1. ``experts``: PPO with the packaged ``hyperparams/ppo.yml`` values (``sb3_ncdpo.compare.make_model``), with a
   checkpoint (model + VecNormalize statistics) every ``--checkpoint-freq`` steps; every checkpoint is evaluated.
   Meta-World ids (``sb3_ncdpo/metaworld-<task>(-sparse)-v3``) skip it: their expert is Meta-World's scripted policy.
2. ``demos``: the "medium" policy is the checkpoint whose return is closest to ``--medium-ratio`` times the expert's
   (D4RL's medium policies reach about a third of the expert); ``collect_demos`` records its stochastic actions into
   a local Minari dataset ``sb3-ncdpo/<env>/medium-v0``. On a Meta-World id, ``collect_policy_demos`` records the
   scripted expert with Gaussian action noise (``--action-noise``; ``--noisy-action-noise`` on a share
   ``--noisy-fraction`` of the episodes), with each step's success flag.
3. ``pretrain``: behaviour cloning of a diffusion policy (for NCDPO and DPPO; with ``--chunk``, with those action
   chunks) and of a Gaussian policy with PPO's architecture (for PPO, without chunks) on that dataset, for at most
   ``--bc-steps`` steps and, with ``--bc-patience``, until the validation loss stops improving.
4. ``finetune``: ``sb3-ncdpo compare`` runs from the pre-trained folders (``--pretrained``), evaluated at step 0 (the
   BC policy) and on a schedule; then the report: compare's CSV / curves / summary, plus ``finetune.md`` (expert,
   demo, BC and fine-tuned returns side by side).

Example (what benchmarks/results/finetune was made with is in its README)::

    python benchmarks/finetune.py --env Hopper-v5 --algos ncdpo ppo --seeds 3 --timesteps 50000
    python benchmarks/finetune.py --env sb3_ncdpo/metaworld-push-sparse-v3 --algos ncdpo dppo ppo --chunk 4 4 \
        --bc-steps 20000 --bc-patience 5 --timesteps 300000 --eval-freq 25000 --n-eval-episodes 20
"""

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def metaworld_task(env_id: str) -> str | None:
    """:return: The Meta-World task of one of this package's Meta-World ids, else ``None``"""
    import gymnasium as gym

    import sb3_ncdpo  # noqa: F401  (registers the ids)

    spec = gym.spec(env_id)
    return spec.kwargs["task"] if spec.entry_point == "sb3_ncdpo.metaworld_envs:make_task" else None


def expert_stage(env_id: str, work: Path, timesteps: int, checkpoint_freq: int, n_eval_episodes: int) -> Path:
    """Train the PPO expert with checkpoints and evaluate each; return the CSV of checkpoint returns."""
    import torch as th
    from stable_baselines3.common.callbacks import CheckpointCallback
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import VecNormalize, sync_envs_normalization

    from sb3_ncdpo.compare import make_model

    folder = work / "experts" / env_id
    table = folder / "checkpoints.csv"
    if table.exists():
        return table
    th.set_num_threads(1)
    model, eval_env = make_model("ppo", env_id, seed=0)
    done = sorted(int(p.stem.split("_")[2]) for p in folder.glob("rl_model_*_steps.zip"))
    if done:  # resume an interrupted run from its last checkpoint (weights, optimizer and normalisation statistics)
        from stable_baselines3 import PPO

        env = VecNormalize.load(str(folder / f"rl_model_vecnormalize_{done[-1]}_steps.pkl"), model.get_env().venv)
        model = PPO.load(folder / f"rl_model_{done[-1]}_steps.zip", env=env, device="cpu")
    checkpoint = CheckpointCallback(max(checkpoint_freq // model.n_envs, 1), str(folder), save_vecnormalize=True)
    model.learn(timesteps - model.num_timesteps, callback=checkpoint, reset_num_timesteps=False)
    model.save(folder / "expert.zip")
    vec_normalize = model.get_vec_normalize_env()
    assert vec_normalize is not None
    vec_normalize.save(str(folder / "expert_vecnormalize.pkl"))
    rows = []
    for steps in [*sorted(int(p.stem.split("_")[2]) for p in folder.glob("rl_model_*_steps.zip")), -1]:
        name, stats = (
            ("expert.zip", "expert_vecnormalize.pkl")
            if steps < 0
            else (f"rl_model_{steps}_steps.zip", f"rl_model_vecnormalize_{steps}_steps.pkl")
        )
        from stable_baselines3 import PPO

        policy = PPO.load(folder / name, device="cpu")
        normalizer = VecNormalize.load(str(folder / stats), eval_env.venv)
        normalizer.training, normalizer.norm_reward = False, False
        sync_envs_normalization(normalizer, eval_env)
        mean, std = evaluate_policy(policy, eval_env, n_eval_episodes=n_eval_episodes, deterministic=False)
        rows.append(
            {
                "steps": steps if steps >= 0 else model.num_timesteps,
                "model": name,
                "stats": stats,
                "return_mean": mean,
                "return_std": std,
            }
        )
        print(f"{env_id} {name}: {mean:.1f} +- {std:.1f}", flush=True)
    with open(table, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return table


def medium_checkpoint(table: Path, ratio: float) -> dict[str, Any]:
    """:return: The checkpoint row whose return is closest to ``ratio`` times the expert's (the last row)"""
    with open(table, newline="") as file:
        rows = list(csv.DictReader(file))
    expert = float(rows[-1]["return_mean"])
    return min(rows[:-1], key=lambda r: abs(float(r["return_mean"]) - ratio * expert))


def dataset_id(env_id: str) -> str:
    """:return: The Minari id of the medium dataset of ``env_id`` (``sb3-ncdpo/metaworld-push-sparse/medium-v0``)"""
    name = env_id.split("/")[-1]
    return f"sb3-ncdpo/{name.rsplit('-v', 1)[0] if metaworld_task(env_id) else name.split('-')[0].lower()}/medium-v0"


def demos_stage(env_id: str, work: Path, args: argparse.Namespace) -> None:
    """Record the medium policy's episodes into a local Minari dataset (skipped if it exists)."""
    import minari

    from sb3_ncdpo.pretrain.demos import GetActionPolicy, collect_demos, collect_policy_demos

    if dataset_id(env_id) in minari.list_local_datasets():
        return
    task = metaworld_task(env_id)
    if task is not None:
        from metaworld.policies import ENV_POLICY_MAP

        noise = dict(
            action_noise=args.action_noise, noisy_fraction=args.noisy_fraction, noisy_action_noise=args.noisy_action_noise
        )
        collect_policy_demos(
            GetActionPolicy(ENV_POLICY_MAP[task]()), env_id, dataset_id(env_id), args.n_demo_episodes, seed=0, **noise,
            algorithm_name="metaworld-scripted", description=f"Meta-World's scripted {task} expert with noise {noise}",
            min_steps=args.demo_min_steps,
        )  # fmt: skip
        return
    ratio, n_episodes = args.medium_ratio, args.n_demo_episodes
    folder = work / "experts" / env_id
    row = medium_checkpoint(folder / "checkpoints.csv", ratio)
    print(f"{env_id}: medium policy = {row['model']} ({float(row['return_mean']):.1f})", flush=True)
    collect_demos(
        folder / row["model"],
        "ppo",
        env_id,
        dataset_id(env_id),
        n_episodes,
        deterministic=False,
        vecnormalize=folder / row["stats"],
        seed=0,
        description=f"PPO checkpoint {row['model']} (return {float(row['return_mean']):.1f}), stochastic actions",
        min_steps=args.demo_min_steps,
    )


#: Policy keyword arguments of behaviour cloning. The diffusion policy conditions its denoiser on the normalised
#: observation directly (``pi=[]``, as DPPO does) with K=10 DDPM, epsilon-prediction and a 256-256 denoiser (stated,
#: not left to the defaults: the Hopper folder was made when they were the policy's defaults); its critic and
#: activation are PPO's; the Gaussian policy has exactly the architecture of PPO's packaged entry for the env (its
#: fine-tuning starts from it).
DIFFUSION_KWARGS = (
    "dict(net_arch=dict(pi=[], vf=[256, 256]), activation_fn=nn.ReLU, ortho_init=False, prediction_type='epsilon', "
    "denoiser_hidden_sizes=[256, 256])"
)


def chunk_name(chunk: list[int] | None) -> str:
    """:return: The suffix of a chunked variant's pre-trained folder and label (``""`` without chunks)"""
    return f"_chunk{chunk[0]}x{chunk[1]}" if chunk else ""


def pretrain_stage(
    env_id: str, work: Path, bc_steps: int, chunk: list[int] | None = None, gaussian: bool = True, patience: int = 0
) -> None:
    """
    Behaviour cloning of the diffusion and (with ``gaussian``) the Gaussian policy, each skipped if its folder is
    complete; with ``chunk`` (``[horizon, n_action_steps]``), the diffusion policy has those chunks
    (``diffusion_chunk<H>x<A>``).
    """
    import torch as th

    from sb3_ncdpo.pretrain.bc import BCConfig, pretrain
    from sb3_ncdpo.zoo import eval_policy_kwargs, load_hyperparams

    th.set_num_threads(1)  # as every stage: the experts' stage sets it only when it trains
    chunks = {"horizon": chunk[0], "n_action_steps": chunk[1]} if chunk else {}
    policies = [("diffusion" + chunk_name(chunk), {**eval_policy_kwargs(DIFFUSION_KWARGS), **chunks})]
    if gaussian:  # PPO's fine-tuning entry gives its architecture: an env without one can still clone a diffusion policy
        policies.append(("gaussian", load_hyperparams("ppo_finetune", env_id).get("policy_kwargs", {})))
    for folder_name, kwargs in policies:
        policy = "gaussian" if folder_name == "gaussian" else "diffusion"
        out = work / "pretrained" / env_id / folder_name
        if (out / "pretrain.json").exists():
            continue
        # no pretrain.json: the folder is missing or incomplete (written before folders were written atomically)
        config = BCConfig(n_steps=bc_steps, patience=patience)
        result = pretrain(dataset_id(env_id), out, policy, kwargs, config, progress_bar=False, overwrite=True)
        print(f"{env_id} {policy}: BC losses {result.history[-1]}", flush=True)


def finetune_stage(envs: list[str], work: Path, args: argparse.Namespace) -> None:
    """
    The fine-tuning runs, through ``sb3-ncdpo compare --pretrained`` (resumes finished runs); with ``--chunk``, one
    command per diffusion algorithm, labelled ``<algo>_chunk<H>x<A>``, from the chunked pre-trained folders (PPO from
    the Gaussian clone, unlabelled).
    """
    common = [
        sys.executable, "-m", "sb3_ncdpo", "compare", "--env", *envs,
        "--seeds", str(args.seeds), "--timesteps", str(args.timesteps), "--eval-freq", str(args.eval_freq),
        "--n-eval-episodes", str(args.n_eval_episodes), "--threads", "1", "--n-jobs", "1", "--out", _relative(args.out),
    ]  # fmt: skip
    if args.ray_address:  # the runs as Ray tasks on that cluster (the pre-trained folders at the same path on every node)
        common += ["--ray-address", args.ray_address]
    pretrained = _relative(work / "pretrained") + "/{env}/{policy}"
    commands = [[*common, "--algos", *args.algos, "--pretrained", pretrained]]
    if args.chunk:
        suffix = chunk_name(args.chunk)
        commands = [
            [*common, "--algos", algo, "--label", algo + suffix, "--pretrained", pretrained + suffix]
            if algo != "ppo"
            else [*common, "--algos", algo, "--pretrained", pretrained]
            for algo in args.algos
        ]
    for command in commands:
        print(" ".join(command), flush=True)
        subprocess.run(command, check=False)


def _relative(path: Path) -> str:
    """:return: ``path`` relative to the working directory where it is inside it (commands in reports stay portable)"""
    return os.path.relpath(path) if Path(path).resolve().is_relative_to(Path.cwd()) else str(path)


def report(envs: list[str], work: Path, out: Path, chunk: list[int] | None = None) -> str:
    """
    ``finetune.md``: expert, medium policy, demonstrations, BC (step 0) and fine-tuned returns (success rates on
    Meta-World ids), medians over seeds; the metric at checkpoints; where NCDPO stands against DPPO and PPO at them,
    and the issue's goal read from that.

    :param envs: The env ids reported
    :param work: The models and datasets folder
    :param out: The results folder (compare's ``--out``)
    :param chunk: ``[horizon, n_action_steps]`` of the diffusion runs compared (their labels' suffix), or ``None``
    """
    from sb3_ncdpo.compare import checkpoint_table, final_rows, load_rows

    rows = load_rows(out) if (out / "runs").exists() else []
    algos = sorted({r["algo"] for r in rows})
    header = "| env | expert | medium policy | demos | " + " | ".join(f"{a}: BC (step 0) | {a}: fine-tuned" for a in algos)
    lines = [header + " |", "|" + "---|" * (4 + 2 * len(algos))]
    finals = final_rows(rows)
    settings = json.loads((out / "settings.json").read_text()) if (out / "settings.json").exists() else {}
    for env_id in envs:
        # The demonstrations' statistics, from a diffusion policy's folder (chunked variants clone the same dataset)
        metas = sorted((work / "pretrained" / env_id).glob("diffusion*/pretrain.json"))
        demo = json.loads(metas[0].read_text()) if metas else {}
        metric = "eval_success_rate" if metaworld_task(env_id) else "eval_return_mean"
        if metaworld_task(env_id):
            mix = (f"noise {settings.get(k)}" for k in ("action_noise", "noisy_action_noise"))
            share = settings.get("noisy_fraction")
            rate = demo.get("demo_success_rate")
            cells = [env_id, "scripted", f"scripted, {' / '.join(mix)} on a share {share}", f"success {rate:.2f}"]
        else:
            table = work / "experts" / env_id / "checkpoints.csv"
            if not table.exists():
                continue
            with open(table, newline="") as file:
                checkpoints = list(csv.DictReader(file))
            medium = medium_checkpoint(table, settings.get("medium_ratio", 1 / 3))
            cells = [
                env_id,
                f"{float(checkpoints[-1]['return_mean']):.0f} ({checkpoints[-1]['steps']} steps)",
                f"{float(medium['return_mean']):.0f} ({medium['steps']} steps)",
                f"{demo['demo_return_mean']:.0f} ± {demo['demo_return_std']:.0f} ({demo['n_episodes']} ep.)" if demo else "-",
            ]
        for algo in algos:
            start = [r[metric] for r in rows if r["env"] == env_id and r["algo"] == algo and r["timesteps"] == 0]
            end = [r for r in finals if r["env"] == env_id and r["algo"] == algo]
            digits = 2 if metric == "eval_success_rate" else 0
            cells.append(_median_text(start, digits))
            steps = "/".join(str(t) for t in sorted({r["timesteps"] for r in end}))
            cells.append(f"{_median_text([r[metric] for r in end], digits)} at {steps}" if end else "-")
        lines.append("| " + " | ".join(cells) + " |")
    at_checkpoints = [
        checkpoint_table(
            [r for r in rows if r["env"] == env_id],
            "eval_success_rate" if metaworld_task(env_id) else "eval_return_mean",
            digits=2 if metaworld_task(env_id) else 0,
        )
        for env_id in envs
        if any(r["env"] == env_id for r in rows)
    ]
    text = "\n".join(lines)
    (out / "finetune.md").write_text(
        text + "\n\nMedians over seeds [min, max]; deterministic evaluation; success rates on Meta-World ids, returns "
        "elsewhere. Expert / medium: stochastic PPO actions, the policies that made the demonstrations (Meta-World: "
        "the scripted expert with Gaussian action noise).\n\nAt checkpoints (IQM over seeds, rliable's 95% stratified "
        "bootstrap interval; step 0 is the BC policy):\n\n"
        + "\n\n".join(at_checkpoints)
        + "\n\n"
        + goal_text(rows, envs, chunk)
        + "\n"
        + training_table(out, envs)
    )
    return text


def training_table(out: Path, envs: list[str]) -> str:
    """
    What the runs' training logs say (:func:`sb3_ncdpo.compare.training_summary`), per env and algorithm: medians over
    seeds, for finding out why a method falls short (KL per update, clipping, the critic, the final std, the gradient
    that reaches the first denoising step, the stochastic rollouts late in training).

    :param out: The results folder (compare's ``--out``)
    :param envs: The env ids reported
    :return: A markdown table, or ``""`` where no run kept a training log
    """
    from sb3_ncdpo.compare import finished_specs, training_summary
    from sb3_ncdpo.compare.results import LATE_KEYS, UPDATE_KEYS

    keys = (*UPDATE_KEYS, *LATE_KEYS)
    by_run: dict[tuple[str, str], list[dict[str, float]]] = {}
    for spec in finished_specs(out).values():
        if spec.env in envs:
            by_run.setdefault((spec.env, spec.variant), []).append(training_summary(out, spec))
    lines = []
    for (env_id, variant), summaries in sorted(by_run.items(), key=lambda item: (envs.index(item[0][0]), item[0][1])):
        cells = []
        for key in keys:
            values = [summary[key] for summary in summaries if key in summary]
            cells.append(f"{np.median(values):.3g}" if values else "-")
        if any(cell != "-" for cell in cells):
            lines.append(f"| {env_id} | {variant} | {len(summaries)} | " + " | ".join(cells) + " |")
    if not lines:
        return ""
    header = "| env | algo | runs | " + " | ".join(keys) + " |"
    return (
        "Training logs, medians over seeds of each run's median over its policy updates (`train/*`) or mean over "
        "its last third of iterations (`rollout/*`, stochastic actions):\n\n"
        + "\n".join([header, "|" + "---|" * (3 + len(keys)), *lines])
        + "\n"
    )


def goal_text(rows: list[dict[str, Any]], envs: list[str], chunk: list[int] | None) -> str:
    """
    Where NCDPO stands against DPPO and PPO at each checkpoint, per env, and the benchmark's goal read from it: NCDPO at
    or above DPPO at every checkpoint on every env, ahead of it with intervals apart at the last checkpoint on at
    least half, and above PPO (from a Gaussian clone) at the last checkpoint.

    :param rows: compare's evaluation rows
    :param envs: The env ids reported
    :param chunk: ``[horizon, n_action_steps]`` of the diffusion runs compared (their labels' suffix), or ``None``
    :return: Markdown: the standings' tables and the goal's three counts
    """
    from sb3_ncdpo.compare import standings, standings_markdown

    ncdpo, dppo = (algo + chunk_name(chunk) for algo in ("ncdpo", "dppo"))
    rows = [r for r in rows if r["env"] in envs]
    key = {env_id: "eval_success_rate" if metaworld_task(env_id) else "eval_return_mean" for env_id in envs}
    tables, every, apart, above_ppo = [], [], [], []
    for env_id in envs:
        env_rows = [r for r in rows if r["env"] == env_id]
        found = standings(env_rows, key[env_id], ncdpo, [dppo, "ppo"])
        if env_id not in found:
            continue
        tables.append(standings_markdown(found, key[env_id], ncdpo))
        words = found[env_id][1]
        if dppo in words:
            every.append(all(w in ("at or above", "above, apart") for w in words[dppo]))
            apart.append(words[dppo][-1] == "above, apart")
        if "ppo" in words:
            above_ppo.append(words["ppo"][-1] in ("at or above", "above, apart"))
    if not tables:
        return ""
    goals = [
        (every, f"at or above {dppo} at every checkpoint", "all"),
        (apart, f"above {dppo} with intervals apart at the last checkpoint", "at least half"),
        (above_ppo, "at or above ppo at the last checkpoint", "all"),
    ]
    n_seeds = [
        len({r["seed"] for r in rows if (r["env"], r["algo"]) == pair}) for pair in {(r["env"], r["algo"]) for r in rows}
    ]
    seeds = f"{min(n_seeds)} to {max(n_seeds)}" if min(n_seeds) < max(n_seeds) else str(min(n_seeds))
    seeds += " seeds per method and env"
    if min(n_seeds) < 2:
        seeds += '; with one seed an interval has width 0, so "apart" only means "different"'
    counts = "".join(f"- {what}: {sum(met)} of {len(met)} envs (goal: {goal})\n" for met, what, goal in goals if met)
    return (
        f'Where {ncdpo} stands ("apart": the 95% intervals do not overlap; else by the IQM alone):\n\n'
        + "\n\n".join(tables)
        + f"\n\nThe goal, read from these tables ({seeds}):\n\n{counts}"
    )


def _median_text(values: list[float], digits: int = 0) -> str:
    if not values:
        return "-"
    return f"{np.median(values):.{digits}f} [{min(values):.{digits}f}, {max(values):.{digits}f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", nargs="+", default=["Hopper-v5", "Walker2d-v5", "HalfCheetah-v5"])
    parser.add_argument("--stages", nargs="+", default=["experts", "demos", "pretrain", "finetune", "report"])
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "out" / "finetune", help="models and datasets")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "finetune", help="results")
    parser.add_argument("--algos", nargs="+", default=["ncdpo", "ppo"], help="fine-tuning algorithms (dppo slots in)")
    parser.add_argument("--expert-timesteps", type=int, default=60_000)
    parser.add_argument("--checkpoint-freq", type=int, default=10_000)
    parser.add_argument("--medium-ratio", type=float, default=1 / 3, help="medium return / expert return")
    parser.add_argument("--n-demo-episodes", type=int, default=20)
    parser.add_argument("--demo-min-steps", type=int, default=0, help="more demo episodes until this many transitions")
    parser.add_argument("--bc-steps", type=int, default=10_000, help="BC gradient steps (at most, with --bc-patience)")
    parser.add_argument("--bc-patience", type=int, default=0, help="BC early stopping (BCConfig.patience; 0: off)")
    parser.add_argument("--action-noise", type=float, default=0.1, help="Meta-World demos: noise std of most episodes")
    parser.add_argument("--noisy-fraction", type=float, default=0.5, help="Meta-World demos: share of noisier episodes")
    parser.add_argument("--noisy-action-noise", type=float, default=1.0, help="Meta-World demos: their noise std")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--timesteps", type=int, default=50_000, help="fine-tuning budget per run")
    parser.add_argument("--eval-freq", type=int, default=5_000)
    parser.add_argument("--n-eval-episodes", type=int, default=10)
    parser.add_argument("--ray-address", default="", help="fine-tuning runs on this Ray cluster (compare --ray-address)")
    parser.add_argument(
        "--chunk",
        nargs=2,
        type=int,
        metavar=("HORIZON", "N_ACTION_STEPS"),
        help="clone and fine-tune the diffusion policy with these action chunks (--algos ncdpo and/or dppo), as a "
        "labelled variant next to the unchunked runs",
    )
    args = parser.parse_args()
    os.environ.setdefault("MINARI_DATASETS_PATH", str(args.work / "minari"))
    args.out.mkdir(parents=True, exist_ok=True)
    if args.chunk and (set(args.algos) - {"ncdpo", "dppo", "ppo"} or args.chunk[1] > args.chunk[0] or min(args.chunk) < 1):
        parser.error(f"--chunk needs --algos among ncdpo, dppo, ppo and 1 <= N_ACTION_STEPS <= HORIZON, got {args.chunk}")
    if set(args.stages) - {"report"}:  # a report alone leaves the recorded settings of the runs as they are
        recorded = {k: v for k, v in vars(args).items() if k not in ("stages", "env", "ray_address")}  # not where it ran
        settings = {k: _relative(v) if isinstance(v, Path) else v for k, v in recorded.items()}
        (args.out / "settings.json").write_text(json.dumps(settings, indent=1))
    for env_id in args.env:
        if "experts" in args.stages and metaworld_task(env_id) is None:
            expert_stage(env_id, args.work, args.expert_timesteps, args.checkpoint_freq, args.n_eval_episodes)
        if "demos" in args.stages:
            demos_stage(env_id, args.work, args)
        if "pretrain" in args.stages:
            gaussian = "ppo" in args.algos or not args.chunk  # without chunks: as before, both clones
            pretrain_stage(env_id, args.work, args.bc_steps, args.chunk, gaussian, args.bc_patience)
    if "finetune" in args.stages:
        finetune_stage(args.env, args.work, args)
    if "report" in args.stages:
        print(report(args.env, args.work, args.out, args.chunk))


if __name__ == "__main__":
    main()
