"""
rl-zoo3 integration: this package's algorithms, their Optuna samplers and their packaged hyperparameters.

rl-zoo3 has no plugin mechanism for algorithms; the way its documentation gives for external ones (its SBX guide) is
to add them to ``rl_zoo3.ALGOS`` (one dict shared by train, enjoy and record_video) and to the sampler / converter
tables of ``rl_zoo3.hyperparams_opt`` before calling rl-zoo3's own entry points. :func:`register` does that.
"""

import importlib
from importlib import resources
from pathlib import Path
from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm
from torch import nn

from sb3_ncdpo.dppo import DPPO
from sb3_ncdpo.ncdpo import NCDPO

#: Algorithms this package adds to rl-zoo3, by their ``--algo`` name.
ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"ncdpo": NCDPO, "dppo": DPPO}

DENOISER_SIZES = {"small": [128, 128], "medium": [256, 256], "large": [256, 256, 256]}
CONDITION_NETS = {"none": [], "small": [64, 64]}


def hyperparams_file(algo: str) -> Path:
    """
    :param algo: Algorithm name (``ncdpo``, ``ppo``)
    :return: Path of the packaged hyperparameter file of that algorithm (it may not exist)
    """
    return Path(str(resources.files("sb3_ncdpo") / "hyperparams" / f"{algo}.yml"))


def load_hyperparams(algo: str, env_id: str) -> dict[str, Any]:
    """
    Read one entry of a packaged hyperparameter file, with ``policy_kwargs`` evaluated and ``lin_<x>`` schedules made
    the way rl-zoo3 does.

    :param algo: Algorithm name (``ncdpo``, ``ppo``)
    :param env_id: Environment id (the YAML key)
    :return: A fresh dict of the entry's values
    :raises ValueError: if the file or the entry does not exist, listing the known entries
    """
    import yaml

    path = hyperparams_file(algo)
    if not path.exists():
        raise ValueError(f"algo must be one with a packaged hyperparameter file, got {algo!r} (no {path})")
    with open(path) as file:
        table = yaml.safe_load(file) or {}
    if env_id not in table:
        raise ValueError(f"env {env_id!r} has no entry in {path}; known: {sorted(table)}")
    hyperparams = dict(table[env_id])
    if isinstance(hyperparams.get("policy_kwargs"), str):
        hyperparams["policy_kwargs"] = eval_policy_kwargs(hyperparams["policy_kwargs"])
    for key in SCHEDULED:
        if isinstance(hyperparams.get(key), str):
            hyperparams[key] = linear_schedule(hyperparams[key])
    return hyperparams


#: Values that rl-zoo3 accepts as ``lin_<initial value>`` schedules (PPO's and NCDPO's arguments).
SCHEDULED = ("learning_rate", "clip_range", "clip_range_vf")


def linear_schedule(value: str) -> Any:
    """
    :param value: ``"lin_<x>"``, rl-zoo3's notation for a value decaying linearly from ``x`` to 0 over training
    :return: SB3's ``LinearSchedule`` for it (picklable, unlike a closure)
    :raises ValueError: for any other string
    """
    from stable_baselines3.common.utils import LinearSchedule

    kind, _, initial = value.partition("_")
    if kind == "lin":
        try:
            return LinearSchedule(float(initial), 0.0, 1.0)
        except ValueError:
            pass
    raise ValueError(f"a schedule must be written 'lin_<initial value>' (rl-zoo3's notation), got {value!r}")


def import_name(name: str) -> Any:
    """
    :param name: Dotted name of a class or function, e.g. ``"sb3_ncdpo.multiagent.parameter_sharing"``
    :return: The object (rl-zoo3 resolves ``policy``, ``env_wrapper`` and ``vec_env_wrapper`` names the same way)
    """
    module, _, attribute = name.rpartition(".")
    if not module:
        raise ValueError(f"expected a dotted name such as 'package.module.Class', got {name!r}")
    return getattr(importlib.import_module(module), attribute)


def eval_policy_kwargs(expression: str) -> dict[str, Any]:
    """
    Evaluate a ``policy_kwargs`` expression as rl-zoo3 does for its files (``dict``, ``nn`` and ``th`` in scope).

    :param expression: e.g. ``"dict(n_denoising_steps=5, activation_fn=nn.ReLU)"``; ``""`` for no override
    :return: The dict
    :raises ValueError: if it does not evaluate to a dict
    """
    if not expression:
        return {}
    import torch as th

    value = eval(expression, {"dict": dict, "nn": nn, "th": th})
    if not isinstance(value, dict):
        raise ValueError(f"policy_kwargs must be a dict expression such as 'dict(n_denoising_steps=5)', got {expression!r}")
    return value


def convert_ncdpo_params(params: dict[str, Any]) -> dict[str, Any]:
    """
    Turn the raw values sampled by :func:`sample_ncdpo_params` (or stored in an Optuna trial, for ``--trial-id``) into
    NCDPO's constructor arguments, with a complete ``policy_kwargs`` (a sampled one replaces the YAML one whole).

    :param params: Raw sampled values (``trial.params``)
    :return: Keyword arguments for :class:`~sb3_ncdpo.NCDPO`
    """
    return {
        "n_steps": 2 ** params["n_steps_pow"],
        "batch_size": 2 ** params["batch_size_pow"],
        "gamma": 1 - params["one_minus_gamma"],
        "gae_lambda": 1 - params["one_minus_gae_lambda"],
        "learning_rate": params["learning_rate"],
        "ent_coef": params["ent_coef"],
        "clip_range": params["clip_range"],
        "n_epochs": params["n_epochs"],
        "max_grad_norm": params["max_grad_norm"],
        "policy_kwargs": {
            "n_denoising_steps": params["n_denoising_steps"],
            "sampler": params["sampler"],
            "x0_clip": None if params["x0_clip"] == "none" else 1.0,
            "log_std_init": params["log_std_init"],
            "denoiser_hidden_sizes": DENOISER_SIZES[params["denoiser"]],
            "net_arch": {"pi": CONDITION_NETS[params["condition_net"]], "vf": [64, 64]},
            "activation_fn": nn.Tanh,
            **action_chunk(params),
        },
    }


def action_chunk(params: dict[str, Any]) -> dict[str, int]:
    """
    :param params: Raw sampled values; ``action_chunk`` is ``"<horizon>/<n_action_steps>"`` (absent in trials of
        sb3-ncdpo 0.2, which searched no chunks)
    :return: The policy's ``horizon`` and ``n_action_steps``
    """
    horizon, n_action_steps = (int(value) for value in params.get("action_chunk", "1/1").split("/"))
    return {"horizon": horizon, "n_action_steps": n_action_steps}


#: Search space of :func:`sample_ncdpo_params`: ``(low, high)`` ranges (ints: uniform; floats: log-uniform for the
#: names in :data:`LOG_SCALE`) and lists of choices. Narrow it in place before ``-optimize`` to search less.
SEARCH_SPACE: dict[str, tuple[int, int] | tuple[float, float] | list[Any]] = {
    "n_steps_pow": (7, 11),
    "batch_size_pow": (5, 7),  # never above n_steps_pow: every trial's batch fits its buffer
    "one_minus_gamma": (0.0001, 0.1),
    "one_minus_gae_lambda": (0.001, 0.1),
    # Lower than PPO's range: the denoiser is unstable at PPO's rates (docs/algorithms/ncdpo.md, "Learning rate").
    "learning_rate": (1e-5, 1e-3),
    "ent_coef": (1e-8, 0.01),
    "clip_range": [0.1, 0.2, 0.3],
    "n_epochs": [1, 5, 10],
    "max_grad_norm": (0.3, 2.0),
    "n_denoising_steps": [2, 5, 10, 20],
    "sampler": ["ddpm", "ddim"],
    "x0_clip": ["1", "none"],
    "log_std_init": (-2.0, 0.0),
    "denoiser": list(DENOISER_SIZES),
    "condition_net": list(CONDITION_NETS),
    # "<horizon>/<n_action_steps>": no chunks, DPPO's 4-action chunks, 8 denoised and 4 executed (docs/guide/chunks.md)
    "action_chunk": ["1/1", "4/4", "8/4"],
}
LOG_SCALE = {"one_minus_gamma", "one_minus_gae_lambda", "learning_rate", "ent_coef"}


def sample_ncdpo_params(trial: Any, n_actions: int, n_envs: int, additional_args: dict[str, Any]) -> dict[str, Any]:
    """
    Optuna sampler for NCDPO over :data:`SEARCH_SPACE`: PPO's knobs and the diffusion settings together.

    :param trial: Optuna trial
    :param n_actions: Size of the action space (unused)
    :param n_envs: Number of envs (unused)
    :param additional_args: rl-zoo3's extra arguments (unused)
    :return: Keyword arguments for :class:`~sb3_ncdpo.NCDPO`
    """
    return convert_ncdpo_params(suggest(trial, SEARCH_SPACE))


def suggest(trial: Any, space: dict[str, tuple[int, int] | tuple[float, float] | list[Any]]) -> dict[str, Any]:
    """
    :param trial: Optuna trial
    :param space: ``(low, high)`` ranges (ints: uniform; floats: log-uniform for the names in :data:`LOG_SCALE`) and
        lists of choices, by parameter name
    :return: One value per name, suggested by the trial
    """
    params: dict[str, Any] = {}
    for name, values in space.items():
        if isinstance(values, list):
            params[name] = trial.suggest_categorical(name, values)
        elif isinstance(values[0], int):
            params[name] = trial.suggest_int(name, values[0], values[1])
        else:
            params[name] = trial.suggest_float(name, values[0], values[1], log=name in LOG_SCALE)
    return params


def convert_dppo_params(params: dict[str, Any]) -> dict[str, Any]:
    """
    Turn the raw values sampled by :func:`sample_dppo_params` (or stored in an Optuna trial, for ``--trial-id``) into
    DPPO's constructor arguments, with a complete ``policy_kwargs``. ``batch_size`` is sampled in env steps and
    converted to (env step, denoising step) pairs, so that it always fits the rollout.

    :param params: Raw sampled values (``trial.params``)
    :return: Keyword arguments for :class:`~sb3_ncdpo.DPPO`
    """
    n_denoising_steps = params["n_denoising_steps"]
    return {
        "n_steps": 2 ** params["n_steps_pow"],
        "batch_size": 2 ** params["batch_size_pow"] * n_denoising_steps,
        "gamma": 1 - params["one_minus_gamma"],
        "gae_lambda": 1 - params["one_minus_gae_lambda"],
        "learning_rate": params["learning_rate"],
        "clip_range": params["clip_range"],
        "clip_range_base": None if params["clip_range_base"] == "none" else float(params["clip_range_base"]),
        "gamma_denoising": params["gamma_denoising"],
        "n_epochs": params["n_epochs"],
        "max_grad_norm": params["max_grad_norm"],
        "policy_kwargs": {
            "n_denoising_steps": n_denoising_steps,
            "sampler": params["sampler"],
            "min_step_std": params["min_std"],
            "fixed_std": params["min_std"],
            "noise_clip": 3.0,
            "denoiser_hidden_sizes": DENOISER_SIZES[params["denoiser"]],
            "net_arch": {"pi": CONDITION_NETS[params["condition_net"]], "vf": [64, 64]},
            "activation_fn": nn.Tanh,
            **action_chunk(params),
        },
    }


#: Search space of :func:`sample_dppo_params` (same conventions as :data:`SEARCH_SPACE`): PPO's knobs with DPPO's
#: smaller clip ranges, its denoising discount and clipping schedule, and its minimum std of every denoising step.
DPPO_SEARCH_SPACE: dict[str, tuple[int, int] | tuple[float, float] | list[Any]] = {
    "n_steps_pow": (7, 11),
    "batch_size_pow": (5, 7),
    "one_minus_gamma": (0.0001, 0.1),
    "one_minus_gae_lambda": (0.001, 0.1),
    "learning_rate": (1e-5, 1e-3),
    "clip_range": [0.01, 0.05, 0.1, 0.2],
    "clip_range_base": ["none", "0.001"],
    "gamma_denoising": [0.9, 0.99, 1.0],
    "n_epochs": [1, 5, 10],
    "max_grad_norm": (0.3, 2.0),
    "n_denoising_steps": [2, 5, 10, 20],
    "sampler": ["ddpm", "ddim"],
    "min_std": [0.05, 0.1, 0.2],
    "denoiser": list(DENOISER_SIZES),
    "condition_net": list(CONDITION_NETS),
    "action_chunk": ["1/1", "4/4", "8/4"],
}


def sample_dppo_params(trial: Any, n_actions: int, n_envs: int, additional_args: dict[str, Any]) -> dict[str, Any]:
    """
    Optuna sampler for DPPO over :data:`DPPO_SEARCH_SPACE`.

    :param trial: Optuna trial
    :param n_actions: Size of the action space (unused)
    :param n_envs: Number of envs (unused)
    :param additional_args: rl-zoo3's extra arguments (unused)
    :return: Keyword arguments for :class:`~sb3_ncdpo.DPPO`
    """
    return convert_dppo_params(suggest(trial, DPPO_SEARCH_SPACE))


def register() -> None:
    """Add this package's algorithms, samplers and converters to rl-zoo3 (idempotent)."""
    try:
        import rl_zoo3
        from rl_zoo3 import hyperparams_opt
    except ImportError as error:
        raise ImportError(f"the rl-zoo3 integration needs the 'zoo' extra: pip install 'sb3-ncdpo[zoo]' ({error})") from error

    rl_zoo3.ALGOS.update(ALGORITHMS)
    hyperparams_opt.HYPERPARAMS_SAMPLER["ncdpo"] = sample_ncdpo_params
    hyperparams_opt.HYPERPARAMS_CONVERTER["ncdpo"] = convert_ncdpo_params  # type: ignore[assignment]
    hyperparams_opt.HYPERPARAMS_SAMPLER["dppo"] = sample_dppo_params
    hyperparams_opt.HYPERPARAMS_CONVERTER["dppo"] = convert_dppo_params  # type: ignore[assignment]
