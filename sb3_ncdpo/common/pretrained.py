"""
The pre-trained folder that fine-tuning starts from, in Stable-Baselines3's own formats (the layer that the algorithms
import: they load it; ``sb3_ncdpo.pretrain`` writes it).

``OUT/policy.pth`` is the policy saved by ``policy.save()`` (its weights and every constructor parameter, the
denoising chain's settings included), ``OUT/vecnormalize.pkl`` the observation normalisation as a saved
``VecNormalize`` (absent when the policy was trained on raw observations) and ``OUT/pretrain.json`` how it was made.
Any algorithm on these policies starts from it with :func:`pretrained_policy_kwargs` (before building the policy) and
:func:`init_from_pretrained` (after): NCDPO's ``pretrained=`` argument does exactly that.
"""

import inspect
import json
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.utils import get_device
from stable_baselines3.common.vec_env import VecEnv, VecNormalize, unwrap_vec_normalize

from sb3_ncdpo.common.atomic import atomic_folder
from sb3_ncdpo.common.policies import DiffusionActorCriticPolicy
from sb3_ncdpo.common.policy_settings import CHAIN_DEFAULTS
from sb3_ncdpo.version import __version__

FORMAT_VERSION = 1
POLICY_FILE = "policy.pth"
NORMALIZATION_FILE = "vecnormalize.pkl"
METADATA_FILE = "pretrain.json"

#: Constructor parameters that come from the environment or the algorithm, never from the file's kwargs.
_NOT_KWARGS = ("observation_space", "action_space", "lr_schedule", "use_sde", "squash_output", "full_std", "use_expln")


class FrozenRunningMeanStd(RunningMeanStd):
    """
    Observation statistics that no longer update: installed by :func:`init_from_pretrained` in the fine-tuning
    ``VecNormalize`` so that the policy sees exactly the normalisation it was pre-trained with (reward normalisation,
    a separate statistic, still updates).
    """

    def update(self, arr: np.ndarray) -> None:
        """Ignore new data: the statistics stay those of the demonstrations."""

    @classmethod
    def frozen(cls, rms: RunningMeanStd) -> "FrozenRunningMeanStd":
        """:return: A frozen copy of ``rms``"""
        frozen = cls(shape=rms.mean.shape)
        frozen.mean, frozen.var, frozen.count = rms.mean.copy(), rms.var.copy(), rms.count
        return frozen


class _SpacesVecEnv(VecEnv):
    """A VecEnv that only has spaces: lets a ``VecNormalize`` be built (and saved) without a real environment."""

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space) -> None:
        super().__init__(1, observation_space, action_space)

    def reset(self) -> Any:  # pragma: no cover - never stepped
        raise NotImplementedError

    def step_async(self, actions: np.ndarray) -> None:  # pragma: no cover
        raise NotImplementedError

    def step_wait(self) -> Any:  # pragma: no cover
        raise NotImplementedError

    def close(self) -> None:
        pass

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        return [None]  # VecEnv's constructor asks for the render mode

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:  # pragma: no cover
        raise NotImplementedError

    def env_method(
        self, method_name: str, *method_args: Any, indices: Any = None, **method_kwargs: Any
    ) -> list[Any]:  # pragma: no cover
        raise NotImplementedError

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:  # pragma: no cover
        return [False]


def observation_normalizer(
    observations: np.ndarray, observation_space: spaces.Space, action_space: spaces.Space, clip_obs: float = 10.0
) -> VecNormalize:
    """
    A ``VecNormalize`` (without an environment) whose observation statistics are those of ``observations``, with SB3's
    defaults otherwise. Its ``normalize_obs`` is the function that fine-tuning applies.

    :param observations: Observations, shape ``(n, *obs_shape)``
    :param observation_space: Observation space (a ``Box``)
    :param action_space: Action space
    :param clip_obs: Clip of the normalised observations
    :return: The normaliser
    """
    normalizer = VecNormalize(
        _SpacesVecEnv(observation_space, action_space), norm_obs=True, norm_reward=False, clip_obs=clip_obs
    )
    rms = RunningMeanStd(shape=observations.shape[1:])
    rms.update(np.asarray(observations, dtype=np.float64))
    normalizer.obs_rms = rms  # type: ignore[assignment]
    normalizer.training = False
    return normalizer


def save_pretrained(
    path: str | Path, policy: BasePolicy, normalizer: VecNormalize | None, metadata: dict[str, Any], overwrite: bool = False
) -> Path:
    """
    Write a pre-trained folder: the policy (SB3's ``policy.save``), its observation normalisation (``VecNormalize.save``)
    and the metadata (JSON), atomically: into a temporary folder next to ``path`` that then takes its place in one step,
    so that a kill leaves the previous folder or the new one, complete.

    :param path: Output folder (created; its parent too)
    :param policy: The policy
    :param normalizer: The observation normalisation, or ``None`` for raw observations
    :param metadata: JSON-serialisable description of how it was made
    :param overwrite: Replace ``path`` if it exists and is not empty (otherwise that is refused)
    :return: The folder
    :raises FileExistsError: if ``path`` exists and is not empty, without ``overwrite``
    """
    folder = Path(path)
    check_can_write_folder(folder, overwrite)
    with atomic_folder(folder) as tmp:
        policy.save(str(tmp / POLICY_FILE))
        if normalizer is not None:
            venv = normalizer.venv
            normalizer.save(str(tmp / NORMALIZATION_FILE))
            normalizer.venv = venv
        info = {"format": FORMAT_VERSION, "sb3_ncdpo_version": __version__, "policy_class": type(policy).__name__, **metadata}
        (tmp / METADATA_FILE).write_text(json.dumps(info, indent=1, default=str))
    return folder


def check_can_write_folder(folder: Path, overwrite: bool, overwrite_name: str = "overwrite=True") -> None:
    """
    :param folder: Where a pre-trained folder is to be written
    :param overwrite: Whether an existing one may be replaced
    :param overwrite_name: How the caller's user asks for ``overwrite``, for the message
    :raises FileExistsError: if ``folder`` exists and is not an empty folder (a file, or a folder with files), without
        ``overwrite``; if it is a file, even with it
    """
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{str(folder)!r} is a file, not a folder: choose another path for the pre-trained folder")
    if not overwrite and folder.is_dir() and any(folder.iterdir()):
        raise FileExistsError(
            f"{str(folder)!r} already exists and is not empty: choose another path, or replace it with {overwrite_name}"
        )


@dataclass
class Pretrained:
    """
    A loaded pre-trained folder.

    :param policy: The policy, rebuilt with its saved constructor parameters
    :param vec_normalize: The saved observation normalisation (without an environment), or ``None``
    :param metadata: The contents of ``pretrain.json``
    """

    policy: BasePolicy
    vec_normalize: VecNormalize | None
    metadata: dict[str, Any] = field(default_factory=dict)

    def normalized_env(self, venv: VecEnv, norm_reward: bool = False, gamma: float = 0.99) -> VecEnv:
        """
        :param venv: An environment with raw observations
        :param norm_reward: Normalise rewards too
        :param gamma: Discount of the reward normalisation
        :return: ``venv`` wrapped in a ``VecNormalize`` with the saved, frozen observation statistics (``venv`` itself
            if the policy was trained on raw observations)
        """
        if self.vec_normalize is None:
            return venv
        return _wrap(venv, self.vec_normalize, norm_reward, gamma)


def _check_folder(path: str | Path) -> Path:
    folder = Path(path)
    if not (folder / POLICY_FILE).is_file():
        raise ValueError(
            f"pretrained must be a folder written by `sb3-ncdpo pretrain` (with {POLICY_FILE}), got {str(path)!r}"
        )
    return folder


def _read_policy_file(folder: Path, device: th.device | str = "cpu") -> dict[str, Any]:
    return th.load(folder / POLICY_FILE, map_location=get_device(device), weights_only=False)


def _policy_class(folder: Path) -> type[BasePolicy]:
    data = _read_policy_file(folder)["data"]
    return DiffusionActorCriticPolicy if "n_denoising_steps" in data else ActorCriticPolicy


def _load_normalizer(folder: Path) -> VecNormalize | None:
    if not (folder / NORMALIZATION_FILE).exists():
        return None
    with open(folder / NORMALIZATION_FILE, "rb") as file:
        return pickle.load(file)


def load_pretrained(path: str | Path, device: th.device | str = "auto") -> Pretrained:
    """
    :param path: A folder written by ``sb3-ncdpo pretrain`` (:func:`save_pretrained`)
    :param device: Device of the policy
    :return: The policy, its observation normalisation and its metadata
    """
    folder = _check_folder(path)
    policy = _policy_class(folder).load(str(folder / POLICY_FILE), device=device)
    metadata = json.loads((folder / METADATA_FILE).read_text()) if (folder / METADATA_FILE).exists() else {}
    return Pretrained(policy, _load_normalizer(folder), metadata)


def pretrained_policy_kwargs(path: str | Path, policy_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """
    The policy keyword arguments that rebuild the pre-trained policy, with the fine-tuning overrides of
    ``policy_kwargs`` (only the keys of :meth:`DiffusionActorCriticPolicy.finetune_overridable_kwargs` of the file's
    chain; others must equal the file's value).

    :param path: Pre-trained folder
    :param policy_kwargs: The user's policy keyword arguments
    :return: The merged keyword arguments
    :raises ValueError: naming a key whose value differs from the file's and cannot change after pre-training
    """
    data = _read_policy_file(_check_folder(path))["data"]
    kwargs = {key: value for key, value in data.items() if key not in _NOT_KWARGS}
    overridable = DiffusionActorCriticPolicy.finetune_overridable_kwargs(data.get("sampler", CHAIN_DEFAULTS.sampler))
    for key, value in (policy_kwargs or {}).items():
        if key in overridable or key not in kwargs:
            if key not in overridable:
                raise ValueError(
                    f"policy_kwargs[{key!r}] cannot be set when fine-tuning from {str(path)!r}: the pre-trained policy "
                    f"fixes every key but {sorted(overridable)}"
                )
            kwargs[key] = value
        elif not _same(kwargs[key], value):
            raise ValueError(
                f"policy_kwargs[{key!r}]={value!r} differs from the pre-trained policy's {kwargs[key]!r} ({str(path)!r}); "
                f"only {sorted(overridable)} may change after pre-training"
            )
    return kwargs


def check_kept_policy_kwargs(saved: dict[str, Any], new: dict[str, Any], argument: str) -> None:
    """
    A model loaded from a file keeps the chain and networks it was trained with: ``new`` may change only what
    fine-tuning may change (:meth:`DiffusionActorCriticPolicy.finetune_overridable_kwargs`).

    :param saved: The file's policy keyword arguments
    :param new: The ones given at load
    :param argument: Where ``new`` came from, for the message (e.g. ``"custom_objects['policy_kwargs']"``)
    :raises ValueError: naming every setting ``new`` would change, with the saved and the new value
    """
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(DiffusionActorCriticPolicy).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }
    overridable = DiffusionActorCriticPolicy.finetune_overridable_kwargs(saved.get("sampler", CHAIN_DEFAULTS.sampler))
    # A key left out takes the policy's default: leaving out a saved setting changes it too.
    changed = [
        f"{key}: {saved.get(key, defaults.get(key))!r} -> {new.get(key, defaults.get(key))!r}"
        for key in sorted(set(saved) | set(new))
        if key not in overridable and not _same(saved.get(key, defaults.get(key)), new.get(key, defaults.get(key)))
    ]
    if changed:
        raise ValueError(
            f"{argument} would change the loaded policy's {'; '.join(changed)}: a loaded model keeps the chain and "
            f"networks it was trained with (only {sorted(overridable)} may change)"
        )


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def _wrap(venv: VecEnv, saved: VecNormalize, norm_reward: bool, gamma: float) -> VecNormalize:
    wrapped = VecNormalize(
        venv, norm_obs=True, norm_reward=norm_reward, clip_obs=saved.clip_obs, gamma=gamma, epsilon=saved.epsilon
    )
    _install_statistics(wrapped, saved)
    return wrapped


def _install_statistics(target: VecNormalize, saved: VecNormalize) -> None:
    if isinstance(saved.obs_rms, dict):
        raise ValueError("pre-trained observation normalisation of Dict observations is not supported")
    target.obs_rms = FrozenRunningMeanStd.frozen(saved.obs_rms)
    target.clip_obs, target.epsilon, target.norm_obs = saved.clip_obs, saved.epsilon, True


def check_pretrained_spaces(path: str | Path, observation_space: spaces.Space, action_space: spaces.Space) -> None:
    """
    :param path: Pre-trained folder
    :param observation_space: The env's observation space
    :param action_space: The env's action space
    :raises ValueError: if the pre-trained policy's observations or actions have another type or shape than the env's,
        naming both and what the policy was pre-trained on
    """
    folder = _check_folder(path)
    data = _read_policy_file(folder)["data"]
    problems = [
        f"{what} {_describe(saved)} vs the env's {_describe(given)}"
        for what, saved, given in (
            ("observations", data.get("observation_space"), observation_space),
            ("actions", data.get("action_space"), action_space),
        )
        if saved is not None and (type(saved) is not type(given) or saved.shape != given.shape or _n(saved) != _n(given))
    ]
    if problems:
        metadata = json.loads((folder / METADATA_FILE).read_text()) if (folder / METADATA_FILE).exists() else {}
        source = metadata.get("env_id") or metadata.get("dataset_id") or "an unrecorded env"
        raise ValueError(
            f"the pre-trained policy in {str(folder)!r} (pre-trained on {source}) does not fit this env: {'; '.join(problems)}"
        )


def _n(space: spaces.Space) -> Any:
    return getattr(space, "n", None) if isinstance(space, spaces.Discrete) else getattr(space, "nvec", None)


def _describe(space: spaces.Space) -> str:
    if isinstance(space, spaces.Box):
        return f"of shape {space.shape}"
    return str(space)


def init_from_pretrained(model: BaseAlgorithm, path: str | Path) -> None:
    """
    Start ``model`` from a pre-trained folder: copy the policy weights (all but ``log_std``, which the fine-tuning
    settings give) and install the saved observation normalisation, frozen, in the model's environment (wrapping it in
    a ``VecNormalize`` with reward normalisation if it has none).

    :param model: An algorithm whose policy was built with :func:`pretrained_policy_kwargs` of the same folder
    :param path: Pre-trained folder
    :raises ValueError: if the weights do not fit the model's policy
    """
    folder = _check_folder(path)
    check_pretrained_spaces(folder, model.observation_space, model.action_space)
    state = _read_policy_file(folder, model.device)["state_dict"]
    # The frozen copy of the untrained early steps (n_finetuned_steps) is not in the file: it becomes the pre-trained actor.
    own = {key: value for key, value in model.policy.state_dict().items() if not key.startswith("frozen_actor.")}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        raise ValueError(
            f"the pre-trained weights in {str(folder)!r} do not fit {type(model.policy).__name__}: missing {missing}, "
            f"unexpected {unexpected}, other shapes {mismatched}"
        )
    state = {key: value for key, value in state.items() if key != "log_std"}
    model.policy.load_state_dict(state, strict=False)
    reset_frozen_actor = getattr(model.policy, "reset_frozen_actor", None)
    if reset_frozen_actor is not None:
        reset_frozen_actor()
    saved = _load_normalizer(folder)
    if saved is None:
        existing = unwrap_vec_normalize(model.env) if model.env is not None else None
        if existing is not None and existing.norm_obs:
            raise ValueError(
                f"{str(folder)!r} was pre-trained on raw observations, but the env normalises them (VecNormalize with "
                "norm_obs): use the env without observation normalisation"
            )
        return
    assert model.env is not None, "init_from_pretrained needs a model with an environment"
    existing = unwrap_vec_normalize(model.env)
    if existing is None:
        warnings.warn(
            f"the env has no VecNormalize: it is wrapped in one with the observation statistics of {str(folder)!r} "
            "(frozen) and reward normalisation; save model.get_vec_normalize_env() with the model to evaluate it later "
            "(with rl-zoo3, set normalize: true)"
        )
        model.env = _wrap(model.env, saved, norm_reward=True, gamma=float(getattr(model, "gamma", 0.99)))
    else:
        _install_statistics(existing, saved)
    model._vec_normalize_env = unwrap_vec_normalize(model.env)
