"""
Demonstrations as Minari datasets: record episodes of any saved SB3 / rl-zoo3 model or of any policy callable, such
as Meta-World's scripted experts (``sb3-ncdpo collect-demos``), and read a dataset back as arrays for behaviour cloning.

Recording uses Minari's own ``DataCollector`` around the raw environment, so the dataset holds raw observations and
the actions as the environment received them (inside the ``Box`` bounds), whatever observation normalisation the
model acts through. "Medium"-quality data comes from a partially trained checkpoint, or from Gaussian action noise
(``action_noise``: a std in units of half the action range, added to the action before clipping; a share of the
episodes can have a larger one). A dataset can be replayed on its env made otherwise (``--replay``: the same reset
seeds and actions), e.g. to record camera images of episodes that a state-based expert played.
"""

import argparse
import contextlib
import functools
import importlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.preprocessing import is_image_space

from sb3_ncdpo.common.atomic import atomic_file
from sb3_ncdpo.zoo import ALGORITHMS, eval_policy_kwargs


def algorithm_classes() -> dict[str, type[BaseAlgorithm]]:
    """
    :return: Every algorithm a model file can come from, by rl-zoo3 name: SB3's, this package's, and rl-zoo3's
        (sb3-contrib's included) when it is installed
    """
    from stable_baselines3 import A2C, DDPG, DQN, PPO, SAC, TD3

    classes: dict[str, type[BaseAlgorithm]] = {"a2c": A2C, "ddpg": DDPG, "dqn": DQN, "ppo": PPO, "sac": SAC, "td3": TD3}
    try:
        import rl_zoo3

        classes.update(rl_zoo3.ALGOS)
    except ImportError:
        pass
    classes.update(ALGORITHMS)
    return classes


def find_vecnormalize(model_path: str | Path, env_id: str) -> Path | None:
    """
    :param model_path: A model file
    :param env_id: Its environment id
    :return: The ``vecnormalize.pkl`` saved with it where rl-zoo3 puts it (``<dir>/<env_id>/vecnormalize.pkl``) or next
        to it (``<dir>/vecnormalize.pkl``), else ``None``
    """
    folder = Path(model_path).parent
    for candidate in (folder / env_id / "vecnormalize.pkl", folder / "vecnormalize.pkl"):
        if candidate.is_file():
            return candidate
    return None


def collect_demos(
    model_path: str | Path,
    algo: str,
    env_id: str,
    dataset_id: str,
    n_episodes: int,
    action_noise: float = 0.0,
    deterministic: bool = True,
    vecnormalize: str | Path | None = None,
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
    description: str | None = None,
    noisy_fraction: float = 0.0,
    noisy_action_noise: float = 0.0,
    max_episode_steps: int | None = None,
    min_steps: int = 0,
) -> Any:
    """
    Record ``n_episodes`` episodes (more with ``min_steps``) of a saved model into a new local Minari dataset
    (:func:`collect_policy_demos` with the model's actions, through its saved observation normalisation).

    :param model_path: Saved model (``.zip``)
    :param algo: Its algorithm, by rl-zoo3 name (``ppo``, ``sac``, ``ncdpo``, ...)
    :param env_id: Gymnasium environment id
    :param dataset_id: Id of the new dataset (Minari's syntax: ``(namespace/)(env_name/)name-v<version>``)
    :param n_episodes: Number of complete episodes to record
    :param action_noise: Std of the Gaussian noise added to each action, in units of half the action range
        (``Box`` actions only); 0 for none
    :param deterministic: Query the model's deterministic action (before the noise)
    :param vecnormalize: The model's saved ``VecNormalize`` statistics; ``None`` looks next to the model
        (:func:`find_vecnormalize`)
    :param seed: Seed of the episodes' resets and of the action noise
    :param env_kwargs: Keyword arguments of ``gymnasium.make``
    :param description: Dataset description (a default names the model and the noise)
    :param noisy_fraction: Share of the episodes played with ``noisy_action_noise`` instead of ``action_noise``
    :param noisy_action_noise: Noise std of those episodes
    :param max_episode_steps: Episode cap (``gymnasium.make``'s); ``None``: the env's own
    :param min_steps: Record more episodes, if needed, until the dataset holds at least this many steps
    :return: The ``minari.MinariDataset``
    """
    import gymnasium as gym
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    classes = algorithm_classes()
    if algo not in classes:
        raise ValueError(f"algo must be one of {sorted(classes)}, got {algo!r}")
    if not Path(model_path).is_file():
        raise ValueError(f"model file {str(model_path)!r} does not exist")
    check_demo_settings(dataset_id, n_episodes, action_noise, noisy_fraction, noisy_action_noise, max_episode_steps)
    model = classes[algo].load(str(model_path), device="cpu")
    model.set_random_seed(seed)  # sampled (--stochastic) actions too: the same arguments make the same dataset
    stats = Path(vecnormalize) if vecnormalize is not None else find_vecnormalize(model_path, env_id)
    # the statistics only: normalize_obs reads them, the env they are loaded onto is never stepped
    make_env = functools.partial(gym.make, env_id, **(env_kwargs or {}))
    normalizer = VecNormalize.load(str(stats), DummyVecEnv([make_env])) if stats is not None else None
    name = f"{algo} ({'deterministic' if deterministic else 'stochastic'})"
    return collect_policy_demos(
        ModelPolicy(model, normalizer, deterministic),
        env_id,
        dataset_id,
        n_episodes,
        action_noise=action_noise,
        noisy_fraction=noisy_fraction,
        noisy_action_noise=noisy_action_noise,
        max_episode_steps=max_episode_steps,
        seed=seed,
        env_kwargs=env_kwargs,
        algorithm_name=name,
        description=description or f"episodes of {model_path} on {env_id}",
        min_steps=min_steps,
    )


class ModelPolicy:
    """
    A saved SB3 model as a demonstration policy: one raw observation in, one action out, through the model's
    observation normalisation; :meth:`reset` starts an episode (a chunked diffusion policy's action queue restarts).

    :param model: The model
    :param normalizer: Its ``VecNormalize`` statistics, ``None`` if it acts on raw observations
    :param deterministic: Query the model's deterministic action
    """

    def __init__(self, model: BaseAlgorithm, normalizer: Any, deterministic: bool) -> None:
        self.model, self.normalizer, self.deterministic = model, normalizer, deterministic
        self.episode_start = True

    def reset(self) -> None:
        """The next observation is an episode's first."""
        self.episode_start = True

    def __call__(self, observation: np.ndarray) -> np.ndarray:
        if self.normalizer is not None:
            observation = self.normalizer.normalize_obs(observation)
        start = np.array([self.episode_start])
        self.episode_start = False
        action, _ = self.model.predict(observation, deterministic=self.deterministic, episode_start=start)
        return action


def load_policy(spec: str) -> Callable[[np.ndarray], Any]:
    """
    :param spec: ``module:attribute``: a callable mapping one observation to one action, a class of them (built
        with no arguments), or an object with a ``get_action(observation)`` method, as Meta-World's scripted
        policies (``metaworld.policies:SawyerPushV3Policy``)
    :return: The policy, as a callable
    :raises ValueError: if ``spec`` does not name such an object
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"policy must be 'module:attribute', got {spec!r}")
    try:
        target = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"policy {spec!r} cannot be imported: {error}") from error
    if isinstance(target, type):
        target = target()
    if callable(getattr(target, "get_action", None)):
        return GetActionPolicy(target)
    if not callable(target):
        raise ValueError(f"policy {spec!r} is neither callable nor has a get_action method")
    return target


class GetActionPolicy:
    """
    A policy with Meta-World's interface (``get_action(observation)``) as a callable, its ``reset`` kept.

    :param policy: The policy
    """

    def __init__(self, policy: Any) -> None:
        self.policy = policy

    def reset(self) -> None:
        """Start an episode: the policy's own ``reset``, where it has one."""
        if callable(getattr(self.policy, "reset", None)):
            self.policy.reset()

    def __call__(self, observation: np.ndarray) -> Any:
        return self.policy.get_action(observation)


def collect_policy_demos(
    policy: Callable[[np.ndarray], Any],
    env_id: str,
    dataset_id: str,
    n_episodes: int,
    *,
    action_noise: float = 0.0,
    noisy_fraction: float = 0.0,
    noisy_action_noise: float = 0.0,
    max_episode_steps: int | None = None,
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
    algorithm_name: str = "policy",
    description: str | None = None,
    min_steps: int = 0,
) -> Any:
    """
    Record ``n_episodes`` episodes of any policy (a scripted expert, a controller, a wrapped model) into a new local
    Minari dataset, with its quality set by Gaussian action noise: ``action_noise`` on most episodes, and
    ``noisy_action_noise`` on ``round(noisy_fraction * n_episodes)`` of them, drawn at random. Observations and actions
    are the raw env's (actions clipped to the ``Box``, as the env received them). Where the env reports success
    (``info["success"]``, Meta-World's key, or ``info["is_success"]``, SB3's), every step's flag is stored as the
    dataset's ``infos["success"]`` (the first of the two keys the env has). Episode ``i`` starts from
    ``reset(seed=s_i)``, ``s`` drawn from ``numpy.random.SeedSequence(seed)``: the same arguments make the same dataset.
    With ``min_steps``, episodes go on after the ``n_episodes`` first until the dataset holds at least ``min_steps``
    steps (D4RL sizes its datasets in transitions); each of those is a noisier one with probability ``noisy_fraction``.

    :param policy: One observation in, one action out; its ``reset()``, if it has one, is called at each episode's
        start
    :param env_id: Gymnasium environment id
    :param dataset_id: Id of the new dataset (Minari's syntax: ``(namespace/)(env_name/)name-v<version>``)
    :param n_episodes: Number of complete episodes to record
    :param action_noise: Std of the Gaussian noise added to each action, in units of half the action range
        (``Box`` actions only); 0 for none
    :param noisy_fraction: Share of the episodes played with ``noisy_action_noise`` instead, in [0, 1]
    :param noisy_action_noise: Noise std of those episodes
    :param max_episode_steps: Episode cap (``gymnasium.make``'s); ``None``: the env's own
    :param seed: Seed of the episodes' resets, of the noise and of the choice of the noisy episodes
    :param env_kwargs: Keyword arguments of ``gymnasium.make``
    :param algorithm_name: What made the data (the dataset's ``algorithm_name``, with the noise added)
    :param description: Dataset description (a default names the env and the noise)
    :param min_steps: Record more episodes, if needed, until the dataset holds at least this many steps (0: exactly
        ``n_episodes``)
    :return: The ``minari.MinariDataset``
    """
    import gymnasium as gym
    import minari

    if not callable(policy):
        raise ValueError(f"policy must be callable (one observation -> one action), got {policy!r}")
    check_demo_settings(dataset_id, n_episodes, action_noise, noisy_fraction, noisy_action_noise, max_episode_steps)
    if not isinstance(min_steps, int) or isinstance(min_steps, bool) or min_steps < 0:
        raise ValueError(f"min_steps must be an int >= 0 (0: exactly n_episodes), got {min_steps!r}")
    make_kwargs = dict(env_kwargs or {}, **({"max_episode_steps": max_episode_steps} if max_episode_steps else {}))
    rng = np.random.default_rng(seed)
    noisy = np.zeros(n_episodes, dtype=bool)
    noisy[rng.choice(n_episodes, size=round(noisy_fraction * n_episodes), replace=False)] = True
    probe = gym.make(env_id, **make_kwargs)
    try:
        if (action_noise > 0 or (noisy.any() and noisy_action_noise > 0)) and not isinstance(probe.action_space, spaces.Box):
            raise ValueError(f"action noise needs a Box action space, {env_id} has {probe.action_space}")
        try:  # Minari stores the env's spec with the dataset, after the episodes: refuse what it cannot store before them
            assert probe.spec is not None  # made by gymnasium.make
            probe.spec.to_json()
        except ValueError as error:
            raise ValueError(f"env {env_id!r} cannot be stored in a Minari dataset: {error}") from error
        success = reports_success(probe)
    finally:
        probe.close()
    noise_text = f" with Gaussian action noise {action_noise} (half-range units)" if action_noise > 0 else ""
    if noisy.any():
        noise_text += f", {noisy.sum()} of {n_episodes} episodes with noise {noisy_action_noise}"
        noise_text += f" (each later one with probability {noisy_fraction})" if min_steps else ""
    seeds = np.random.SeedSequence(seed)
    # the collector's files live in the staging folder from the start: a kill or an error leaves no dataset behind
    with staged_dataset(dataset_id):
        step_data = success_step_data() if success else minari.StepDataCallback
        collector = minari.DataCollector(gym.make(env_id, **make_kwargs), step_data_callback=step_data, record_infos=success)
        try:
            episode, n_steps = 0, 0
            while episode < n_episodes or n_steps < min_steps:
                is_noisy = noisy[episode] if episode < n_episodes else rng.random() < noisy_fraction
                episode_seed = int(seeds.generate_state(episode + 1)[episode])  # the sequence's words are a stream
                n_steps += _play_episode(
                    policy, collector, episode_seed, noisy_action_noise if is_noisy else action_noise, rng
                )
                episode += 1
            collector.create_dataset(
                dataset_id=dataset_id,
                algorithm_name=algorithm_name + noise_text,
                description=description or f"{episode} episodes of {algorithm_name} on {env_id}{noise_text}",
            )
        finally:
            collector.close()  # its temporary files go before the staging folder does
    return minari.load_dataset(dataset_id)


def replay_demos(
    source_id: str, dataset_id: str, env_kwargs: dict[str, Any] | None = None, description: str | None = None
) -> Any:
    """
    Record a dataset's episodes again on its env made with other ``gymnasium.make`` arguments, e.g. the camera images
    of a state-based dataset (``env_kwargs=dict(pixels=True)`` on a Meta-World id): each episode restarts from its
    recorded reset seed and replays its recorded actions, so a deterministic simulator goes through the same states.
    This is how image datasets are made from experts that act on the state (Meta-World's scripted policies). Every
    replayed reward is checked against the recorded one: a replay that diverges is refused, and no dataset is left.

    :param source_id: A local Minari dataset whose episodes were reset with seeds (:func:`collect_policy_demos`'s,
        :func:`collect_demos`'s)
    :param dataset_id: Id of the new dataset
    :param env_kwargs: ``gymnasium.make`` arguments added to the source's env id (its episode cap is kept)
    :param description: Dataset description (a default names the source and the arguments)
    :return: The new ``minari.MinariDataset``
    :raises ValueError: if ``dataset_id`` exists, an episode has no recorded seed, or a replay diverges
    """
    import gymnasium as gym
    import minari

    check_demo_settings(dataset_id, 1, 0.0, 0.0, 0.0, None)
    source = load_demos(source_id)
    spec = source.env_spec
    if spec is None:
        raise ValueError(f"dataset {source_id!r} has no env spec to replay its episodes on")
    seeds = [metadata.get("seed") for metadata in source.storage.get_episode_metadata(source.episode_indices)]
    if any(seed is None for seed in seeds):
        raise ValueError(f"dataset {source_id!r} has episodes without a recorded reset seed: they cannot be replayed")
    make_kwargs = dict(env_kwargs or {}, max_episode_steps=spec.max_episode_steps)
    with staged_dataset(dataset_id):
        env = gym.make(spec.id, **make_kwargs)
        success = "success" in next(iter(source.iterate_episodes())).infos
        step_data = success_step_data() if success else minari.StepDataCallback
        collector = minari.DataCollector(env, step_data_callback=step_data, record_infos=success)
        try:
            for index, (seed, episode) in enumerate(zip(seeds, source.iterate_episodes(), strict=True)):
                collector.reset(seed=int(seed))
                for step, (action, recorded) in enumerate(zip(episode.actions, episode.rewards, strict=True)):
                    reward = collector.step(action)[1]
                    if reward != recorded:
                        raise ValueError(
                            f"the replay of episode {index} diverged at step {step} (reward {reward}, recorded "
                            f"{recorded}): {spec.id} with {env_kwargs} is not the source's simulation"
                        )
            collector.create_dataset(
                dataset_id=dataset_id,
                algorithm_name=f"replay of {source_id}",
                description=description or f"the episodes of {source_id} replayed on {spec.id} with {env_kwargs}",
            )
        finally:
            collector.close()
    return minari.load_dataset(dataset_id)


def check_demo_settings(
    dataset_id: str,
    n_episodes: int,
    action_noise: float,
    noisy_fraction: float,
    noisy_action_noise: float,
    max_episode_steps: int | None,
) -> None:
    """
    Refuse bad recording settings, and a dataset id already taken, before anything is loaded or recorded.

    :raises ValueError: naming the setting and its allowed values
    """
    import minari

    if n_episodes < 1:
        raise ValueError(f"n_episodes must be an int >= 1, got {n_episodes!r}")
    for name, value in (("action_noise", action_noise), ("noisy_action_noise", noisy_action_noise)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value!r}")
    if not 0 <= noisy_fraction <= 1:
        raise ValueError(f"noisy_fraction must be in [0, 1], got {noisy_fraction!r}")
    if max_episode_steps is not None and max_episode_steps < 1:
        raise ValueError(f"max_episode_steps must be an int >= 1 or None, got {max_episode_steps!r}")
    if dataset_id in minari.list_local_datasets():
        raise ValueError(f"dataset {dataset_id!r} already exists locally: choose another id or delete it (minari delete)")


def reports_success(env: Any) -> bool:
    """:return: Whether ``env``'s step info has a success flag (``is_success`` or ``success``), tried on one step"""
    env.reset(seed=0)
    return bool({"is_success", "success"} & set(env.step(env.action_space.sample())[-1]))


def success_step_data() -> type:
    """:return: Minari's step data callback with each step's info reduced to its success flag (``False`` at a reset)"""
    import minari

    class SuccessStepData(minari.StepDataCallback):
        def __call__(self, env: Any, **kwargs: Any) -> Any:
            step_data = super().__call__(env, **kwargs)
            info = step_data["info"]
            # the step's own flag: Meta-World's success, else SB3's is_success (the Meta-World ids' is the episode's)
            step_data["info"] = {"success": bool(info.get("success", info.get("is_success", False)))}
            return step_data

    return SuccessStepData


def _play_episode(policy: Callable[[np.ndarray], Any], env: Any, seed: int, std: float, rng: np.random.Generator) -> int:
    """Play one episode of ``policy`` on ``env`` (the collector) with Gaussian action noise of ``std``; return its length."""
    if callable(getattr(policy, "reset", None)):
        policy.reset()  # type: ignore[attr-defined]
    space = env.action_space
    if std > 0:
        half_range = (space.high - space.low) / 2
    observation, _ = env.reset(seed=seed)
    done, n_steps = False, 0
    while not done:
        action = np.asarray(policy(observation))
        if std > 0:
            action = np.clip(action + rng.normal(0.0, std, size=action.shape) * half_range, space.low, space.high)
        if isinstance(space, spaces.Box):
            action = action.astype(space.dtype)  # Minari checks that the action is in the space, dtype included
        observation, _, terminated, truncated, _ = env.step(action)
        done, n_steps = terminated or truncated, n_steps + 1
    return n_steps


@contextlib.contextmanager
def staged_dataset(dataset_id: str) -> Iterator[None]:
    """
    Create a Minari dataset atomically: for the body, Minari's datasets folder is a temporary one next to the real one
    (same file system); when the body returns, the dataset it created there is renamed into the real folder in one step
    (its namespace's metadata first, where the namespace is new). A kill or an error leaves no partial dataset under
    its id (at most the temporary folder, named ``.sb3-ncdpo-staging-*``, beside the datasets folder).

    :param dataset_id: The id of the dataset the body creates (``namespace/name-vN`` or ``name-vN``)
    """
    import minari.storage.datasets_root_dir as datasets_root_dir

    # absolute: Minari's collector joins a relative datasets folder onto itself (a relative MINARI_DATASETS_PATH fails)
    root = datasets_root_dir.get_dataset_path().resolve()
    previous = os.environ.get("MINARI_DATASETS_PATH")
    with tempfile.TemporaryDirectory(prefix=".sb3-ncdpo-staging-", dir=root.parent) as staging:
        os.environ["MINARI_DATASETS_PATH"] = staging
        try:
            yield
        finally:
            if previous is None:
                del os.environ["MINARI_DATASETS_PATH"]
            else:
                os.environ["MINARI_DATASETS_PATH"] = previous
        staged, target = Path(staging) / dataset_id, root / dataset_id
        target.parent.mkdir(parents=True, exist_ok=True)
        namespace_metadata = staged.parent / "namespace_metadata.json"
        if namespace_metadata.exists() and not (target.parent / namespace_metadata.name).exists():
            with atomic_file(target.parent / namespace_metadata.name) as tmp:
                shutil.copyfile(namespace_metadata, tmp)
        os.rename(staged, target)


def load_demos(dataset_id: str, download: bool = False) -> Any:
    """
    :param dataset_id: A Minari dataset id
    :param download: Download it from Minari's remote storage when it is not local (needs network access)
    :return: The ``minari.MinariDataset``
    """
    import minari

    try:
        return minari.load_dataset(dataset_id, download=download)
    except FileNotFoundError as error:
        raise ValueError(
            f"dataset {dataset_id!r} is not a local Minari dataset ({error}); pass download=True (--download)"
        ) from error


@dataclass
class Transitions:
    """
    The (observation, action) pairs of a dataset, with episode boundaries and returns.

    :param observations: Observations at which each action was taken, ``(n, *obs_shape)``
    :param actions: Actions as the environment received them, ``(n, *action_shape)``
    :param episode_ids: Episode index of each transition, ``(n,)``
    :param episode_returns: Undiscounted return of each episode
    :param episode_successes: Whether each episode succeeded (at any step), where the dataset stores success flags
        (``infos["success"]``, :func:`collect_policy_demos`); ``None`` where it does not
    """

    observations: np.ndarray
    actions: np.ndarray
    episode_ids: np.ndarray
    episode_returns: np.ndarray
    episode_successes: np.ndarray | None = None


def dataset_transitions(dataset: Any) -> Transitions:
    """
    :param dataset: A ``minari.MinariDataset`` with ``Box`` observations
    :return: Its transitions (each episode's last observation, which has no action, is left out); observations as
        ``float32``, images (SB3's ``is_image_space``) kept as ``uint8``
    """
    if not isinstance(dataset.observation_space, spaces.Box):
        raise ValueError(f"only Box observations are supported, got {dataset.observation_space}")
    dtype = np.uint8 if is_image_space(dataset.observation_space) else np.float32
    observations, actions, episode_ids, returns, successes = [], [], [], [], []
    for index, episode in enumerate(dataset.iterate_episodes()):
        n_steps = len(episode.actions)
        observations.append(np.asarray(episode.observations[:n_steps], dtype=dtype))
        actions.append(np.asarray(episode.actions, dtype=np.float32))
        episode_ids.append(np.full(n_steps, index))
        returns.append(float(np.sum(episode.rewards)))
        if "success" in episode.infos:
            successes.append(bool(np.any(episode.infos["success"])))
    if not observations:
        raise ValueError("the dataset has no episode")
    return Transitions(
        np.concatenate(observations),
        np.concatenate(actions),
        np.concatenate(episode_ids),
        np.array(returns),
        np.array(successes) if successes else None,
    )


def check_recording_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse bad recording flags of ``collect-demos --model / --policy`` through ``parser.error``."""
    if args.env is None:
        parser.error("--env is required with --model or --policy")
    if args.n_episodes < 1:
        parser.error(f"--n-episodes must be an int >= 1, got {args.n_episodes}")
    for flag in ("action_noise", "noisy_action_noise"):
        if getattr(args, flag) < 0:
            parser.error(f"--{flag.replace('_', '-')} must be >= 0, got {getattr(args, flag)}")
    if not 0 <= args.noisy_fraction <= 1:
        parser.error(f"--noisy-fraction must be in [0, 1], got {args.noisy_fraction}")
    if args.max_episode_steps is not None and args.max_episode_steps < 1:
        parser.error(f"--max-episode-steps must be an int >= 1, got {args.max_episode_steps}")
    if args.min_steps < 0:
        parser.error(f"--min-steps must be an int >= 0 (0: exactly --n-episodes), got {args.min_steps}")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse and validate ``collect-demos``'s command line."""
    parser = argparse.ArgumentParser(prog="sb3-ncdpo collect-demos", description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="saved model (.zip), e.g. logs/ppo/Hopper-v5_1/Hopper-v5.zip (with --algo)")
    source.add_argument(
        "--policy",
        help="an importable policy, module:attribute: a callable observation -> action, a class of them, or an object "
        "with get_action (e.g. metaworld.policies:SawyerPushV3Policy)",
    )
    source.add_argument(
        "--replay",
        metavar="DATASET",
        help="replay a local dataset's episodes (their reset seeds and actions) on its env made with --env-kwargs, "
        'e.g. as images: --env-kwargs "dict(pixels=True)" on a Meta-World dataset',
    )
    parser.add_argument("--algo", help="algorithm of --model (rl-zoo3 name: ppo, sac, ncdpo, ...)")
    parser.add_argument("--env", help="environment id (with --model or --policy; --replay uses the dataset's)")
    parser.add_argument("--dataset-id", required=True, help="id of the new local Minari dataset, e.g. hopper/medium-v0")
    parser.add_argument("--n-episodes", type=int, default=10)
    parser.add_argument("--action-noise", type=float, default=0.0, help="Gaussian action noise std (half-range units)")
    parser.add_argument("--noisy-fraction", type=float, default=0.0, help="share of episodes with --noisy-action-noise")
    parser.add_argument("--noisy-action-noise", type=float, default=0.0, help="noise std of those episodes")
    parser.add_argument("--max-episode-steps", type=int, help="episode cap (default: the env's own)")
    parser.add_argument("--min-steps", type=int, default=0, help="more episodes until the dataset has this many steps")
    parser.add_argument("--stochastic", action="store_true", help="sample the model's actions instead of its mode")
    parser.add_argument("--vecnormalize", help="the model's vecnormalize.pkl (default: found next to the model)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--env-kwargs", default="", help='gymnasium.make kwargs, a dict expression: "dict(x=1)"')
    args = parser.parse_args(argv)
    if args.replay is not None:
        given = [flag for flag in ("env", "algo", "vecnormalize", "max_episode_steps") if getattr(args, flag) is not None]
        if given:
            parser.error(f"--{given[0].replace('_', '-')} goes with --model or --policy: --replay keeps the dataset's env")
        return args
    check_recording_args(parser, args)
    if args.policy is not None:
        for flag in ("algo", "vecnormalize"):
            if getattr(args, flag) is not None:
                parser.error(f"--{flag} goes with --model, not --policy")
        if args.stochastic:
            parser.error("--stochastic goes with --model, not --policy")
        try:
            args.policy_fn = load_policy(args.policy)
        except ValueError as error:
            parser.error(f"--{error}")
        return args
    if not Path(args.model).is_file():
        parser.error(f"--model {args.model}: no such file")
    classes = algorithm_classes()
    if args.algo not in classes:
        parser.error(f"--algo must be one of {sorted(classes)} with --model, got {args.algo!r}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """
    :param argv: Arguments after ``collect-demos`` (``sys.argv[1:]`` by default)
    """
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.replay is not None:
        dataset = replay_demos(args.replay, args.dataset_id, eval_policy_kwargs(args.env_kwargs))
        print(f"dataset {args.dataset_id}: {dataset.total_episodes} episodes of {args.replay} replayed")
        return
    quality = dict(
        action_noise=args.action_noise,
        noisy_fraction=args.noisy_fraction,
        noisy_action_noise=args.noisy_action_noise,
        max_episode_steps=args.max_episode_steps,
        seed=args.seed,
        env_kwargs=eval_policy_kwargs(args.env_kwargs),
        min_steps=args.min_steps,
    )
    if args.policy is not None:
        try:
            policy = load_policy(args.policy)
        except ValueError as error:
            raise SystemExit(f"sb3-ncdpo collect-demos: error: --{error}") from error
        dataset = collect_policy_demos(
            policy, args.env, args.dataset_id, args.n_episodes, algorithm_name=args.policy, **quality
        )
    else:
        dataset = collect_demos(
            args.model,
            args.algo,
            args.env,
            args.dataset_id,
            args.n_episodes,
            deterministic=not args.stochastic,
            vecnormalize=args.vecnormalize,
            **quality,
        )
    transitions = dataset_transitions(dataset)
    returns = transitions.episode_returns
    success = "" if transitions.episode_successes is None else f", success {transitions.episode_successes.mean():.0%}"
    print(
        f"dataset {args.dataset_id}: {dataset.total_episodes} episodes, {dataset.total_steps} steps, "
        f"return {returns.mean():.1f} +- {returns.std():.1f} (min {returns.min():.1f}, max {returns.max():.1f}){success}"
    )
