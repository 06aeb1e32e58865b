"""``sb3-ncdpo compare`` end to end at a tiny budget: files, table rows, resume, a broken run, and ``--report-only``."""

import csv
import json
import os
import shutil
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pytest

from sb3_ncdpo.cli import main as cli
from sb3_ncdpo.compare import FIELDS, RunSpec, checkpoint_table, execute, finished_specs, make_model, report, summary_table
from sb3_ncdpo.compare.results import training_summary
from sb3_ncdpo.compare.runs import entry_values
from sb3_ncdpo.compare.stats import checkpoint_steps, standing, versus_table
from sb3_ncdpo.zoo import load_hyperparams

ENV = "InvertedPendulum-v5"
TINY = ["--env", ENV, "--timesteps", "64", "--eval-freq", "32", "--n-eval-episodes", "1", "--n-jobs", "2"]


def copy_run(source: Path, out: Path, name: str, **changes: Any) -> RunSpec:
    """
    Copy the finished run ``name`` of ``source`` into ``out``, as a run with other settings (``changes``).

    :return: The new run
    """
    spec = replace(RunSpec(**json.loads((source / "runs" / f"{name}.json").read_text())), **changes)
    with open(source / "runs" / f"{name}.csv", newline="") as file:
        rows = [{**row, "algo": spec.variant, "env": spec.env, "seed": spec.seed} for row in csv.DictReader(file)]
    (out / "runs").mkdir(parents=True, exist_ok=True)
    with open(out / "runs" / f"{spec.name}.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    (out / "runs" / f"{spec.name}.json").write_text(json.dumps(asdict(spec)))
    return spec


def fail_for_ppo(spec: RunSpec, out: Path, progress_bar: bool) -> Path:
    """A runner whose PPO runs break (module level: the runs execute in spawned processes)."""
    if spec.algo == "ppo":
        raise RuntimeError("simulated crash")
    from sb3_ncdpo.compare import run_one

    return run_one(spec, out, progress_bar)


@pytest.fixture(scope="module")
def compared(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("compare")
    cli(["compare", *TINY, "--algos", "ncdpo", "ppo", "--seeds", "2", "--out", str(out)])
    return out


def test_files_exist_and_parse(compared):
    with open(compared / "results.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == FIELDS
    runs = {(r["algo"], r["seed"]) for r in rows}
    assert runs == {("ncdpo", "0"), ("ncdpo", "1"), ("ppo", "0"), ("ppo", "1")}
    for algo, seed in runs:
        steps = [int(r["timesteps"]) for r in rows if (r["algo"], r["seed"]) == (algo, seed)]
        assert steps == [32, 64], (algo, seed, steps)  # the evaluation schedule, last point = the budget
    assert all(float(r["fps"]) > 0 and float(r["peak_rss_mb"]) > 50 for r in rows)
    assert (compared / f"curves_{ENV}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (compared / f"curves_{ENV}_wallclock.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_each_run_keeps_its_training_log(compared):
    for algo in ("ncdpo", "ppo"):
        with open(compared / "runs" / f"{algo}__{ENV}__seed0.progress.csv", newline="") as file:
            updates = list(csv.DictReader(file))
        assert max(int(row["time/total_timesteps"]) for row in updates) == 64  # SB3's logger rows, up to the budget
        kl = [float(row["train/approx_kl"]) for row in updates if row["train/approx_kl"]]
        assert kl and all(value >= 0 for value in kl), (algo, kl)  # every update's statistics, as SB3 logs them


def test_summary_has_one_row_per_algo_and_the_command(compared):
    summary = (compared / "summary.md").read_text()
    table = [line for line in summary.splitlines() if line.startswith(f"| {ENV} |")]
    assert [line.split("|")[2].strip() for line in table] == ["ncdpo", "ppo"]
    assert all(line.split("|")[3].strip() == "2" for line in table)  # runs per algo
    assert table[1].split("|")[8].strip() == "1.00"  # PPO's fps ratio to itself
    assert "sb3-ncdpo compare --env InvertedPendulum-v5 --algos ncdpo ppo --seeds 2 --timesteps 64" in summary


def test_small_returns_get_two_decimals():
    def rows(env: str, returns: list[float]) -> list[dict]:
        return [
            dict(algo=algo, env=env, seed=seed, timesteps=100, eval_return_mean=r, fps=10.0, peak_rss_mb=1.0)
            for algo in ("ncdpo", "ppo")
            for seed, r in enumerate(returns)
        ]

    table = summary_table(rows("Football", [0.27, 0.31, 0.35]) + rows("Hopper", [812.34, 812.34, 812.34]), metric="mean")
    cells = [line.split("|")[5].strip() for line in table.splitlines()[2:]]
    assert cells[0].startswith("0.31 [") and cells[2] == "812.3 [812.3, 812.3]"


def test_checkpoint_table_reports_the_metric_at_steps_every_run_has():
    # ncdpo seeds 0-2 evaluated every 10 steps up to 60, ppo seed 0 also at 5 and 65: only the common steps count
    steps = {("ncdpo", s): range(0, 70, 10) for s in range(3)} | {("ppo", 0): [0, 5, *range(10, 70, 10), 65]}
    rows = [
        dict(algo=algo, env="E", seed=seed, timesteps=t, eval_success_rate=(seed + 1) * t / 100)
        for (algo, seed), ts in steps.items()
        for t in ts
    ]
    assert checkpoint_steps(rows, 7) == [0, 10, 20, 30, 40, 50, 60]
    assert checkpoint_steps(rows, 3) == [0, 30, 60]
    table = checkpoint_table(rows, "eval_success_rate", metric="mean", n_columns=3).splitlines()
    assert table[0] == "| E: eval_success_rate, mean [95% CI] | runs | 0 steps | 30 steps | 60 steps |"
    # at 60 steps: ncdpo's seeds give 0.6, 1.2, 1.8 (mean 1.2); ppo's one seed 0.6, an interval of width 0
    assert table[2].startswith("| ncdpo | 3 | 0.00 [0.00, 0.00] | 0.60 [") and "| 1.20 [" in table[2]
    assert table[3] == "| ppo | 1 | 0.00 [0.00, 0.00] | 0.30 [0.30, 0.30] | 0.60 [0.60, 0.60] |"
    with pytest.raises(ValueError, match="n_columns must be an int >= 2, got 1"):
        checkpoint_steps(rows, 1)


def test_versus_table_says_where_an_algorithm_stands_at_each_checkpoint():
    assert standing(0.5, 0.4, 0.6, (0.2, 0.1, 0.39)) == "above, apart"
    assert standing(0.5, 0.4, 0.6, (0.2, 0.1, 0.4)) == "at or above"  # touching intervals overlap
    assert standing(0.5, 0.4, 0.6, (0.55, 0.5, 0.7)) == "below"
    assert standing(0.5, 0.4, 0.6, (0.8, 0.61, 0.9)) == "below, apart"
    values = {
        "a": [(0.5, 0.5, 0.5), (0.6, 0.7, 0.8), (0.4, 0.5, 0.6)],
        "b": [(0.5, 0.5, 0.5), (0.1, 0.2, 0.3), (0.45, 0.55, 0.65)],
        "c": [(0.5, 0.5, 0.5), (0.6, 0.7, 0.8), (0.9, 0.9, 0.9)],
    }
    rows = [
        dict(algo=algo, env="E", seed=seed, timesteps=10 * i, eval_success_rate=by_seed[seed])
        for algo, checkpoints in values.items()
        for i, by_seed in enumerate(checkpoints)
        for seed in range(3)
    ]
    rows += [dict(algo="a", env="F", seed=0, timesteps=0, eval_success_rate=1.0)]  # no baseline there: left out
    table = versus_table(rows, "eval_success_rate", "a", ["b", "c", "d"], metric="mean", n_columns=3).splitlines()
    assert table == [
        "| E: a vs (eval_success_rate, mean, 95% CIs) | 0 steps | 10 steps | 20 steps |",
        "|---|---|---|---|",
        "| b | at or above | above, apart | below |",
        "| c | at or above | at or above | below, apart |",
    ]


def test_training_summary_reads_the_updates_and_the_late_rollouts(tmp_path):
    spec = RunSpec("ncdpo", ENV, 0, 64, 32, 1)
    assert training_summary(tmp_path, spec) == {}  # no training log kept
    (tmp_path / "runs").mkdir()
    log = ["time/iterations,train/approx_kl,train/std,train/value_loss,rollout/success_rate"]
    log += [f"{i},,,{9.0},{0.0}" for i in range(3)]  # critic warm-up: no policy update, so no KL, no std
    log += [f"{i},{kl},{std},1.0,{success}" for i, (kl, std, success) in enumerate(
        [(0.1, 0.5, 0.0), (0.3, 0.4, 0.0), (0.2, 0.3, 0.6), (0.9, 0.2, 1.0)], start=3)]  # fmt: skip
    (tmp_path / "runs" / f"{spec.name}.progress.csv").write_text("\n".join(log) + "\n")
    summary = training_summary(tmp_path, spec)
    assert summary == {
        "train/approx_kl": pytest.approx(0.25),  # median of the four updates, the warm-up left out
        "train/std": pytest.approx(0.35),
        "rollout/success_rate": pytest.approx(0.8),  # the last third of 7 iterations: the last 2
    }


def test_resume_reuses_finished_runs(compared, capsys):
    before = {p.name: p.stat().st_mtime_ns for p in (compared / "runs").iterdir()}
    cli(["compare", *TINY, "--algos", "ncdpo", "ppo", "--seeds", "3", "--out", str(compared)])
    assert "reusing 4 finished run(s)" in capsys.readouterr().out
    after = {p.name: p.stat().st_mtime_ns for p in (compared / "runs").iterdir()}
    assert all(after[name] == mtime for name, mtime in before.items())  # untouched
    new_files = {f"{a}__{ENV}__seed2.{ext}" for a in ("ncdpo", "ppo") for ext in ("csv", "progress.csv", "json")}
    assert set(after) - set(before) == new_files


def test_other_settings_in_the_same_out_are_refused(compared):
    with pytest.raises(ValueError, match="use another --out"):
        cli(["compare", *TINY[:2], "--timesteps", "128", "--algos", "ppo", "--seeds", "1", "--out", str(compared)])


def test_a_broken_run_is_reported_and_erases_nothing(tmp_path):
    specs = [RunSpec(algo, ENV, 0, 64, 32, 1) for algo in ("ncdpo", "ppo")]
    failures = execute(specs, tmp_path, n_jobs=2, runner=fail_for_ppo)
    assert [(f.spec.algo, "simulated crash" in f.error) for f in failures] == [("ppo", True)]
    assert list(finished_specs(tmp_path)) == [f"ncdpo__{ENV}__seed0"]
    assert not (tmp_path / "runs" / f"ppo__{ENV}__seed0.json").exists()
    assert "| ncdpo | 1 |" in report(tmp_path)
    # A second attempt runs only what is missing, and keeps the finished run's file as it was.
    finished = (tmp_path / "runs" / f"ncdpo__{ENV}__seed0.csv").stat().st_mtime_ns
    assert execute(specs, tmp_path, n_jobs=1) == []
    assert (tmp_path / "runs" / f"ncdpo__{ENV}__seed0.csv").stat().st_mtime_ns == finished


@pytest.fixture
def copied(compared, tmp_path) -> Path:
    """The runs of ``compared`` (no report), plus a labelled variant and a run on another env."""
    out = tmp_path / "copied"
    shutil.copytree(compared / "runs", out / "runs")
    copy_run(compared, out, f"ppo__{ENV}__seed0", label="k5")
    copy_run(compared, out, f"ppo__{ENV}__seed0", env="Pendulum-v1")
    return out


def test_report_only_reports_exactly_the_runs_asked_for(copied):
    on_disk = {p.name: p.stat().st_mtime_ns for p in (copied / "runs").iterdir()}
    cli(["compare", *TINY, "--algos", "ppo", "--seeds", "1", "--out", str(copied), "--report-only"])
    with open(copied / "results.csv", newline="") as file:
        assert {(r["algo"], r["env"], r["seed"]) for r in csv.DictReader(file)} == {("ppo", ENV, "0")}
    summary = (copied / "summary.md").read_text()
    assert [line.split("|")[1:3] for line in summary.splitlines()[2:] if line.startswith("| ")] == [[f" {ENV} ", " ppo "]]
    assert "k5" not in summary and "Pendulum-v1" not in summary and "--algos ncdpo" not in summary
    assert f"--algos ppo --seeds 1 --timesteps 64 --eval-freq 32 --n-eval-episodes 1 --threads 1 --out {copied}\n" in summary
    assert not (copied / "curves_Pendulum-v1.png").exists()
    cli(["compare", *TINY, "--algos", "ppo", "--label", "k5", "--seeds", "1", "--out", str(copied), "--report-only"])
    with open(copied / "results.csv", newline="") as file:
        assert {(r["algo"], r["seed"]) for r in csv.DictReader(file)} == {("k5", "0")}
    assert {p.name: p.stat().st_mtime_ns for p in (copied / "runs").iterdir()} == on_disk  # the runs stay as they were


@pytest.mark.parametrize(
    "args, lines",
    [
        (
            ["--seed-list", "0", "5"],
            [f"  ncdpo on {ENV}, seed 5, 64 timesteps", f"  ppo on {ENV}, seed 5, 64 timesteps"],
        ),
        (
            ["--algos", "ppo", "--label", "k5", "--seed-list", "0", "1"],
            [f"  ppo on {ENV}, seed 1, 64 timesteps, label k5"],
        ),
        (
            ["--algos", "ppo", "--seeds", "1", "--n-eval-episodes", "2"],
            [f"  ppo on {ENV}, seed 0, 64 timesteps (finished with other settings: --n-eval-episodes 1 instead of 2)"],
        ),
    ],
)
def test_report_only_with_a_missing_run_fails_and_writes_nothing(copied, args, lines):
    (copied / "summary.md").write_text("the previous report\n")
    with pytest.raises(SystemExit) as exit_info:
        cli(["compare", *TINY, *args, "--out", str(copied), "--report-only"])
    message = str(exit_info.value.code)
    assert message.startswith(f"--report-only: {len(lines)} of the ") and "nothing was written" in message
    assert [line for line in message.splitlines() if line.startswith("  ")] == lines
    assert "Run the same command without --report-only" in message
    assert (copied / "summary.md").read_text() == "the previous report\n"
    assert not (copied / "results.csv").exists() and not list(copied.glob("*.png"))


@pytest.mark.parametrize("folder, why", [("absent", "does not exist"), ("empty", "holds no finished run")])
def test_report_only_on_an_absent_or_empty_folder_fails(tmp_path, folder, why):
    out = tmp_path / "out"
    if folder == "empty":
        out.mkdir()
    with pytest.raises(SystemExit) as exit_info:
        cli(["compare", *TINY, "--algos", "ncdpo", "ppo", "--seeds", "1", "--out", str(out), "--report-only"])
    message = str(exit_info.value.code)
    assert message.startswith(f"--report-only: {out} {why}, so none of the 2 run(s) asked for is finished")
    assert f"  ncdpo on {ENV}, seed 0, 64 timesteps\n  ppo on {ENV}, seed 0, 64 timesteps\n" in message
    assert os.path.exists(out) == (folder == "empty")
    assert not os.path.exists(out / "summary.md") and not os.path.exists(out / "results.csv")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--algos", "sac"], "--algos must be among"),
        (["--env", "NoSuchEnv-v0"], "has no entry"),
        (["--seeds", "0"], "--seeds must be an int >= 1"),
        (["--policy-kwargs", "dict(n_denoising_steps=0)"], "n_denoising_steps must be an int >= 1"),
        (["--label", "k5"], "give a single --algos"),
        (["--hyperparams", "sb3"], "argument --hyperparams: invalid choice: 'sb3'"),
        (["--algo-kwargs", "[1]"], "--algo-kwargs: "),
        (["--env", "Reacher-v5", "--algos", "ncdpo"], "--env Reacher-v5 with --algos ncdpo and --hyperparams packaged"),
    ],
)
def test_bad_arguments_fail_before_anything_runs(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit):
        cli(["compare", "--env", ENV, "--timesteps", "64", "--out", str(tmp_path / "out"), *args])
    assert message in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "out")


def test_value_sets_ppo_and_defaults():
    """``--hyperparams ppo`` gives NCDPO PPO's packaged entry (the policy renamed), ``defaults`` SB3's own values."""
    ppo_entry = load_hyperparams("ppo", "Hopper-v5")
    assert entry_values("ncdpo", "Hopper-v5", "ppo") == {**ppo_entry, "policy": "MlpDiffusionPolicy"}
    assert entry_values("ppo", "Hopper-v5", "ppo") == ppo_entry
    assert entry_values("ncdpo", "Reacher-v5", "defaults") == {"policy": "MlpDiffusionPolicy"}
    with pytest.raises(ValueError, match=r"hyperparams must be one of \('packaged', 'ppo', 'defaults'\), got 'sb3'"):
        entry_values("ncdpo", "Hopper-v5", "sb3")
    packaged, _ = make_model("ncdpo", "Pendulum-v1", 0)
    as_ppo, _ = make_model("ncdpo", "Pendulum-v1", 0, hyperparams="ppo", algo_kwargs=dict(n_epochs=3))
    defaults, _ = make_model("ncdpo", "Pendulum-v1", 0, hyperparams="defaults")
    assert (packaged.learning_rate, as_ppo.learning_rate, defaults.learning_rate) == (3e-4, 1e-3, 3e-4)
    assert (as_ppo.n_envs, as_ppo.n_steps, as_ppo.n_epochs, as_ppo.gamma) == (4, 1024, 3, 0.9)
    assert (defaults.n_envs, defaults.n_steps, defaults.batch_size, defaults.gamma) == (1, 2048, 64, 0.99)


def test_a_value_set_is_part_of_the_run_and_its_command(tmp_path):
    out = tmp_path / "out"
    args = ["--algos", "ncdpo", "--seeds", "1", "--hyperparams", "ppo", "--algo-kwargs", "dict(n_epochs=1)", "--out", str(out)]
    cli(["compare", *TINY, *args])
    (spec,) = finished_specs(out).values()
    assert (spec.hyperparams, spec.algo_kwargs) == ("ppo", "dict(n_epochs=1)")
    assert '--hyperparams ppo --algo-kwargs "dict(n_epochs=1)"' in (out / "summary.md").read_text()


def test_wallclock_scores_hold_each_run_at_its_latest_evaluation():
    from sb3_ncdpo.compare.plots import wallclock_scores

    rows = [
        dict(seed=0, wall_time_s=60, eval_return_mean=1.0),
        dict(seed=0, wall_time_s=120, eval_return_mean=2.0),
        dict(seed=1, wall_time_s=90, eval_return_mean=5.0),
        dict(seed=1, wall_time_s=300, eval_return_mean=7.0),
    ]
    minutes, scores = wallclock_scores(rows, n_points=5)
    # from the latest first evaluation (90 s) to the slowest run's end (300 s); seed 0 keeps its final score after 120 s
    assert minutes.tolist() == [1.5, 2.375, 3.25, 4.125, 5.0]
    assert scores[:, 0].tolist() == [[1.0, 2.0, 2.0, 2.0, 2.0], [5.0, 5.0, 5.0, 5.0, 7.0]]


def test_curves_show_the_success_rate_where_every_run_reports_one():
    from sb3_ncdpo.compare.plots import curve_key, wallclock_scores

    rows = [dict(seed=s, wall_time_s=60.0 * (s + 1), eval_return_mean=100.0 + s, eval_success_rate=0.5 * s) for s in (0, 1)]
    assert curve_key(rows) == "eval_success_rate"
    _, scores = wallclock_scores(rows, n_points=2, key=curve_key(rows))
    assert scores[:, 0].tolist() == [[0.0, 0.0], [0.5, 0.5]]
    rows[0]["eval_success_rate"] = None  # a run that reports none (or an env without success): the return
    assert curve_key(rows) == "eval_return_mean"
    assert curve_key([]) == "eval_return_mean"
