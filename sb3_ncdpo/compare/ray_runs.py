"""
Running a comparison's runs on an existing Ray cluster (``sb3-ncdpo compare --ray-address ADDRESS``) instead of local
processes: each unfinished run is one Ray task in a fresh worker process, reserving ``--threads`` CPUs (one by
default); it trains and evaluates on whatever node Ray picks and returns its evaluations, and the driver writes the
run's files as each task finishes, exactly as local runs write them. No file system is shared: nothing of a run is
written on the worker. Resume, ``--report-only`` and the report read those files, so they behave as locally.

Ray is an optional dependency (``pip install "sb3-ncdpo[ray]"``); every node needs this package and its dependencies
installed (and, for ``--pretrained``, the pre-trained folders at the same paths).
"""

import logging
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sb3_ncdpo.compare.results import RunSpec
from sb3_ncdpo.compare.runs import Failure, plan, train_run, write_run


def execute_on_ray(specs: Sequence[RunSpec], out: Path, address: str) -> list[Failure]:
    """
    Run the unfinished runs of ``specs`` as Ray tasks on the cluster at ``address``; write each finished run's files.

    :param specs: Requested runs
    :param out: Output directory (on the driver)
    :param address: The cluster's address (``HOST:PORT`` of its head, or ``auto``), as ``ray.init`` takes it
    :return: The runs that failed
    :raises ImportError: naming the extra to install, if Ray is not installed
    """
    try:
        import ray
    except ImportError as error:
        raise ImportError(f'--ray-address needs Ray: pip install "sb3-ncdpo[ray]" ({error})') from error
    from tqdm.auto import tqdm

    todo = plan(specs, out)
    out.mkdir(parents=True, exist_ok=True)
    if len(todo) < len(specs):
        print(f"reusing {len(specs) - len(todo)} finished run(s) from {out / 'runs'}", flush=True)
    if not todo:
        return []
    ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
    try:
        return _collect(ray, todo, out, tqdm)
    finally:
        ray.shutdown()


def _collect(ray: Any, todo: list[RunSpec], out: Path, tqdm: Any) -> list[Failure]:
    """Submit every run, then write each one's files as it finishes (an interrupt cancels the others)."""
    # A fresh worker process per run (max_calls=1), as local runs get a fresh process: its peak RSS is its own.
    remote = ray.remote(max_calls=1)(train_run)
    tasks = {
        remote.options(num_cpus=spec.n_threads, runtime_env={"env_vars": {"OMP_NUM_THREADS": str(spec.n_threads)}}).remote(
            spec
        ): spec
        for spec in todo
    }
    failures = []
    pending = list(tasks)
    try:
        with tqdm(total=len(todo), desc="runs (ray)", unit="run") as bar:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                spec = tasks[done[0]]
                try:
                    write_run(out, spec, *ray.get(done[0]))
                except Exception as error:  # the run's own exception, raised again by ray.get
                    cause = getattr(error, "cause", None) or error
                    message = "".join(traceback.format_exception_only(type(cause), cause)).strip()
                    failures.append(Failure(spec, message))
                    tqdm.write(f"FAILED {spec.name}: {message}")
                bar.update()
    except KeyboardInterrupt:
        for task in pending:
            ray.cancel(task, force=True)
        raise
    return failures
