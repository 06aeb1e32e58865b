"""
Demonstrations as Minari datasets: record episodes of any saved SB3 / rl-zoo3 model (``sb3-ncdpo collect-demos``)
and read a dataset back as arrays for behaviour cloning.

Recording uses Minari's own ``DataCollector`` around the raw environment, so the dataset holds raw observations and
the actions as the environment received them (inside the ``Box`` bounds), whatever observation normalisation the
model acts through. "Medium"-quality data comes from a partially trained checkpoint, or from Gaussian action noise
(``action_noise``: a std in units of half the action range, added to the model's action before clipping).
"""

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm

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
) -> Any:
    """
    Record ``n_episodes`` episodes of a saved model into a new local Minari dataset.

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
    :param seed: Seed of the first reset and of the action noise
    :param env_kwargs: Keyword arguments of ``gymnasium.make``
    :param description: Dataset description (a default names the model and the noise)
    :return: The ``minari.MinariDataset``
    """
    import gymnasium as gym
    import minari
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    classes = algorithm_classes()
    if algo not in classes:
        raise ValueError(f"algo must be one of {sorted(classes)}, got {algo!r}")
    if n_episodes < 1:
        raise ValueError(f"n_episodes must be an int >= 1, got {n_episodes!r}")
    if action_noise < 0:
        raise ValueError(f"action_noise must be >= 0, got {action_noise!r}")
    if not Path(model_path).is_file():
        raise ValueError(f"model file {str(model_path)!r} does not exist")
    if dataset_id in minari.list_local_datasets():
        raise ValueError(f"dataset {dataset_id!r} already exists locally: choose another id or delete it (minari delete)")

    model = classes[algo].load(str(model_path), device="cpu")
    # the collector's files live in the staging folder from the start: a kill or an error leaves no dataset behind
    with staged_dataset(dataset_id):
        collector = minari.DataCollector(gym.make(env_id, **(env_kwargs or {})), record_infos=False)
        venv: Any = DummyVecEnv([lambda: collector])
        try:
            stats = Path(vecnormalize) if vecnormalize is not None else find_vecnormalize(model_path, env_id)
            if stats is not None:
                venv = VecNormalize.load(str(stats), venv)
                venv.training, venv.norm_reward = False, False
            _play(model, venv, collector.action_space, n_episodes, deterministic, action_noise, seed)
            noisy = action_noise > 0
            noise_text = f" with Gaussian action noise {action_noise} (half-range units)" if noisy else ""
            collector.create_dataset(
                dataset_id=dataset_id,
                algorithm_name=f"{algo} ({'deterministic' if deterministic else 'stochastic'}){noise_text}",
                description=description or f"{n_episodes} episodes of {model_path} on {env_id}{noise_text}",
            )
        finally:
            venv.close()  # the collector's temporary files go before the staging folder does
    return minari.load_dataset(dataset_id)


def _play(
    model: Any, venv: Any, action_space: spaces.Space, n_episodes: int, deterministic: bool, action_noise: float, seed: int
) -> None:
    """Step ``venv`` (one env, the collector inside) with ``model``'s actions until ``n_episodes`` episodes ended."""
    noisy = action_noise > 0
    if noisy and not isinstance(action_space, spaces.Box):
        raise ValueError(f"action_noise needs a Box action space, got {action_space}")
    rng = np.random.default_rng(seed)
    venv.seed(seed)
    obs = venv.reset()
    done_episodes = 0
    while done_episodes < n_episodes:
        action, _ = model.predict(obs, deterministic=deterministic)
        if noisy:
            assert isinstance(action_space, spaces.Box)
            half_range = (action_space.high - action_space.low) / 2
            noise = rng.normal(0.0, action_noise, size=action.shape) * half_range
            action = np.clip(action + noise, action_space.low, action_space.high)
        if isinstance(action_space, spaces.Box):
            action = action.astype(action_space.dtype)  # Minari checks that the action is in the space, dtype included
        obs, _, dones, _ = venv.step(action)
        done_episodes += int(dones[0])


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
    """

    observations: np.ndarray
    actions: np.ndarray
    episode_ids: np.ndarray
    episode_returns: np.ndarray


def dataset_transitions(dataset: Any) -> Transitions:
    """
    :param dataset: A ``minari.MinariDataset`` with ``Box`` observations
    :return: Its transitions (each episode's last observation, which has no action, is left out)
    """
    if not isinstance(dataset.observation_space, spaces.Box):
        raise ValueError(f"only Box observations are supported, got {dataset.observation_space}")
    observations, actions, episode_ids, returns = [], [], [], []
    for index, episode in enumerate(dataset.iterate_episodes()):
        n_steps = len(episode.actions)
        observations.append(np.asarray(episode.observations[:n_steps], dtype=np.float32))
        actions.append(np.asarray(episode.actions, dtype=np.float32))
        episode_ids.append(np.full(n_steps, index))
        returns.append(float(np.sum(episode.rewards)))
    if not observations:
        raise ValueError("the dataset has no episode")
    return Transitions(np.concatenate(observations), np.concatenate(actions), np.concatenate(episode_ids), np.array(returns))


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse and validate ``collect-demos``'s command line."""
    parser = argparse.ArgumentParser(prog="sb3-ncdpo collect-demos", description=__doc__)
    parser.add_argument("--algo", required=True, help="algorithm of the model (rl-zoo3 name: ppo, sac, ncdpo, ...)")
    parser.add_argument("--model", required=True, help="saved model (.zip), e.g. logs/ppo/Hopper-v5_1/Hopper-v5.zip")
    parser.add_argument("--env", required=True, help="environment id")
    parser.add_argument("--dataset-id", required=True, help="id of the new local Minari dataset, e.g. hopper/medium-v0")
    parser.add_argument("--n-episodes", type=int, default=10)
    parser.add_argument("--action-noise", type=float, default=0.0, help="Gaussian action noise std (half-range units)")
    parser.add_argument("--stochastic", action="store_true", help="sample the model's actions instead of its mode")
    parser.add_argument("--vecnormalize", help="the model's vecnormalize.pkl (default: found next to the model)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--env-kwargs", default="", help='gymnasium.make kwargs, a dict expression: "dict(x=1)"')
    args = parser.parse_args(argv)
    if args.n_episodes < 1:
        parser.error(f"--n-episodes must be an int >= 1, got {args.n_episodes}")
    if args.action_noise < 0:
        parser.error(f"--action-noise must be >= 0, got {args.action_noise}")
    if not Path(args.model).is_file():
        parser.error(f"--model {args.model}: no such file")
    classes = algorithm_classes()
    if args.algo not in classes:
        parser.error(f"--algo must be one of {sorted(classes)}, got {args.algo!r}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """
    :param argv: Arguments after ``collect-demos`` (``sys.argv[1:]`` by default)
    """
    args = parse_args(sys.argv[1:] if argv is None else argv)
    dataset = collect_demos(
        args.model,
        args.algo,
        args.env,
        args.dataset_id,
        args.n_episodes,
        action_noise=args.action_noise,
        deterministic=not args.stochastic,
        vecnormalize=args.vecnormalize,
        seed=args.seed,
        env_kwargs=eval_policy_kwargs(args.env_kwargs),
    )
    returns = dataset_transitions(dataset).episode_returns
    print(
        f"dataset {args.dataset_id}: {dataset.total_episodes} episodes, {dataset.total_steps} steps, "
        f"return {returns.mean():.1f} +- {returns.std():.1f} (min {returns.min():.1f}, max {returns.max():.1f})"
    )
