"""
Running a comparison: :func:`make_model` builds a model with the packaged hyperparameters, :func:`run_one` trains and
evaluates one :class:`~sb3_ncdpo.compare.results.RunSpec` and writes its files, :func:`execute` runs the unfinished ones
(:func:`plan`), each in a fresh process.
"""

import json
import os
import resource
import signal
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from sb3_ncdpo.common.pretrained import init_from_pretrained, pretrained_policy_kwargs
from sb3_ncdpo.compare.results import RunSpec, finished_specs, to_csv, write_atomically
from sb3_ncdpo.zoo import ALGORITHMS, eval_policy_kwargs, import_name, load_hyperparams


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


#: Which values :func:`make_model` starts from: each algorithm's packaged entry, PPO's packaged entry for every
#: algorithm (the drop-in test: the user changes the class name and keeps PPO's values), or SB3's defaults (no entry).
HYPERPARAMS = ("packaged", "ppo", "defaults")


def entry_values(algo: str, env_id: str, hyperparams: str = "packaged", pretrained: bool = False) -> dict[str, Any]:
    """
    :param algo: Algorithm name
    :param env_id: Environment id
    :param hyperparams: One of :data:`HYPERPARAMS`
    :param pretrained: Read the fine-tuning file (``<algo>_finetune.yml``; ``ppo_finetune.yml`` with ``"ppo"``)
    :return: The values to build the model with: an entry's, its ``policy`` named for ``algo`` (PPO's ``MlpPolicy``
        is a diffusion algorithm's ``MlpDiffusionPolicy``), or only the policy with ``"defaults"``
    :raises ValueError: if ``hyperparams`` is not one of :data:`HYPERPARAMS`, or the entry does not exist
    """
    if hyperparams not in HYPERPARAMS:
        raise ValueError(f"hyperparams must be one of {HYPERPARAMS}, got {hyperparams!r}")
    if hyperparams == "defaults":
        return {"policy": "MlpPolicy" if algo == "ppo" else "MlpDiffusionPolicy"}
    source = algo if hyperparams == "packaged" else "ppo"
    values = load_hyperparams(f"{source}_finetune" if pretrained else source, env_id)
    if source == "ppo" and algo != "ppo" and "." not in values["policy"]:
        values["policy"] = values["policy"].replace("Policy", "DiffusionPolicy")
    return values


def make_model(
    algo: str,
    env_id: str,
    seed: int,
    policy_kwargs: dict[str, Any] | None = None,
    algo_kwargs: dict[str, Any] | None = None,
    pretrained: str | None = None,
    hyperparams: str = "packaged",
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
    :param hyperparams: Which values to start from (:data:`HYPERPARAMS`): the algorithm's packaged entry, PPO's
        packaged entry, or SB3's defaults (then no normalisation and one env)
    :return: ``(model, eval_env)``
    """
    import inspect

    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    values = entry_values(algo, env_id, hyperparams, pretrained=bool(pretrained))
    n_envs = values.pop("n_envs", 1)
    normalize = values.pop("normalize", False)
    values.pop("n_timesteps", None)
    policy = values.pop("policy")
    policy = import_name(policy) if "." in policy else policy
    env_kwargs = values.pop("env_kwargs", None)
    wrapper_name = values.pop("vec_env_wrapper", None)
    values["policy_kwargs"] = {**values.get("policy_kwargs", {}), **(policy_kwargs or {})}
    values.update(algo_kwargs or {})
    env = make_vec_env(env_id, n_envs=n_envs, seed=seed, env_kwargs=env_kwargs)
    eval_env = make_vec_env(env_id, n_envs=1, seed=seed + 10_000, env_kwargs=env_kwargs)
    if wrapper_name is not None:
        wrapper = import_name(wrapper_name)
        env, eval_env = wrapper(env), wrapper(eval_env)
    if normalize:
        env = VecNormalize(env, gamma=values.get("gamma", 0.99))
        eval_env = VecNormalize(eval_env, training=False, norm_reward=False)
    algorithm = algorithm_class(algo)
    takes_pretrained = "pretrained" in inspect.signature(algorithm).parameters
    if pretrained and takes_pretrained:
        values["pretrained"] = pretrained
    elif pretrained:
        values["policy_kwargs"] = pretrained_policy_kwargs(pretrained, values["policy_kwargs"])
    model = algorithm(policy, env, seed=seed, device="cpu", **values)
    if pretrained and not takes_pretrained:
        init_from_pretrained(model, pretrained)
    return model, eval_env


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def run_one(spec: RunSpec, out: Path, progress_bar: bool = False) -> Path:
    """
    Train and evaluate one run, then write its files (the CSV first, the JSON that marks it finished last).

    :param spec: The run
    :param out: Output directory of the comparison
    :param progress_bar: Show SB3's progress bar
    :return: Path of the run's CSV
    """
    return write_run(out, spec, *train_run(spec, progress_bar))


def train_run(spec: RunSpec, progress_bar: bool = False) -> tuple[list[dict[str, Any]], str]:
    """
    Train and evaluate one run, writing nothing (a Ray task returns this to the driver, which writes the files).

    :param spec: The run
    :param progress_bar: Show SB3's progress bar
    :return: Its evaluations, one row each (:data:`~sb3_ncdpo.compare.results.FIELDS`), and its training log: SB3's
        ``progress.csv`` (every logger key at every update: ``train/approx_kl``, ``train/clip_fraction``,
        ``train/explained_variance``, the diffusion policy's own keys, ...)
    """
    import torch as th
    from stable_baselines3.common.callbacks import EvalCallback
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.vec_env import sync_envs_normalization

    th.set_num_threads(spec.n_threads)
    pretrained = pretrained_path(spec.pretrained, spec.algo, spec.env) if spec.pretrained else None
    model, eval_env = make_model(
        spec.algo,
        spec.env,
        spec.seed,
        policy_kwargs=eval_policy_kwargs(spec.policy_kwargs),
        algo_kwargs=eval_policy_kwargs(spec.algo_kwargs),
        pretrained=pretrained,
        hyperparams=spec.hyperparams,
    )
    rows: list[dict[str, Any]] = []
    clock = {"start": 0.0, "eval": 0.0}

    def record(timesteps: int, mean: float, std: float, successes: list[bool]) -> None:
        train_seconds = time.perf_counter() - clock["start"] - clock["eval"]
        rows.append(
            dict(
                algo=spec.variant,
                env=spec.env,
                seed=spec.seed,
                timesteps=timesteps,
                eval_return_mean=round(float(mean), 4),
                eval_return_std=round(float(std), 4),
                eval_success_rate=round(float(np.mean(successes)), 4) if successes else None,
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
                # SB3 keeps an evaluation's successes only where the env reports them (info["is_success"])
                reported = len(self.evaluations_successes) == len(self.evaluations_results)
                successes = self.evaluations_successes[-1] if reported else []
                record(self.num_timesteps, self.last_mean_reward, float(np.std(self.evaluations_results[-1])), successes)
            return keep_going

    def evaluate_now() -> None:
        start = time.perf_counter()
        sync_envs_normalization(model.get_env(), eval_env)
        successes: list[bool] = []

        def log_success(locals_: dict[str, Any], globals_: dict[str, Any]) -> None:
            if locals_["done"] and "is_success" in locals_["info"]:  # as EvalCallback records them
                successes.append(bool(locals_["info"]["is_success"]))

        mean, std = evaluate_policy(
            model, eval_env, n_eval_episodes=spec.n_eval_episodes, deterministic=True, callback=log_success
        )
        clock["eval"] += time.perf_counter() - start
        record(model.num_timesteps, float(mean), float(std), successes)  # type: ignore[arg-type]

    n_envs = model.get_env().num_envs
    clock["start"] = time.perf_counter()
    if pretrained:
        evaluate_now()  # the pre-trained policy itself, before any update
    with tempfile.TemporaryDirectory() as log_path:  # EvalCallback keeps each evaluation's episodes only with a log path
        model.set_logger(configure(log_path, ["csv"]))
        callback = TimedEval(
            eval_env,
            eval_freq=max(spec.eval_freq // n_envs, 1),
            n_eval_episodes=spec.n_eval_episodes,
            log_path=log_path,
            deterministic=True,
            verbose=0,
        )
        model.learn(spec.timesteps, callback=callback, progress_bar=progress_bar)
        model.logger.close()
        progress = (Path(log_path) / "progress.csv").read_text()
    if not rows or rows[-1]["timesteps"] != model.num_timesteps:
        evaluate_now()
    return rows, progress


def write_run(out: Path, spec: RunSpec, rows: list[dict[str, Any]], progress: str = "") -> Path:
    """
    Write a finished run's files: its evaluations (CSV) and its training log (``<run>.progress.csv``, where given)
    first, then its settings (JSON), whose presence marks the run finished; each atomically.

    :param out: Output directory of the comparison
    :param spec: The run
    :param rows: Its evaluations
    :param progress: Its training log (SB3's ``progress.csv``)
    :return: Path of the run's CSV
    """
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    csv_path = runs / f"{spec.name}.csv"
    write_atomically(csv_path, to_csv(rows))
    if progress:
        write_atomically(runs / f"{spec.name}.progress.csv", progress)
    write_atomically(runs / f"{spec.name}.json", json.dumps(asdict(spec), indent=1))
    return csv_path


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


def _quiet_interrupt() -> None:
    """
    A run's process ends on Ctrl-C without a traceback of its own (the terminal sends it to every process of the
    group): the command reports the interruption once, and an interrupted run has written nothing (its files are
    written when it finishes).
    """
    signal.signal(signal.SIGINT, lambda signum, frame: os._exit(130))


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
    with ProcessPoolExecutor(
        max_workers=n_jobs, mp_context=get_context("spawn"), max_tasks_per_child=1, initializer=_quiet_interrupt
    ) as pool:
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
