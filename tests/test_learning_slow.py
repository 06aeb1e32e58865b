"""Long learning checks with the packaged hyperparameters (``python -m pytest -m slow``; minutes each)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from ncdpo_vs_ppo import run_one


@pytest.mark.slow
def test_inverted_pendulum_reaches_the_maximum():
    # Measured: 1000 on 3/3 seeds at 100k steps (benchmarks/results/core).
    assert run_one("ncdpo", "InvertedPendulum-v5", seed=0, timesteps=100_000, n_eval_episodes=5)["eval_mean"] >= 900


@pytest.mark.slow
def test_pendulum_learns():
    # A policy that never swings up scores -1200 to -1600 (PPO's learning rate gave -1592); measured: -720 (seed 0).
    assert run_one("ncdpo", "Pendulum-v1", seed=0, timesteps=100_000, n_eval_episodes=10)["eval_mean"] > -1000
