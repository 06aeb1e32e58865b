"""
Behaviour cloning (``sb3-ncdpo pretrain``): pre-train a policy on a Minari dataset and write the pre-trained folder
that fine-tuning starts from (:mod:`sb3_ncdpo.common.pretrained`).

A :class:`~sb3_ncdpo.common.policies.DiffusionActorCriticPolicy` is trained with the standard denoising loss (Ho et
al., 2020) at uniformly random steps ``k``: with ``x_k = sqrt(abar_k) a + sqrt(1 - abar_k) eps``, the network's
prediction is regressed on ``eps`` (``prediction_type="epsilon"``) or on the clean action ``a``
(``prediction_type="sample"``), where ``a`` is the demonstrated action mapped to the policy's ``[-1, 1]`` space. A
Gaussian ``ActorCriticPolicy`` (the PPO baseline) regresses its action mean on the action (mean squared error; its
std is a fine-tuning setting). AdamW, cosine learning-rate decay, an exponential moving average (EMA) of the weights
(the EMA weights are saved), a validation loss on held-out episodes, a progress bar. Observations are normalised with
the dataset's mean and variance as a ``VecNormalize`` would, and that normaliser is saved with the policy.

A diffusion policy with action chunks or an observation history (``horizon``, ``n_obs_steps`` > 1) is cloned on
windows: each transition's ``n_obs_steps`` observations up to it and ``horizon`` actions from it, padded at the
episode's edges as Diffusion Policy pads them (:func:`window_indices`); the datasets stay per step.
"""

import argparse
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.torch_layers import NatureCNN
from stable_baselines3.common.vec_env import VecNormalize
from torch.nn import functional as F

from sb3_ncdpo.common.policies import DiffusionActorCriticPolicy
from sb3_ncdpo.common.policy_settings import check_policy_kwargs
from sb3_ncdpo.common.pretrained import check_can_write_folder, observation_normalizer, save_pretrained
from sb3_ncdpo.pretrain.demos import Transitions, dataset_transitions, load_demos
from sb3_ncdpo.zoo import eval_policy_kwargs

POLICIES = ("diffusion", "gaussian")


@dataclass(frozen=True)
class BCConfig:
    """
    Settings of behaviour cloning; every field is checked on creation and the error names it.

    :param n_steps: Gradient steps
    :param batch_size: Minibatch size
    :param learning_rate: Initial learning rate (AdamW)
    :param min_learning_rate: Final learning rate of the cosine decay
    :param weight_decay: AdamW weight decay
    :param ema_decay: Decay of the exponential moving average of the weights (0: no averaging)
    :param val_fraction: Fraction of the episodes held out for the validation loss (0: none)
    :param eval_every: Gradient steps between two validation losses
    :param patience: Stop once the validation loss has not improved for this many validations in a row and keep the
        weights of the best one (0: train all ``n_steps`` and keep the last weights); needs ``val_fraction > 0``
    :param normalize: Normalise observations with the dataset's statistics (saved as ``vecnormalize.pkl``); images are
        never normalised so (the policy scales them to [0, 1], as SB3 does)
    :param clip_obs: Clip of the normalised observations (VecNormalize's ``clip_obs``)
    :param seed: Seed of the split, the initialisation and the sampling
    """

    n_steps: int = 20_000
    batch_size: int = 256
    learning_rate: float = 1e-3
    min_learning_rate: float = 1e-5
    weight_decay: float = 1e-6
    ema_decay: float = 0.995
    val_fraction: float = 0.1
    eval_every: int = 500
    patience: int = 0
    normalize: bool = True
    clip_obs: float = 10.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_steps", "batch_size", "eval_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        for name in ("learning_rate", "clip_obs"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not 0 <= self.min_learning_rate <= self.learning_rate:
            raise ValueError(f"min_learning_rate must be in [0, learning_rate], got {self.min_learning_rate!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction!r}")
        if not isinstance(self.patience, int) or isinstance(self.patience, bool) or self.patience < 0:
            raise ValueError(f"patience must be an int >= 0 (0: no early stopping), got {self.patience!r}")
        if self.patience and self.val_fraction == 0:
            raise ValueError("patience > 0 stops on the validation loss: it needs val_fraction > 0, got val_fraction=0")


@dataclass
class BCResult:
    """
    :param policy: The trained policy (EMA weights)
    :param normalizer: Its observation normalisation, or ``None``
    :param history: One row per validation: ``step``, ``train_loss`` (mean since the last row), ``val_loss``, ``lr``
    :param demo_returns: Returns of the dataset's episodes
    :param best_step: Gradient step of the weights returned: the best validation's with early stopping, else the last
    """

    policy: ActorCriticPolicy
    normalizer: VecNormalize | None
    history: list[dict[str, float]] = field(default_factory=list)
    demo_returns: np.ndarray = field(default_factory=lambda: np.zeros(0))
    best_step: int = 0


def denoising_loss(
    policy: DiffusionActorCriticPolicy, observations: th.Tensor, actions: th.Tensor, generator: th.Generator | None = None
) -> th.Tensor:
    """
    The diffusion policy's behaviour-cloning loss: its chain's training loss
    (:meth:`~sb3_ncdpo.common.diffusion.DenoisingChain.training_loss`; DDPM / DDIM: the denoising loss, mean squared
    error of the prediction at a uniformly random step), the denoiser conditioned on the observations.

    :param policy: The policy
    :param observations: (Normalised) observations, ``(n, obs_dim)``
    :param actions: Actions in the policy's ``[-1, 1]`` space, ``(n, action_dim)``
    :param generator: Random generator of the loss's draws (the global one by default)
    :return: The loss (a scalar)
    """
    condition = policy.denoiser.project_condition(policy._actor_latent(observations))
    return policy.chain.training_loss(lambda noisy, steps: policy.denoiser(noisy, steps, condition), actions, generator)


def gaussian_loss(policy: ActorCriticPolicy, observations: th.Tensor, actions: th.Tensor) -> th.Tensor:
    """
    :param policy: A Gaussian ``ActorCriticPolicy``
    :param observations: (Normalised) observations
    :param actions: Actions in environment units
    :return: Mean squared error of the action mean
    """
    return F.mse_loss(policy.get_distribution(observations).distribution.mean, actions)  # type: ignore[union-attr]


def policy_targets(policy: ActorCriticPolicy, actions: np.ndarray) -> np.ndarray:
    """:return: The regression targets of ``actions``: mapped to ``[-1, 1]`` for a diffusion policy, unchanged otherwise"""
    if isinstance(policy, DiffusionActorCriticPolicy):
        return np.clip(policy.scale_action(actions), -1.0, 1.0).astype(np.float32)
    return actions.astype(np.float32)


def bc_loss(
    policy: ActorCriticPolicy,
    transitions: Transitions,
    normalizer: VecNormalize | None = None,
    max_samples: int = 4096,
    seed: int = 0,
) -> float:
    """
    The behaviour-cloning loss of ``policy`` on a dataset (the loss that pre-training minimises), with fixed random
    draws so that two policies are compared on the same steps and noise.

    :param policy: A diffusion or Gaussian policy
    :param transitions: The dataset's transitions
    :param normalizer: The observation normalisation the policy acts through (e.g. ``model.get_vec_normalize_env()``)
    :param max_samples: At most this many transitions (a fixed random subset)
    :param seed: Seed of the subset, the steps and the noise
    :return: The loss
    """
    rng = np.random.default_rng(seed)
    index = rng.permutation(len(transitions.actions))[:max_samples]
    observations = transitions.observations
    if normalizer is not None:
        observations = normalizer.normalize_obs(observations)  # type: ignore[assignment]
    inputs, outputs = windows(
        policy,
        np.asarray(observations, dtype=np.float32),
        policy_targets(policy, transitions.actions),
        transitions.episode_ids,
    )
    obs = th.as_tensor(inputs[index], device=policy.device)
    targets = th.as_tensor(outputs[index], device=policy.device)
    with th.no_grad():
        if isinstance(policy, DiffusionActorCriticPolicy):
            return float(denoising_loss(policy, obs, targets, th.Generator().manual_seed(seed)))
        return float(gaussian_loss(policy, obs, targets))


def split_episodes(episode_ids: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """
    :param episode_ids: Episode of each transition
    :param val_fraction: Fraction of the episodes to hold out (at least one episode if > 0 and there are two or more)
    :param seed: Seed of the split
    :return: Indices of the training and validation transitions
    """
    episodes = np.unique(episode_ids)
    n_val = 0 if val_fraction == 0 or len(episodes) < 2 else max(1, round(val_fraction * len(episodes)))
    held_out = np.random.default_rng(seed).permutation(episodes)[:n_val]
    is_val = np.isin(episode_ids, held_out)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


#: What a diffusion policy cloned from demonstrations predicts by default: the noise, the standard denoising loss of
#: behaviour cloning. Measured on the bimodal test (tests/test_pretrain.py): epsilon kept 44 % / 47 % of the samples
#: near the two modes and 6 % between them, sample-prediction 37 % / 41 % and 15 %. (Training from scratch defaults to
#: sample-prediction for exploration reasons that do not apply to a cloned policy: docs/algorithms/ncdpo.md,
#: "Exploration note".)
BC_PREDICTION_TYPE = "epsilon"


def make_policy(
    policy: str,
    observation_space: spaces.Space,
    action_space: spaces.Space,
    learning_rate: float,
    policy_kwargs: dict[str, Any],
) -> ActorCriticPolicy:
    """
    :param policy: ``"diffusion"`` or ``"gaussian"``
    :param observation_space: Observation space
    :param action_space: Action space
    :param learning_rate: The learning rate given to the policy's (unused here) optimizer
    :param policy_kwargs: Policy keyword arguments; a diffusion policy's ``prediction_type`` defaults to
        :data:`BC_PREDICTION_TYPE` here, and on image observations the features extractor to SB3's ``NatureCNN`` (as
        ``CnnPolicy`` / ``CnnDiffusionPolicy`` have it)
    :return: A fresh policy
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    if is_image_space(observation_space):
        policy_kwargs = {"features_extractor_class": NatureCNN, **policy_kwargs}
    if policy == "gaussian":
        return ActorCriticPolicy(observation_space, action_space, lambda _: learning_rate, **policy_kwargs)
    policy_kwargs = {"prediction_type": BC_PREDICTION_TYPE, **policy_kwargs}
    return DiffusionActorCriticPolicy(observation_space, action_space, lambda _: learning_rate, **policy_kwargs)


def window_indices(episode_ids: np.ndarray, n_obs_steps: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """
    The (observations, actions) window of every transition, as Diffusion Policy samples its training sequences: the
    ``n_obs_steps`` observations up to the transition's and the ``horizon`` actions from its own, padded at the
    episode's edges with the edge repeated (the first observation before the start, the last action after the end).

    :param episode_ids: The episode of each transition; an episode's transitions are contiguous and in order
    :param n_obs_steps: Observations per window (To)
    :param horizon: Actions per window (Tp)
    :return: ``(observation_index, action_index)``, shapes ``(n, n_obs_steps)`` and ``(n, horizon)``: indices into the
        transitions, oldest first
    :raises ValueError: if an episode's transitions are not contiguous
    """
    episode_ids = np.asarray(episode_ids)
    n = len(episode_ids)
    boundaries = np.flatnonzero(np.diff(episode_ids) != 0) + 1
    if len(np.unique(episode_ids)) != len(boundaries) + 1:
        raise ValueError("the transitions of each episode must be contiguous (as Minari's episodes are read)")
    starts = np.repeat(np.concatenate([[0], boundaries]), np.diff(np.concatenate([[0], boundaries, [n]])))
    ends = np.repeat(np.concatenate([boundaries, [n]]) - 1, np.diff(np.concatenate([[0], boundaries, [n]])))
    t = np.arange(n)[:, None]
    observation_index = np.maximum(t + np.arange(1 - n_obs_steps, 1), starts[:, None])
    action_index = np.minimum(t + np.arange(horizon), ends[:, None])
    return observation_index, action_index


def windows(
    policy: ActorCriticPolicy, observations: np.ndarray, targets: np.ndarray, episode_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """
    :param policy: The policy being cloned
    :param observations: One (normalised) observation per transition
    :param targets: One regression target per transition (:func:`policy_targets`)
    :param episode_ids: The episode of each transition
    :return: Per transition, what the policy reads and what it must denoise: its history of ``n_obs_steps``
        observations and its chunk of ``horizon`` actions, flattened (:func:`window_indices`); the arrays unchanged for a
        policy without them
    """
    n_obs_steps, horizon = getattr(policy, "n_obs_steps", 1), getattr(policy, "horizon", 1)
    if n_obs_steps == 1 and horizon == 1:
        return observations, targets
    observation_index, action_index = window_indices(episode_ids, n_obs_steps, horizon)
    if n_obs_steps > 1:
        observations = observations[observation_index]
    if horizon > 1:
        targets = targets[action_index].reshape((len(targets), -1))
    return observations, targets


def behaviour_cloning(
    transitions: Transitions,
    observation_space: spaces.Space,
    action_space: spaces.Space,
    policy: str = "diffusion",
    policy_kwargs: dict[str, Any] | None = None,
    config: BCConfig | None = None,
    progress_bar: bool = True,
) -> BCResult:
    """
    Train a fresh policy by behaviour cloning.

    :param transitions: The demonstrations
    :param observation_space: Observation space (a ``Box``)
    :param action_space: Action space (a ``Box`` with finite bounds)
    :param policy: ``"diffusion"`` (for NCDPO / DPPO) or ``"gaussian"`` (SB3's ``ActorCriticPolicy``, for PPO)
    :param policy_kwargs: Policy keyword arguments
    :param config: Training settings
    :param progress_bar: Show a progress bar (tqdm)
    :return: The policy with its EMA weights (the best validation's with ``config.patience``), its normaliser and the
        loss history
    """
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
    from tqdm.auto import tqdm

    config = config or BCConfig()
    if not isinstance(action_space, spaces.Box):
        raise ValueError(f"behaviour cloning needs a Box action space, got {action_space}")
    th.manual_seed(config.seed)
    model = make_policy(policy, observation_space, action_space, config.learning_rate, policy_kwargs or {})
    normalizer = None
    observations = transitions.observations
    train_index, val_index = split_episodes(transitions.episode_ids, config.val_fraction, config.seed)
    if config.normalize and not is_image_space(observation_space):  # images: the policy scales them (SB3's / 255)
        normalizer = observation_normalizer(observations[train_index], observation_space, action_space, config.clip_obs)
        observations = np.asarray(normalizer.normalize_obs(observations), dtype=np.float32)
    # Per transition: its history of observations and its chunk of actions, where the policy has them
    inputs, outputs = windows(model, observations, policy_targets(model, transitions.actions), transitions.episode_ids)
    obs = th.as_tensor(inputs, device=model.device)
    targets = th.as_tensor(outputs, device=model.device)

    def loss_of(net: ActorCriticPolicy, index: th.Tensor, generator: th.Generator | None = None) -> th.Tensor:
        if isinstance(net, DiffusionActorCriticPolicy):
            return denoising_loss(net, obs[index], targets[index], generator)
        return gaussian_loss(net, obs[index], targets[index])

    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = th.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    schedule = th.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.n_steps, eta_min=config.min_learning_rate)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay)) if config.ema_decay > 0 else None
    train_tensor = th.as_tensor(train_index, device=model.device)
    val_tensor = th.as_tensor(val_index[np.random.default_rng(config.seed).permutation(len(val_index))[:4096]])
    sampler = th.Generator().manual_seed(config.seed)
    history: list[dict[str, float]] = []
    running, n_running = 0.0, 0
    best: tuple[float, int, dict[str, th.Tensor]] | None = None  # validation loss, step, weights
    since_best = 0  # validations without a lower loss
    model.set_training_mode(True)
    bar = tqdm(range(1, config.n_steps + 1), desc=f"BC ({policy})", unit="step", disable=not progress_bar, mininterval=1.0)
    for step in bar:
        batch = train_tensor[th.randint(len(train_tensor), (config.batch_size,), generator=sampler)]
        loss = loss_of(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if ema is not None:
            ema.update_parameters(model)
        running, n_running = running + loss.item(), n_running + 1
        if step % config.eval_every == 0 or step == config.n_steps:
            evaluated = ema.module if ema is not None else model
            row = {"step": float(step), "train_loss": running / n_running, "lr": optimizer.param_groups[0]["lr"]}
            if len(val_tensor):
                with th.no_grad():
                    row["val_loss"] = float(loss_of(evaluated, val_tensor, th.Generator().manual_seed(config.seed + 1)))  # type: ignore[arg-type]
            history.append(row)
            bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k.endswith("loss")})
            running, n_running = 0.0, 0
            if config.patience and len(val_tensor):
                if best is None or row["val_loss"] < best[0]:
                    weights = {name: value.detach().clone() for name, value in evaluated.state_dict().items()}
                    best, since_best = (row["val_loss"], step, weights), 0
                else:
                    since_best += 1
                    if since_best >= config.patience:
                        break
    bar.close()
    best_step = int(history[-1]["step"]) if history else 0
    if best is not None:
        model.load_state_dict(best[2])
        best_step = best[1]
    elif ema is not None:
        model.load_state_dict(ema.module.state_dict())
    model.set_training_mode(False)
    return BCResult(model, normalizer, history, transitions.episode_returns, best_step)


def pretrain(
    dataset_id: str,
    out: str | Path,
    policy: str = "diffusion",
    policy_kwargs: dict[str, Any] | None = None,
    config: BCConfig | None = None,
    download: bool = False,
    progress_bar: bool = True,
    overwrite: bool = False,
) -> BCResult:
    """
    Behaviour cloning on a Minari dataset, written as a pre-trained folder (``policy.pth``, ``vecnormalize.pkl``,
    ``pretrain.json``).

    :param dataset_id: Minari dataset id (local, or remote with ``download``)
    :param out: Output folder
    :param policy: ``"diffusion"`` or ``"gaussian"``
    :param policy_kwargs: Policy keyword arguments
    :param config: Training settings
    :param download: Download the dataset if it is not local (needs network access)
    :param progress_bar: Show a progress bar
    :param overwrite: Replace ``out`` if it exists and is not empty (refused otherwise, before anything is trained)
    :return: The result of :func:`behaviour_cloning`
    """
    check_can_write_folder(Path(out), overwrite)
    config = config or BCConfig()
    dataset = load_demos(dataset_id, download=download)
    transitions = dataset_transitions(dataset)
    result = behaviour_cloning(
        transitions, dataset.observation_space, dataset.action_space, policy, policy_kwargs, config, progress_bar
    )
    env_spec = getattr(dataset, "env_spec", None)
    last = result.history[-1] if result.history else {}
    save_pretrained(
        out,
        result.policy,
        result.normalizer,
        {
            "dataset_id": dataset_id,
            "env_id": getattr(env_spec, "id", None),
            "policy": policy,
            "policy_kwargs": repr(policy_kwargs or {}),
            "n_episodes": len(transitions.episode_returns),
            "n_transitions": len(transitions.actions),
            "demo_return_mean": float(np.mean(transitions.episode_returns)),
            "demo_return_std": float(np.std(transitions.episode_returns)),
            "demo_success_rate": (
                None if transitions.episode_successes is None else float(np.mean(transitions.episode_successes))
            ),
            "train_loss": last.get("train_loss"),
            "val_loss": last.get("val_loss"),
            "best_step": result.best_step,
            "config": asdict(config),
            "history": result.history,
        },
        overwrite=overwrite,
    )
    return result


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse and validate ``pretrain``'s command line (every check before anything is built)."""
    defaults = BCConfig()
    parser = argparse.ArgumentParser(prog="sb3-ncdpo pretrain", description=__doc__)
    parser.add_argument("--dataset", required=True, help="Minari dataset id")
    parser.add_argument("--download", action="store_true", help="download the dataset if it is not local (network)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (policy.pth, vecnormalize.pkl, pretrain.json)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists (refused otherwise)")
    parser.add_argument("--policy", choices=POLICIES, default="diffusion", help="diffusion (NCDPO, DPPO) or gaussian (PPO)")
    parser.add_argument("--policy-kwargs", default="", help='a dict expression: "dict(n_denoising_steps=10)"')
    parser.add_argument("--n-steps", type=int, default=defaults.n_steps, help="gradient steps")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.learning_rate, help="initial learning rate (cosine decay)")
    parser.add_argument("--min-lr", type=float, default=defaults.min_learning_rate)
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    parser.add_argument("--ema-decay", type=float, default=defaults.ema_decay)
    parser.add_argument("--val-fraction", type=float, default=defaults.val_fraction, help="held-out episodes")
    parser.add_argument("--eval-every", type=int, default=defaults.eval_every)
    parser.add_argument(
        "--patience",
        type=int,
        default=defaults.patience,
        help="stop after this many validations without a lower validation loss, keeping the best weights (0: off)",
    )
    parser.add_argument("--no-normalize", action="store_true", help="train on raw observations")
    parser.add_argument("--clip-obs", type=float, default=defaults.clip_obs)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        args.config = BCConfig(
            n_steps=args.n_steps,
            batch_size=args.batch_size,
            learning_rate=args.lr,
            min_learning_rate=args.min_lr,
            weight_decay=args.weight_decay,
            ema_decay=args.ema_decay,
            val_fraction=args.val_fraction,
            eval_every=args.eval_every,
            patience=args.patience,
            normalize=not args.no_normalize,
            clip_obs=args.clip_obs,
            seed=args.seed,
        )
    except ValueError as error:
        parser.error(str(error))
    try:
        args.policy_kwargs = eval_policy_kwargs(args.policy_kwargs)
        if args.policy == "diffusion":
            check_policy_kwargs(args.policy_kwargs)
    except Exception as error:
        parser.error(f"--policy-kwargs: {error}")
    try:
        check_can_write_folder(args.out, args.overwrite, overwrite_name="--overwrite")
    except FileExistsError as error:
        parser.error(f"--out: {error}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """
    :param argv: Arguments after ``pretrain`` (``sys.argv[1:]`` by default)
    """
    args = parse_args(sys.argv[1:] if argv is None else argv)
    th.set_num_threads(args.threads)
    result = pretrain(
        args.dataset,
        args.out,
        policy=args.policy,
        policy_kwargs=args.policy_kwargs,
        config=args.config,
        download=args.download,
        progress_bar=not args.no_progress,
        overwrite=args.overwrite,
    )
    last = result.history[-1]
    val = f", validation loss {last['val_loss']:.4f}" if "val_loss" in last else ""
    print(
        f"pre-trained {args.policy} policy written to {args.out}: train loss {last['train_loss']:.4f}{val} "
        f"(demo return {result.demo_returns.mean():.1f} over {len(result.demo_returns)} episodes)"
    )
