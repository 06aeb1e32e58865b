"""
``sb3-ncdpo compare``: NCDPO against SB3 PPO (or any algorithm of :data:`COMPARED`) at equal budgets.

Every (algo, env, seed) run trains with the packaged ``hyperparams/<algo>.yml`` entry, in its own fresh process with
torch pinned to one thread, and is evaluated on a schedule on a separate env (deterministic actions, VecNormalize
statistics synced, rewards not normalised). A finished run is written to ``<out>/runs/<run>.csv`` (its evaluations)
and ``<out>/runs/<run>.json`` (its settings), atomically; runs already finished with the same settings are reused, so
an interrupted comparison continues where it stopped and a broken run never erases another one. From all finished
runs the command writes ``<out>/results.csv`` (tidy: one row per evaluation), ``<out>/curves_<env>.png`` (IQM or
mean over seeds with 95% stratified-bootstrap bands, from rliable) and ``<out>/summary.md``.

Example::

    sb3-ncdpo compare --env Pendulum-v1 --env Hopper-v5 --algos ncdpo ppo --seeds 3 --timesteps 100000 --out cmp
"""

import argparse
import csv
import json
import os
import re
import resource
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from sb3_ncdpo.zoo import ALGORITHMS, eval_policy_kwargs, import_name, load_hyperparams

#: Algorithms that ``compare`` can run, by name; each needs a packaged ``hyperparams/<name>.yml``.
COMPARED = ("ncdpo", "dppo", "ppo")
FIELDS = ["algo", "env", "seed", "timesteps", "eval_return_mean", "eval_return_std", "wall_time_s", "fps", "peak_rss_mb"]
METRICS = ("iqm", "mean")


@dataclass(frozen=True)
class RunSpec:
    """
    One training run of a comparison.

    :param algo: Algorithm name (one of :data:`COMPARED`)
    :param env: Environment id (an entry of the algorithm's hyperparameter file)
    :param seed: Seed of the model, the training env and (plus 10,000) the evaluation env
    :param timesteps: Training budget in env steps
    :param eval_freq: Env steps between two evaluations
    :param n_eval_episodes: Episodes per evaluation
    :param n_threads: Torch threads of the run
    :param policy_kwargs: Overrides of the entry's ``policy_kwargs``, a Python dict expression (``nn`` and ``th``
        in scope, as in rl-zoo3's files); ``""`` for none
    :param label: Name of the variant in the results (default: ``algo``), so that variants of one algorithm (e.g.
        several K) sit side by side in one comparison
    :param pretrained: Fine-tune from pre-trained folders (``sb3-ncdpo pretrain``): a path template where ``{env}``,
        ``{algo}`` and ``{policy}`` (``gaussian`` for PPO, ``diffusion`` otherwise) are filled in; the run then uses
        the packaged fine-tuning hyperparameters (``<algo>_finetune.yml``) and is also evaluated at step 0.
        ``""``: train from scratch
    """

    algo: str
    env: str
    seed: int
    timesteps: int
    eval_freq: int
    n_eval_episodes: int
    n_threads: int = 1
    policy_kwargs: str = ""
    label: str = ""
    pretrained: str = ""

    @property
    def variant(self) -> str:
        """The run's name in the results: its label, or its algorithm."""
        return self.label or self.algo

    @property
    def name(self) -> str:
        """File stem of the run in ``<out>/runs``."""
        return f"{self.variant}__{file_stem(self.env)}__seed{self.seed}"


def file_stem(env_id: str) -> str:
    """:return: ``env_id`` usable in a file name (a namespaced id such as ``sb3_ncdpo/simple_spread_v3`` has a ``/``)"""
    return env_id.replace("/", "-")


def algorithm_class(algo: str) -> Any:
    """
    :param algo: One of :data:`COMPARED`
    :return: Its SB3 algorithm class
    """
    from stable_baselines3 import PPO

    classes = {**ALGORITHMS, "ppo": PPO}
    if algo not in classes:
        raise ValueError(f"algo must be one of {sorted(classes)}, got {algo!r}")
    return classes[algo]


def pretrained_path(template: str, algo: str, env_id: str) -> str:
    """
    :param template: Path template with ``{env}``, ``{algo}`` and ``{policy}`` placeholders
    :param algo: Algorithm name
    :param env_id: Environment id
    :return: The pre-trained folder of that run (``{policy}`` is ``gaussian`` for PPO, ``diffusion`` otherwise)
    """
    return template.format(env=env_id, algo=algo, policy="gaussian" if algo == "ppo" else "diffusion")


def make_model(
    algo: str,
    env_id: str,
    seed: int,
    policy_kwargs: dict[str, Any] | None = None,
    algo_kwargs: dict[str, Any] | None = None,
    pretrained: str | None = None,
) -> tuple[Any, Any]:
    """
    Build a model with the packaged hyperparameters (plus overrides) and its evaluation env, which normalises
    observations like the training env (statistics synced by SB3's ``EvalCallback`` or ``sync_envs_normalization``) and
    leaves rewards unnormalised. As in rl-zoo3, an entry's ``env_kwargs`` go to the env, its ``vec_env_wrapper`` (a
    dotted name, e.g. ``sb3_ncdpo.multiagent.parameter_sharing`` for the multi-agent ids) wraps both vec envs and a
    dotted ``policy`` names a policy class.

    :param algo: Algorithm name
    :param env_id: Environment id
    :param seed: Seed of the model and the training env; the evaluation env gets ``seed + 10_000``
    :param policy_kwargs: Overrides of the entry's ``policy_kwargs`` (merged key by key)
    :param algo_kwargs: Overrides of the entry's other values
    :param pretrained: A pre-trained folder to start from, with the fine-tuning hyperparameters
        (``hyperparams/<algo>_finetune.yml``): passed as the algorithm's ``pretrained`` argument where it has one,
        else (SB3's PPO) loaded by :func:`~sb3_ncdpo.pretrain.pretrained.init_from_pretrained` after construction
    :return: ``(model, eval_env)``
    """
    import inspect

    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    from sb3_ncdpo.pretrain.pretrained import init_from_pretrained, pretrained_policy_kwargs

    hyperparams = load_hyperparams(f"{algo}_finetune" if pretrained else algo, env_id)
    n_envs = hyperparams.pop("n_envs", 1)
    normalize = hyperparams.pop("normalize", False)
    hyperparams.pop("n_timesteps", None)
    policy = hyperparams.pop("policy")
    policy = import_name(policy) if "." in policy else policy
    env_kwargs = hyperparams.pop("env_kwargs", None)
    wrapper_name = hyperparams.pop("vec_env_wrapper", None)
    hyperparams["policy_kwargs"] = {**hyperparams.get("policy_kwargs", {}), **(policy_kwargs or {})}
    hyperparams.update(algo_kwargs or {})
    env = make_vec_env(env_id, n_envs=n_envs, seed=seed, env_kwargs=env_kwargs)
    eval_env = make_vec_env(env_id, n_envs=1, seed=seed + 10_000, env_kwargs=env_kwargs)
    if wrapper_name is not None:
        wrapper = import_name(wrapper_name)
        env, eval_env = wrapper(env), wrapper(eval_env)
    if normalize:
        env = VecNormalize(env, gamma=hyperparams.get("gamma", 0.99))
        eval_env = VecNormalize(eval_env, training=False, norm_reward=False)
    algorithm = algorithm_class(algo)
    takes_pretrained = "pretrained" in inspect.signature(algorithm).parameters
    if pretrained and takes_pretrained:
        hyperparams["pretrained"] = pretrained
    elif pretrained:
        hyperparams["policy_kwargs"] = pretrained_policy_kwargs(pretrained, hyperparams["policy_kwargs"])
    model = algorithm(policy, env, seed=seed, device="cpu", **hyperparams)
    if pretrained and not takes_pretrained:
        init_from_pretrained(model, pretrained)
    return model, eval_env


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def run_one(spec: RunSpec, out: Path, progress_bar: bool = False) -> Path:
    """
    Train and evaluate one run, then write its files (the CSV first, the JSON that marks it finished last).

    :param spec: The run
    :param out: Output directory of the comparison
    :param progress_bar: Show SB3's progress bar
    :return: Path of the run's CSV
    """
    import torch as th
    from stable_baselines3.common.callbacks import EvalCallback
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import sync_envs_normalization

    th.set_num_threads(spec.n_threads)
    pretrained = pretrained_path(spec.pretrained, spec.algo, spec.env) if spec.pretrained else None
    model, eval_env = make_model(
        spec.algo, spec.env, spec.seed, policy_kwargs=eval_policy_kwargs(spec.policy_kwargs), pretrained=pretrained
    )
    rows: list[dict[str, Any]] = []
    clock = {"start": 0.0, "eval": 0.0}

    def record(timesteps: int, mean: float, std: float) -> None:
        train_seconds = time.perf_counter() - clock["start"] - clock["eval"]
        rows.append(
            dict(
                algo=spec.variant,
                env=spec.env,
                seed=spec.seed,
                timesteps=timesteps,
                eval_return_mean=round(float(mean), 4),
                eval_return_std=round(float(std), 4),
                wall_time_s=round(train_seconds, 3),
                fps=round(timesteps / max(train_seconds, 1e-9), 1),
                peak_rss_mb=round(_peak_rss_mb(), 1),
            )
        )

    class TimedEval(EvalCallback):
        """SB3's EvalCallback, with its time kept out of the training time and each result recorded."""

        def _on_step(self) -> bool:
            start, n_before = time.perf_counter(), len(self.evaluations_results)
            keep_going = super()._on_step()
            clock["eval"] += time.perf_counter() - start
            if len(self.evaluations_results) > n_before:
                record(self.num_timesteps, self.last_mean_reward, float(np.std(self.evaluations_results[-1])))
            return keep_going

    def evaluate_now() -> None:
        start = time.perf_counter()
        sync_envs_normalization(model.get_env(), eval_env)
        mean, std = evaluate_policy(model, eval_env, n_eval_episodes=spec.n_eval_episodes, deterministic=True)
        clock["eval"] += time.perf_counter() - start
        record(model.num_timesteps, float(mean), float(std))  # type: ignore[arg-type]

    n_envs = model.get_env().num_envs
    clock["start"] = time.perf_counter()
    if pretrained:
        evaluate_now()  # the pre-trained policy itself, before any update
    with tempfile.TemporaryDirectory() as log_path:  # EvalCallback keeps each evaluation's episodes only with a log path
        callback = TimedEval(
            eval_env,
            eval_freq=max(spec.eval_freq // n_envs, 1),
            n_eval_episodes=spec.n_eval_episodes,
            log_path=log_path,
            deterministic=True,
            verbose=0,
        )
        model.learn(spec.timesteps, callback=callback, progress_bar=progress_bar)
    if not rows or rows[-1]["timesteps"] != model.num_timesteps:
        evaluate_now()
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    csv_path = runs / f"{spec.name}.csv"
    _write_atomically(csv_path, _to_csv(rows))
    _write_atomically(runs / f"{spec.name}.json", json.dumps(asdict(spec), indent=1))
    return csv_path


def _to_csv(rows: list[dict[str, Any]]) -> str:
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def finished_specs(out: Path) -> dict[str, RunSpec]:
    """:return: The finished runs in ``out`` (those with their JSON written), by name"""
    specs = {}
    for path in sorted((out / "runs").glob("*.json")):
        spec = RunSpec(**json.loads(path.read_text()))
        if (out / "runs" / f"{spec.name}.csv").exists():
            specs[spec.name] = spec
    return specs


def plan(specs: Sequence[RunSpec], out: Path) -> list[RunSpec]:
    """
    :param specs: The requested runs
    :param out: Output directory
    :return: The runs still to do (the others are finished with the same settings)
    :raises ValueError: if a finished run has other settings (budget, evaluation schedule, threads)
    """
    done = finished_specs(out)
    todo = []
    for spec in specs:
        if spec.name not in done:
            todo.append(spec)
        elif done[spec.name] != spec:
            raise ValueError(
                f"{out / 'runs' / spec.name}.json was run with {asdict(done[spec.name])}, not {asdict(spec)}: "
                "use another --out, or delete that run's files to re-run it"
            )
    return todo


@dataclass
class Failure:
    """A run that raised: it is reported and leaves the finished runs untouched."""

    spec: RunSpec
    error: str


def execute(
    specs: Sequence[RunSpec],
    out: Path,
    n_jobs: int = 1,
    runner: Callable[[RunSpec, Path, bool], Path] = run_one,
) -> list[Failure]:
    """
    Run the unfinished runs of ``specs``, ``n_jobs`` at a time, each in a fresh process.

    :param specs: Requested runs
    :param out: Output directory
    :param n_jobs: Runs in parallel
    :param runner: ``runner(spec, out, progress_bar)`` trains one run and writes its files (picklable)
    :return: The runs that failed
    """
    from tqdm.auto import tqdm

    todo = plan(specs, out)
    out.mkdir(parents=True, exist_ok=True)
    if len(todo) < len(specs):
        print(f"reusing {len(specs) - len(todo)} finished run(s) from {out / 'runs'}", flush=True)
    failures = []
    # spawn + one task per child: every run starts from a fresh interpreter, so its peak RSS is its own.
    with ProcessPoolExecutor(max_workers=n_jobs, mp_context=get_context("spawn"), max_tasks_per_child=1) as pool:
        futures: dict[Future[Path], RunSpec] = {pool.submit(runner, spec, out, n_jobs == 1): spec for spec in todo}
        with tqdm(total=len(todo), desc="runs", unit="run", disable=not todo) as bar:
            for future in as_completed(futures):
                spec = futures[future]
                error = future.exception()
                if error is not None:
                    message = "".join(traceback.format_exception_only(type(error), error)).strip()
                    failures.append(Failure(spec, message))
                    tqdm.write(f"FAILED {spec.name}: {message}")
                bar.update()
    return failures


def load_rows(out: Path) -> list[dict[str, Any]]:
    """:return: Every evaluation row of the finished runs in ``out``, typed"""
    rows = []
    for spec in finished_specs(out).values():
        with open(out / "runs" / f"{spec.name}.csv", newline="") as file:
            for row in csv.DictReader(file):
                typed: dict[str, Any] = {k: float(v) for k, v in row.items() if k not in ("algo", "env")}
                typed.update(algo=row["algo"], env=row["env"], seed=int(row["seed"]), timesteps=int(row["timesteps"]))
                rows.append(typed)
    return rows


def _iqm_or_mean(metric: str) -> Callable[[np.ndarray], float]:
    from rliable import metrics

    return metrics.aggregate_iqm if metric == "iqm" else metrics.aggregate_mean


def interval(scores: np.ndarray, metric: str, reps: int = 5000) -> tuple[float, float, float]:
    """
    :param scores: Final returns, one per run
    :param metric: ``"iqm"`` or ``"mean"``
    :param reps: Bootstrap repetitions
    :return: ``(point, low, high)``: the metric and its 95% stratified-bootstrap interval (rliable)
    """

    aggregate = _iqm_or_mean(metric)
    points, cis = _seeded_interval_estimates({"x": scores.reshape(-1, 1)}, lambda s: np.array([aggregate(s)]), reps)
    return float(points["x"][0]), float(cis["x"][0, 0]), float(cis["x"][1, 0])


def _seeded_interval_estimates(
    scores: dict[str, np.ndarray], func: Callable[[np.ndarray], np.ndarray], reps: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """rliable's stratified bootstrap with a fixed seed, so that a report is reproducible from the same runs."""
    from rliable import library as rly

    with warnings.catch_warnings():
        # rliable passes its RandomState to arch, which deprecates that argument (rliable 1.2, arch 7)
        warnings.simplefilter("ignore", FutureWarning)
        return rly.get_interval_estimates(scores, func, reps=reps, random_state=np.random.RandomState(0))


def final_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """:return: The last evaluation of each run"""
    last: dict[tuple[str, str, int], dict[str, Any]] = {}
    for row in rows:
        key = (row["algo"], row["env"], row["seed"])
        if key not in last or row["timesteps"] > last[key]["timesteps"]:
            last[key] = row
    return list(last.values())


def _algos_in_order(algos: set[str]) -> list[str]:
    """:return: The algorithms of :data:`COMPARED` first, then variants in natural order (``ncdpo-K2`` < ``ncdpo-K10``)"""

    def natural(name: str) -> list[Any]:
        return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]

    return [a for a in COMPARED if a in algos] + sorted(algos - set(COMPARED), key=natural)


def summary_table(rows: list[dict[str, Any]], metric: str = "iqm") -> str:
    """
    :param rows: Evaluation rows of finished runs
    :param metric: ``"iqm"`` or ``"mean"``
    :return: A markdown table: final return (metric with 95% CI), its ratio to PPO, fps and its ratio, peak memory
    """
    label = metric.upper() if metric == "iqm" else metric
    lines = [
        f"| env | algo | runs | timesteps | final return, {label} [95% CI] | {label} / PPO | fps (median) | fps / PPO "
        "| peak RSS MB (median) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    finals = final_rows(rows)
    for env_id in sorted({r["env"] for r in finals}):
        by_algo = {
            algo: [r for r in finals if r["env"] == env_id and r["algo"] == algo]
            for algo in _algos_in_order({r["algo"] for r in finals if r["env"] == env_id})
        }
        points = {a: interval(np.array([r["eval_return_mean"] for r in runs]), metric) for a, runs in by_algo.items()}
        fps = {a: statistics.median(r["fps"] for r in runs) for a, runs in by_algo.items()}
        # Returns of order one (GRF's, per agent) need two decimals to be told apart.
        digits = 1 if max(abs(v) for values in points.values() for v in values) >= 10 else 2
        for algo, runs in by_algo.items():
            point, low, high = points[algo]
            ratio, fps_ratio = "n/a", "n/a"
            if "ppo" in points:
                reference = points["ppo"][0]
                # A ratio of returns means something only when both are positive (Pendulum's are negative).
                ratio = f"{point / reference:.2f}" if point > 0 and reference > 0 else "n/a (returns ≤ 0)"
                fps_ratio = f"{fps[algo] / fps['ppo']:.2f}"
            timesteps = "/".join(str(t) for t in sorted({r["timesteps"] for r in runs}))
            memory = statistics.median(r["peak_rss_mb"] for r in runs)
            lines.append(
                f"| {env_id} | {algo} | {len(runs)} | {timesteps} | {point:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}] "
                f"| {ratio} "
                f"| {fps[algo]:.0f} | {fps_ratio} | {memory:.0f} |"
            )
    return "\n".join(lines)


def plot_curves(rows: list[dict[str, Any]], out: Path, metric: str = "iqm") -> list[Path]:
    """
    One PNG per env: the metric over seeds of the evaluation return vs env steps, with 95% bootstrap bands (rliable).
    Only evaluation points that every run of the env has are drawn.

    :param rows: Evaluation rows of finished runs
    :param out: Output directory
    :param metric: ``"iqm"`` or ``"mean"``
    :return: Paths of the written images
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rliable import plot_utils

    aggregate = _iqm_or_mean(metric)
    paths = []
    for env_id in sorted({r["env"] for r in rows}):
        env_rows = [r for r in rows if r["env"] == env_id]
        runs = sorted({(r["algo"], r["seed"]) for r in env_rows})
        steps = sorted(set.intersection(*({r["timesteps"] for r in env_rows if (r["algo"], r["seed"]) == k} for k in runs)))
        if not steps:
            continue
        scores = {}
        for algo in _algos_in_order({r["algo"] for r in env_rows}):
            table = {(r["seed"], r["timesteps"]): r["eval_return_mean"] for r in env_rows if r["algo"] == algo}
            seeds = sorted({seed for seed, _ in table})
            scores[algo] = np.array([[[table[(seed, t)] for t in steps]] for seed in seeds])  # (runs, 1 task, points)
        points, cis = _seeded_interval_estimates(
            scores, lambda s: np.array([aggregate(s[..., i]) for i in range(s.shape[-1])]), reps=2000
        )
        fig, ax = plt.subplots(figsize=(7, 4.5))
        plot_utils.plot_sample_efficiency_curve(
            np.array(steps),
            points,
            cis,
            algorithms=list(scores),
            xlabel="env steps",
            ylabel=f"evaluation return ({metric.upper() if metric == 'iqm' else metric}, 95% CI)",
            ax=ax,
            labelsize="large",
            ticklabelsize="large",
        )
        counts = {len(s) for s in scores.values()}
        per_algo = ", ".join(f"{a}: {len(s)}" for a, s in scores.items())
        ax.set_title(f"{env_id} ({counts.pop()} seeds each)" if len(counts) == 1 else f"{env_id} (seeds: {per_algo})")
        ax.legend()
        fig.tight_layout()
        path = out / f"curves_{file_stem(env_id)}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def commands(out: Path) -> list[str]:
    """:return: Commands that re-run every finished run of ``out``, one per group of shared settings"""
    groups: dict[tuple[int, int, int, int, str, str, str], list[RunSpec]] = {}
    for spec in finished_specs(out).values():
        key = (
            spec.timesteps,
            spec.eval_freq,
            spec.n_eval_episodes,
            spec.n_threads,
            spec.policy_kwargs,
            spec.label,
            spec.pretrained,
        )
        groups.setdefault(key, []).append(spec)
    lines = []
    for (timesteps, eval_freq, n_eval_episodes, n_threads, policy_kwargs, label, pretrained), specs in sorted(groups.items()):
        envs = " ".join(f"--env {e}" for e in sorted({s.env for s in specs}))
        algos = " ".join(_algos_in_order({s.algo for s in specs}))
        seeds = sorted({s.seed for s in specs})
        seed_args = f"--seeds {len(seeds)}" + (f" --first-seed {seeds[0]}" if seeds[0] else "")
        if seeds != list(range(seeds[0], seeds[0] + len(seeds))):
            seed_args = f"--seed-list {' '.join(map(str, seeds))}"
        lines.append(
            f"sb3-ncdpo compare {envs} --algos {algos} {seed_args} --timesteps {timesteps} --eval-freq {eval_freq} "
            f"--n-eval-episodes {n_eval_episodes} --threads {n_threads} --out {out}"
            + (f' --policy-kwargs "{policy_kwargs}"' if policy_kwargs else "")
            + (f" --label {label}" if label else "")
            + (f' --pretrained "{pretrained}"' if pretrained else "")
        )
    return lines


def report(out: Path, metric: str = "iqm") -> str:
    """
    Write ``results.csv``, the curve PNGs and ``summary.md`` from the finished runs of ``out``.

    :return: The summary table
    """
    rows = load_rows(out)
    if not rows:
        return "no finished run"
    rows.sort(key=lambda r: (r["env"], r["algo"], r["seed"], r["timesteps"]))
    _write_atomically(out / "results.csv", _to_csv(rows))
    table = summary_table(rows, metric)
    images = plot_curves(rows, out, metric)
    cpu_hours = sum(r["wall_time_s"] for r in final_rows(rows)) / 3600
    text = (
        f"{table}\n\nFinal return: deterministic evaluation at the end of training; fps: env steps per second of "
        "training (evaluation time excluded). Learning curves: "
        + ", ".join(f"[{p.name}]({p.name})" for p in images)
        + f".\n\nReproduce (about {cpu_hours:.1f} CPU-hours of training; `--n-jobs` runs in parallel):\n\n"
        + "\n".join(f"    {c}" for c in commands(out))
        + "\n"
    )
    _write_atomically(out / "summary.md", text)
    return table


def _run_problem(algo: str, env_id: str, pretrained: str, check_folder: bool) -> str:
    """:return: Why (algo, env) cannot run with these settings, or ``""``"""
    try:
        load_hyperparams(f"{algo}_finetune" if pretrained else algo, env_id)
    except ValueError as error:
        return f"--env {env_id} with --algos {algo}: {error}"
    if not pretrained or not check_folder:
        return ""
    try:
        folder = pretrained_path(pretrained, algo, env_id)
    except (KeyError, IndexError, ValueError) as error:
        return f"--pretrained {pretrained!r}: only {{env}}, {{algo}} and {{policy}} can be filled in ({error})"
    if not (Path(folder) / "policy.pth").is_file():
        return f"--pretrained: {folder} (for {algo} on {env_id}) is not a folder written by `sb3-ncdpo pretrain`"
    return ""


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse and validate the command line (every check happens before anything runs)."""
    parser = argparse.ArgumentParser(
        prog="sb3-ncdpo compare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env", action="extend", nargs="+", required=True, help="env id(s); repeat or list several")
    parser.add_argument("--algos", nargs="+", default=["ncdpo", "ppo"], help=f"algorithms, among {COMPARED}")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds per (algo, env)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--seed-list", type=int, nargs="+", help="explicit seeds (instead of --seeds/--first-seed)")
    parser.add_argument("--timesteps", type=int, required=True, help="training budget per run, in env steps")
    parser.add_argument("--eval-freq", type=int, help="env steps between evaluations (default: timesteps / 10)")
    parser.add_argument("--n-eval-episodes", type=int, default=10)
    parser.add_argument("--n-jobs", type=int, default=1, help="runs in parallel processes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--policy-kwargs", default="", help='overrides, a dict expression: "dict(n_denoising_steps=5)"')
    parser.add_argument("--label", default="", help="name of this variant in the results (needs a single --algos)")
    parser.add_argument(
        "--pretrained",
        default="",
        help="fine-tune from pre-trained folders: a path template with {env}, {algo}, {policy} (gaussian for ppo, "
        "diffusion otherwise), e.g. 'pretrained/{env}/{policy}'; uses hyperparams/<algo>_finetune.yml",
    )
    parser.add_argument("--metric", choices=METRICS, default="iqm", help="aggregate over seeds")
    parser.add_argument("--out", type=Path, required=True, help="output directory (finished runs in it are reused)")
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from finished runs, run nothing")
    args = parser.parse_args(argv)
    for name in ("seeds", "timesteps", "n_eval_episodes", "n_jobs", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be an int >= 1, got {getattr(args, name)}")
    if args.eval_freq is None:
        args.eval_freq = max(args.timesteps // 10, 1)
    elif args.eval_freq < 1:
        parser.error(f"--eval-freq must be an int >= 1, got {args.eval_freq}")
    unknown = [a for a in args.algos if a not in COMPARED]
    if unknown:
        parser.error(f"--algos must be among {list(COMPARED)}, got {unknown}")
    if args.label and len(args.algos) != 1:
        parser.error(f"--label names one variant: give a single --algos, got {args.algos}")
    if "__" in args.label:
        parser.error(f"--label must not contain '__' (it separates the parts of run file names), got {args.label!r}")
    try:
        overrides = eval_policy_kwargs(args.policy_kwargs)
        if set(args.algos) & set(ALGORITHMS):
            from sb3_ncdpo.common.policies import check_policy_kwargs

            check_policy_kwargs(overrides)
    except Exception as error:
        parser.error(f"--policy-kwargs: {error}")

    for algo in args.algos:
        for env_id in args.env:
            problem = _run_problem(algo, env_id, args.pretrained, check_folder=not args.report_only)
            if problem:
                parser.error(problem)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """
    :param argv: Arguments after ``compare`` (``sys.argv[1:]`` by default)
    """
    args = parse_args(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    seeds = args.seed_list or list(range(args.first_seed, args.first_seed + args.seeds))
    specs = [
        RunSpec(
            algo,
            env_id,
            seed,
            args.timesteps,
            args.eval_freq,
            args.n_eval_episodes,
            args.threads,
            args.policy_kwargs,
            args.label,
            args.pretrained,
        )
        for env_id in args.env
        for seed in seeds
        for algo in args.algos
    ]
    failures = [] if args.report_only else execute(specs, args.out, args.n_jobs)
    print(report(args.out, args.metric))
    if failures:
        lines = "\n".join(f"  {f.spec.name}: {f.error}" for f in failures)
        sys.exit(f"{len(failures)} run(s) failed (finished runs are kept; re-run the command to retry):\n{lines}")


if __name__ == "__main__":
    main()
