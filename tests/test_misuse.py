"""
Misuse gets one clear line, naming the argument and what is allowed, before anything is built or written: a table of
the misuses tried (the Python API, then the command line), each with the message it must give.
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.envs import IdentityEnvMultiBinary

from sb3_ncdpo import DPPO, NCDPO
from sb3_ncdpo.cli import main

ROOT = Path(__file__).resolve().parent.parent
PRETRAINED = str(ROOT / "tests" / "fixtures" / "v0.1" / "pretrained_pendulum")

API = [
    (NCDPO, dict(use_sde=True), "use_sde=True is not supported: a diffusion policy explores through its denoising noise"),
    (DPPO, dict(use_sde=True), "use_sde=True is not supported"),
    (NCDPO, dict(batch_size=0), r"batch_size must be an int >= 1, got 0"),
    (NCDPO, dict(batch_size=1.5), r"batch_size must be an int >= 1, got 1.5"),
    (NCDPO, dict(batch_size=1), "batch_size must be > 1 when normalize_advantage=True"),
    (NCDPO, dict(clip_grad_per_group=1), "clip_grad_per_group must be a bool, got 1"),
    (NCDPO, dict(desired_kl=0.0), r"desired_kl must be a float > 0, or None to keep the learning rate's schedule, got 0.0"),
    (DPPO, dict(desired_kl="0.01"), r"desired_kl must be a float > 0, or None .*, got '0.01'"),
    (DPPO, dict(batch_size=True), r"batch_size must be an int >= 1 \(pairs of environment and denoising steps\)"),
    (NCDPO, dict(critic_warmup_iters=-1), "critic_warmup_iters must be an int >= 0, got -1"),
    (NCDPO, dict(bc_coef=-0.1), "bc_coef must be a float >= 0, got -0.1"),
    (NCDPO, dict(clip_range_vf=-1.0), "clip_range_vf must be > 0, or None to deactivate value clipping"),
    (NCDPO, dict(policy="PPOPolicy"), "Policy PPOPolicy unknown"),
    (NCDPO, dict(policy_kwargs=dict(n_denoising_steps=0)), "n_denoising_steps must be an int >= 1, got 0"),
    (NCDPO, dict(policy_kwargs=dict(sampler="euler2")), r"sampler must be one of \('ddpm', 'ddim'.*\), got 'euler2'"),
    (NCDPO, dict(policy_kwargs=dict(ddim_eta=2.0)), r"ddim_eta must be a float in \[0, 1\], got 2.0"),
    (NCDPO, dict(policy_kwargs=dict(prediction_type="v")), r"prediction_type must be one of \('epsilon', 'sample'\)"),
    (NCDPO, dict(policy_kwargs=dict(noise_schedule="sigmoid")), r"noise_schedule must be one of \('cosine', 'linear'\)"),
    (NCDPO, dict(policy_kwargs=dict(fixed_std=0.0)), "fixed_std must be a float > 0"),
    (
        NCDPO,
        dict(policy_kwargs=dict(n_finetuned_steps=11)),
        r"n_finetuned_steps must be an int in \[1, n_denoising_steps=10\]",
    ),
    (NCDPO, dict(policy_kwargs=dict(denoiser_hidden_sizes=[])), "denoiser_hidden_sizes must be a non-empty list of ints > 0"),
    (NCDPO, dict(policy_kwargs=dict(use_sde=True)), "use_sde=True is not supported"),
    (NCDPO, dict(policy_kwargs=dict(gradient_checkpointing="yes")), "gradient_checkpointing must be a bool, got 'yes'"),
    (NCDPO, dict(policy_kwargs=dict(chain_noise_scale=-0.5)), r"chain_noise_scale must be a float in \[0, 1\], got -0.5"),
    (NCDPO, dict(policy_kwargs=dict(chain_noise_scale=True)), r"chain_noise_scale must be a float in \[0, 1\], got True"),
    (NCDPO, dict(policy_kwargs=dict(deterministic_draws=-1)), r"deterministic_draws must be an int >= 0 .*, got -1"),
    (DPPO, dict(policy_kwargs=dict(deterministic_draws=2.5)), r"deterministic_draws must be an int >= 0 .*, got 2.5"),
    (DPPO, dict(policy_kwargs=dict(chain_noise_scale=0.5)), r"chain_noise_scale must be 1 with DPPO \(an NCDPO option\)"),
    (DPPO, dict(gamma_denoising=0.0), r"gamma_denoising must be a float in \(0, 1\], got 0.0"),
    (DPPO, dict(log_prob_reduction="max"), r"log_prob_reduction must be one of \('mean', 'sum'\), got 'max'"),
    (DPPO, dict(env="CartPole-v1"), r"DPPO supports only Box action spaces \(use NCDPO for discrete ones\)"),
    (
        NCDPO,
        dict(env=IdentityEnvMultiBinary(dim=2)),
        "action_space must be a Box with finite bounds, Discrete or MultiDiscrete",
    ),
    (NCDPO, dict(pretrained="/nowhere"), "pretrained must be a folder written by `sb3-ncdpo pretrain`"),
    (NCDPO, dict(pretrained=PRETRAINED, policy_kwargs=dict(n_denoising_steps=5)), r"differs from the pre-trained policy's 3"),
    (NCDPO, dict(env="Hopper-v5", pretrained=PRETRAINED), r"does not fit this env: observations of shape \(3,\) vs the env's"),
]


@pytest.mark.parametrize("algo, kwargs, message", API, ids=[f"{a.__name__}-{'-'.join(k)}" for a, k, _ in API])
def test_api_misuse_gets_a_clear_error(algo, kwargs, message):
    kwargs = {"policy": "MlpPolicy", "env": "Pendulum-v1", **kwargs}
    with pytest.raises(ValueError, match=message):
        algo(kwargs.pop("policy"), kwargs.pop("env"), **kwargs)


def test_nan_observations_stop_the_rollout_that_meets_them():
    class NanObservation(gym.ObservationWrapper):
        def observation(self, observation: np.ndarray) -> np.ndarray:
            return np.full_like(observation, np.nan)

    model = NCDPO("MlpPolicy", NanObservation(gym.make("Pendulum-v1")), n_steps=16, batch_size=16)
    with pytest.raises(ValueError, match="the policy's actions are not finite at step 0: the observations or the policy's"):
        model.learn(32)


CLI = [
    (["bogus"], "got 'bogus'"),
    ([], "got nothing"),
    (["compare", "--env", "Pendulum-v1", "--timesteps", "0", "--out", "x"], "--timesteps must be an int >= 1, got 0"),
    (["compare", "--env", "Pendulum-v1", "--timesteps", "64", "--algos", "sac", "--out", "x"], "--algos must be among"),
    (["pretrain", "--dataset", "x", "--out", "x", "--ema-decay", "1.5"], "ema_decay"),
    (["pretrain", "--dataset", "x", "--out", "x", "--policy-kwargs", "dict(sampler='x')"], "--policy-kwargs: sampler must be"),
    (["pretrain", "--dataset", "x", "--out", PRETRAINED], "--out: .* already exists and is not empty: .* --overwrite"),
    (
        ["collect-demos", "--model", "/nowhere.zip", "--algo", "ppo", "--env", "Pendulum-v1", "--dataset", "a/b-v0"],
        "no such file",
    ),
    (
        ["train", "--algo", "ncdpo", "--env", "Hopper-v5", "--pretrained", PRETRAINED],
        r"--pretrained: .* does not fit this env",
    ),
    (
        ["train", "--algo", "ncdpo", "--env", "Pendulum-v1", "--pretrained", "/nowhere"],
        "--pretrained must be a folder written",
    ),
]


@pytest.mark.parametrize("argv, message", CLI, ids=[" ".join(argv[:2]) or "nothing" for argv, _ in CLI])
def test_command_line_misuse_gets_a_clear_line_and_writes_nothing(argv, message, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)  # the table's relative paths
    before = set(ROOT.iterdir())
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code not in (0, None)
    text = capsys.readouterr().err + str(exit_info.value.code)
    assert re.search(message, text), text
    assert set(ROOT.iterdir()) == before  # no folder or file appeared


def test_help_works_on_the_command_and_every_subcommand(capsys):
    main(["--help"])
    assert "usage: sb3-ncdpo {train,enjoy,record-video,compare,collect-demos,pretrain}" in capsys.readouterr().out
    for command in ("compare", "pretrain", "collect-demos", "train", "enjoy"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0, command
        assert "usage" in capsys.readouterr().out.lower(), command


def test_ctrl_c_in_compare_ends_with_one_line_saying_how_to_resume(tmp_path):
    """SIGINT to the whole process group, as a terminal sends it: no traceback from the command or its run processes."""
    command = [sys.executable, "-m", "sb3_ncdpo", "compare", "--env", "Pendulum-v1", "--algos", "ppo", "--seeds", "2"]
    command += ["--timesteps", "1000000", "--n-jobs", "2", "--out", str(tmp_path / "out")]
    # A terminal's foreground job has Ctrl-C's default disposition; a test runner started in the background by a
    # non-interactive shell ignores SIGINT, and Python does not install its handler where it is ignored at start-up.
    child = subprocess.Popen(
        command,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert child.stderr is not None
    seen = b""
    while b"runs:" not in seen:  # the run processes are being started
        chunk = child.stderr.read1(1024)
        assert chunk, seen
        seen += chunk
    time.sleep(10.0)  # past the run processes' start-up (a Ctrl-C while Python itself starts still prints its traceback)
    os.killpg(child.pid, signal.SIGINT)
    seen += child.stderr.read()
    assert child.wait(timeout=60) == 1
    text = seen.decode()
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    assert re.search(r"interrupted: 0 of the 2 run\(s\) asked for are finished in .*/out/runs \(kept\); run the same", text)


def test_compare_refuses_an_out_that_cannot_be_created(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file", tmp_path / "file" / "sub"):
        with pytest.raises(SystemExit):
            main(["compare", "--env", "Pendulum-v1", "--timesteps", "64", "--out", str(out)])
        assert "--out" in (err := capsys.readouterr().err) and "is a file" in err


@pytest.mark.parametrize("command", ["pretrain", "collect-demos"])
def test_ctrl_c_in_pretrain_and_collect_demos_ends_with_one_line(command, monkeypatch):
    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(f"sb3_ncdpo.cli.{command.replace('-', '_')}", interrupted)
    with pytest.raises(SystemExit, match=f"interrupted: {command} wrote nothing .*; run the same command again"):
        main([command, "--help"])
