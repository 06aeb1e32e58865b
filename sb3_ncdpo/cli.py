"""
The ``sb3-ncdpo`` command (also ``python -m sb3_ncdpo``).

``train``, ``enjoy`` and ``record-video`` take rl-zoo3's flags unchanged and run rl-zoo3's own code, with this
package's algorithms registered (``--algo ncdpo``) next to every rl-zoo3 algorithm. Without ``-conf``, ``train``
reads this package's hyperparameter file for our algorithms, and for PPO whenever the env has an entry there (the
fair PPO baselines under ``-v5`` ids); otherwise rl-zoo3's own file. ``train --pretrained FOLDER`` starts from a
pre-trained folder (the algorithm's ``pretrained`` argument) and reads the packaged fine-tuning hyperparameters
(``hyperparams/<algo>_finetune.yml``) when the env has an entry there. ``compare`` runs :mod:`sb3_ncdpo.compare`,
``collect-demos`` :mod:`sb3_ncdpo.pretrain.demos` and ``pretrain`` :mod:`sb3_ncdpo.pretrain.bc`.
"""

import argparse
import contextlib
import runpy
import sys
from pathlib import Path

import gymnasium as gym

from sb3_ncdpo.common.pretrained import check_pretrained_spaces
from sb3_ncdpo.compare import main as compare
from sb3_ncdpo.pretrain.bc import main as pretrain
from sb3_ncdpo.pretrain.demos import main as collect_demos
from sb3_ncdpo.registration import is_multiagent
from sb3_ncdpo.zoo import ALGORITHMS, hyperparams_file, register

COMMANDS = ("train", "enjoy", "record-video", "compare", "collect-demos", "pretrain")


def default_config(zoo_args: list[str], finetune: bool = False) -> str | None:
    """
    :param zoo_args: rl-zoo3 ``train`` arguments
    :param finetune: Prefer the algorithm's fine-tuning file (``<algo>_finetune.yml``) when it has the env
    :return: The packaged hyperparameter file to use, or ``None`` to leave rl-zoo3's choice (or the user's ``-conf``)
    """
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--algo", default="ppo")
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("-conf", "--conf-file", default=None)
    known, _ = parser.parse_known_args(zoo_args)
    if known.conf_file is not None:
        return None
    if finetune and _has_entry(hyperparams_file(f"{known.algo}_finetune"), known.env):
        return str(hyperparams_file(f"{known.algo}_finetune"))
    path = hyperparams_file(known.algo)
    if not path.exists():
        return None
    if known.algo in ALGORITHMS:
        return str(path)
    return str(path) if _has_entry(path, known.env) else None


def _has_entry(path: Path, env_id: str) -> bool:
    if not path.exists():
        return False
    import yaml  # an rl-zoo3 dependency, like everything this command runs

    with open(path) as file:
        return env_id in (yaml.safe_load(file) or {})


def pretrained_args(zoo_args: list[str]) -> tuple[list[str], str | None]:
    """
    Turn ``--pretrained FOLDER`` into rl-zoo3's ``-params pretrained:'FOLDER'`` (added to the user's own ``-params``:
    rl-zoo3 keeps only the last occurrence of that flag).

    :param zoo_args: ``train`` arguments
    :return: The arguments for rl-zoo3, and the folder (``None`` without the flag)
    :raises SystemExit: if the folder is not a pre-trained folder
    """
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--pretrained", default=None)
    known, rest = parser.parse_known_args(zoo_args)
    if known.pretrained is None:
        return zoo_args, None
    if not (Path(known.pretrained) / "policy.pth").is_file():
        sys.exit(f"--pretrained must be a folder written by `sb3-ncdpo pretrain` (with policy.pth), got {known.pretrained!r}")
    value = f"pretrained:{str(Path(known.pretrained).resolve())!r}"
    for flag in ("-params", "--hyperparams"):
        if flag in rest:
            index = rest.index(flag) + 1
            return [*rest[:index], value, *rest[index:]], known.pretrained
    return [*rest, "-params", value], known.pretrained


def check_multiagent_enjoy(zoo_args: list[str]) -> None:
    """
    rl-zoo3's ``enjoy`` with ``--n-envs 1`` (its default) assumes a vec env of one sub-env; a multi-agent id
    (:mod:`sb3_ncdpo.multiagent`) has one sub-env per agent, which that branch cannot handle.

    :param zoo_args: rl-zoo3 ``enjoy`` / ``record-video`` arguments
    :raises SystemExit: for a multi-agent id with ``--n-envs 1``, saying what to pass instead
    """
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--n-envs", type=int, default=1)
    known, _ = parser.parse_known_args(zoo_args)
    if is_multiagent(known.env) and known.n_envs == 1:
        sys.exit(
            f"--env {known.env} is multi-agent (one sub-env per agent): rl-zoo3's enjoy needs --n-envs 2 or more for it "
            "(its --n-envs 1 branch assumes a single sub-env); each finished game's return is printed"
        )


def _env_id(zoo_args: list[str]) -> str:
    """:return: The ``--env`` of rl-zoo3 arguments (rl-zoo3's default otherwise)"""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--env", default="CartPole-v1")
    return str(parser.parse_known_args(zoo_args)[0].env)


def _check_takes_pretrained(zoo_args: list[str]) -> None:
    """:raises SystemExit: if the ``--algo`` of ``zoo_args`` has no ``pretrained`` argument"""
    import inspect

    import rl_zoo3

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--algo", default="ppo")
    algo = parser.parse_known_args(zoo_args)[0].algo
    algorithm = rl_zoo3.ALGOS.get(algo)
    if algorithm is None or "pretrained" not in inspect.signature(algorithm).parameters:
        takes = sorted(name for name, cls in rl_zoo3.ALGOS.items() if "pretrained" in inspect.signature(cls).parameters)
        sys.exit(
            f"--pretrained needs an algorithm with a `pretrained` argument ({takes}), got --algo {algo}; to start SB3's "
            "PPO from a Gaussian BC policy use sb3_ncdpo.compare.make_model(..., pretrained=) or `sb3-ncdpo compare "
            "--pretrained`"
        )


def _check_pretrained_fits(zoo_args: list[str], pretrained: str) -> None:
    """:raises SystemExit: if the pre-trained policy's spaces do not fit ``--env``'s (before rl-zoo3 makes its folders)"""
    env_id = _env_id(zoo_args)
    try:
        env = gym.make(env_id)
    except Exception:
        return  # rl-zoo3 makes the env its own way (and reports what is wrong with it)
    try:
        check_pretrained_spaces(pretrained, env.observation_space, env.action_space)
    except ValueError as error:
        sys.exit(f"--pretrained: {error} (--env {env_id})")
    finally:
        env.close()


def main(argv: list[str] | None = None) -> None:
    """
    :param argv: Arguments after the program name (``sys.argv[1:]`` by default)
    """
    args = list(sys.argv[1:] if argv is None else argv)
    usage = f"usage: sb3-ncdpo {{{','.join(COMMANDS)}}} [flags] (each command's flags: sb3-ncdpo COMMAND --help)"
    if args and args[0] in ("-h", "--help"):
        print(f"{usage}\n\n{__doc__.strip()}")
        return
    if not args or args[0] not in COMMANDS:
        sys.exit(f"{usage}; got {repr(args[0]) if args else 'nothing'}")
    command, zoo_args = args[0], args[1:]
    if command == "compare":
        compare(zoo_args)
        return
    if command in ("collect-demos", "pretrain"):
        try:
            (collect_demos if command == "collect-demos" else pretrain)(zoo_args)
        except KeyboardInterrupt:
            # Both write their output in one step at the end (a dataset, a pre-trained folder).
            sys.exit(f"interrupted: {command} wrote nothing (what was there is unchanged); run the same command again")
        return
    register()
    if command in ("enjoy", "record-video"):
        check_multiagent_enjoy(zoo_args)
    if command == "train":
        zoo_args, pretrained = pretrained_args(zoo_args)
        if pretrained is not None:
            _check_takes_pretrained(zoo_args)
            _check_pretrained_fits(zoo_args, pretrained)
        config = default_config(zoo_args, finetune=pretrained is not None)
        if config is not None:
            zoo_args = [*zoo_args, "--conf-file", config]
    sys.argv = [f"sb3-ncdpo {command}", *zoo_args]
    if command == "train":
        from rl_zoo3.train import train

        train()
        return
    reports: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if is_multiagent(_env_id(zoo_args)):
        # Imported here: the multiagent extra (PettingZoo, SuperSuit) is needed by the multi-agent ids alone.
        from sb3_ncdpo.multiagent import episode_reports

        reports = episode_reports()  # rl-zoo3 prints no episode of a vec env with more than one sub-env
    with reports:
        if command == "enjoy":
            from rl_zoo3.enjoy import enjoy

            enjoy()
        else:
            # rl-zoo3's record_video has no function to call: it only runs as a script.
            runpy.run_module("rl_zoo3.record_video", run_name="__main__")
