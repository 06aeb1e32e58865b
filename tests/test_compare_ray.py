"""``sb3-ncdpo compare --ray-address``: runs dispatched to a local Ray cluster that the test starts on 127.0.0.1."""

import csv
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sb3_ncdpo.cli import main as cli

ray = pytest.importorskip("ray")

ENV = "InvertedPendulum-v5"
TINY = ["--env", ENV, "--timesteps", "64", "--eval-freq", "32", "--n-eval-episodes", "1"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A one-node Ray cluster with 2 CPUs on 127.0.0.1 (started with this Python's ``ray``), stopped afterwards."""
    ray_command = [sys.executable, "-m", "ray.scripts.scripts"]
    port = free_port()
    temp_dir = tmp_path_factory.mktemp("ray")
    start = [*ray_command, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "2"]
    start += ["--include-dashboard", "false", "--disable-usage-stats", "--object-store-memory", str(100 * 2**20)]
    subprocess.run([*start, "--temp-dir", str(temp_dir)], check=True, capture_output=True, timeout=120)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([*ray_command, "stop", "--force"], check=False, capture_output=True, timeout=120)


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_a_campaign_runs_on_ray_and_resumes_and_reports_as_locally(cluster, tmp_path, capsys):
    out = tmp_path / "out"
    cli(["compare", *TINY, "--algos", "ncdpo", "ppo", "--seeds", "1", "--ray-address", cluster, "--out", str(out)])
    names = sorted(p.name for p in (out / "runs").iterdir())
    files = ("csv", "json", "progress.csv")  # the training log comes back from the Ray task too
    assert names == [f"{algo}__{ENV}__seed0.{ext}" for algo in ("ncdpo", "ppo") for ext in files]
    rows = read_rows(out / "results.csv")
    assert {(row["algo"], row["timesteps"]) for row in rows} == {(a, t) for a in ("ncdpo", "ppo") for t in ("32", "64")}
    assert "| ncdpo |" in (out / "summary.md").read_text()
    # Resume: the finished runs are reused (no task is sent); --report-only reads the same files.
    capsys.readouterr()
    cli(["compare", *TINY, "--algos", "ncdpo", "ppo", "--seeds", "1", "--ray-address", cluster, "--out", str(out)])
    assert "reusing 2 finished run(s)" in capsys.readouterr().out
    local = tmp_path / "local"
    shutil.copytree(out, local)
    cli(["compare", *TINY, "--algos", "ncdpo", "ppo", "--seeds", "1", "--report-only", "--out", str(local)])
    assert read_rows(local / "results.csv") == rows


def test_a_failing_run_on_ray_is_reported_with_its_own_error_and_writes_no_files(cluster, tmp_path):
    out = tmp_path / "out"
    argv = ["compare", *TINY, "--algos", "ppo", "--seeds", "1", "--policy-kwargs", "dict(net_arch=dict(pi=[-1]))"]
    with pytest.raises(SystemExit, match=r"(?s)1 run\(s\) failed .*ppo__InvertedPendulum-v5__seed0: RuntimeError: .*negative"):
        cli([*argv, "--ray-address", cluster, "--out", str(out)])
    assert not (out / "runs" / f"ppo__{ENV}__seed0.json").exists()


def test_ray_arguments_are_checked_before_anything_runs(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli(["compare", *TINY, "--n-jobs", "2", "--ray-address", "127.0.0.1:1", "--out", str(tmp_path / "o")])
    assert "--n-jobs applies to local runs" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
