"""
The ``sb3-ncdpo`` command (also ``python -m sb3_ncdpo``).

``train``, ``enjoy`` and ``record-video`` take rl-zoo3's flags unchanged and run rl-zoo3's own code, with this
package's algorithms registered (``--algo ncdpo``) next to every rl-zoo3 algorithm. Without ``-conf``, ``train``
reads this package's hyperparameter file for our algorithms, and for PPO whenever the env has an entry there (the
fair PPO baselines under ``-v5`` ids); otherwise rl-zoo3's own file. ``compare`` runs :mod:`sb3_ncdpo.compare`.
"""

import argparse
import runpy
import sys

from sb3_ncdpo.registration import is_multiagent
from sb3_ncdpo.zoo import ALGORITHMS, hyperparams_file, register

COMMANDS = ("train", "enjoy", "record-video", "compare")


def default_config(zoo_args: list[str]) -> str | None:
    """
    :param zoo_args: rl-zoo3 ``train`` arguments
    :return: The packaged hyperparameter file to use, or ``None`` to leave rl-zoo3's choice (or the user's ``-conf``)
    """
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--algo", default="ppo")
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("-conf", "--conf-file", default=None)
    known, _ = parser.parse_known_args(zoo_args)
    if known.conf_file is not None:
        return None
    path = hyperparams_file(known.algo)
    if not path.exists():
        return None
    if known.algo in ALGORITHMS:
        return str(path)
    import yaml  # an rl-zoo3 dependency, like everything this command runs

    with open(path) as file:
        return str(path) if known.env in (yaml.safe_load(file) or {}) else None


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
            "(its --n-envs 1 branch assumes a single sub-env); evaluate_policy on sb3_ncdpo.multiagent.make_parallel_vec_env "
            "reports per-agent returns"
        )


def main(argv: list[str] | None = None) -> None:
    """
    :param argv: Arguments after the program name (``sys.argv[1:]`` by default)
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in COMMANDS:
        given = repr(args[0]) if args else "nothing"
        sys.exit(f"usage: sb3-ncdpo {{{','.join(COMMANDS)}}} [flags] (rl-zoo3's flags, or compare's: --help); got {given}")
    command, zoo_args = args[0], args[1:]
    if command == "compare":
        from sb3_ncdpo.compare import main as compare

        compare(zoo_args)
        return
    register()
    if command in ("enjoy", "record-video"):
        check_multiagent_enjoy(zoo_args)
    if command == "train":
        config = default_config(zoo_args)
        if config is not None:
            zoo_args = [*zoo_args, "--conf-file", config]
    sys.argv = [f"sb3-ncdpo {command}", *zoo_args]
    if command == "train":
        from rl_zoo3.train import train

        train()
    elif command == "enjoy":
        from rl_zoo3.enjoy import enjoy

        enjoy()
    else:
        # rl-zoo3's record_video has no function to call: it only runs as a script.
        runpy.run_module("rl_zoo3.record_video", run_name="__main__")
