"""
Multi-agent training with parameter sharing, for NCDPO and PPO alike.

A PettingZoo parallel env becomes an SB3 vec env with SuperSuit (``pettingzoo_env_to_vec_env_v1`` then
``concat_vec_envs_v1(..., base_class="stable_baselines3")``): every agent of every copy of the env is one sub-env, so
one policy acts for all agents (parameter sharing) and SB3's algorithms run unchanged. Budgets and ``n_steps`` count
agent-steps: ``num_envs = n_envs * n_agents``. Where the env has a global state (PettingZoo's ``state()``), each
agent's observation can become ``{"obs": its own observation, "state": the global state}`` (``global_state=True``)
and :class:`CentralCriticPolicy` / :class:`CentralCriticDiffusionPolicy` give the actor ``obs`` and the critic
``state`` (MAPPO's centralised critic), for PPO and NCDPO with the same networks.

Three ways in:

* Python: :func:`make_parallel_vec_env` (``NCDPO("MlpPolicy", make_parallel_vec_env(...))``);
* rl-zoo3 (``sb3-ncdpo train``): the registered ids ``sb3_ncdpo/<task>`` and ``sb3_ncdpo/<task>-state``
  (:mod:`sb3_ncdpo.registration`) with ``vec_env_wrapper: sb3_ncdpo.multiagent.parameter_sharing`` in the YAML entry;
* ``sb3-ncdpo compare``: the same ids and entries (compare applies ``vec_env_wrapper`` as rl-zoo3 does).
"""

import contextlib
import importlib
from collections.abc import Callable, Iterator
from typing import Any

import gymnasium as gym
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import MultiInputActorCriticPolicy
from stable_baselines3.common.preprocessing import get_flattened_obs_dim
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, MlpExtractor
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, VecMonitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn
from torch import nn

from sb3_ncdpo.common.policies import MultiInputDiffusionPolicy

try:
    import supersuit
    from pettingzoo import ParallelEnv
    from pettingzoo.utils import BaseParallelWrapper
except ImportError as error:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"sb3_ncdpo.multiagent needs the 'multiagent' extra: pip install 'sb3-ncdpo[multiagent]' ({error})"
    ) from error

ParallelEnvMaker = str | Callable[..., ParallelEnv]

#: Keys of the observations made with ``global_state=True``.
OBS_KEY, STATE_KEY = "obs", "state"


def _resolve(parallel_env: ParallelEnvMaker) -> Callable[..., ParallelEnv]:
    if callable(parallel_env):
        return parallel_env
    module, _, function = parallel_env.partition(":")
    if not module or not function:
        raise ValueError(f"parallel_env must be a callable or a 'module:function' string, got {parallel_env!r}")
    return getattr(importlib.import_module(module), function)


class TimeLimitInfo(BaseParallelWrapper):
    """
    Marks truncated (not terminated) agents with ``info["TimeLimit.truncated"] = True``, as SB3's ``DummyVecEnv`` does
    for gym envs: SuperSuit's SB3 adapter merges truncations into ``dones``, and SB3's on-policy algorithms bootstrap
    the value of a truncated episode only where this flag is set (MPE episodes always end by truncation).
    """

    def step(self, actions: dict) -> tuple[dict, dict, dict, dict, dict]:
        observations, rewards, terminations, truncations, infos = self.env.step(actions)
        for agent, truncated in truncations.items():
            if truncated and not terminations.get(agent, False):
                infos.setdefault(agent, {})["TimeLimit.truncated"] = True
        return observations, rewards, terminations, truncations, infos


class GlobalStateObservation(BaseParallelWrapper):
    """
    Each agent observes ``{"obs": its own observation, "state": env.state()}``: the global state for a centralised
    critic (:class:`CentralCriticPolicy`, :class:`CentralCriticDiffusionPolicy`).

    :param env: A parallel env with a global state (``state()`` and ``state_space``)
    """

    def __init__(self, env: ParallelEnv) -> None:
        if not isinstance(getattr(env.unwrapped, "state_space", None), spaces.Space):
            raise ValueError(
                f"global_state=True needs a PettingZoo env with a global state (state() and state_space), "
                f"{env.metadata.get('name', env)} has none"
            )
        super().__init__(env)
        self._spaces = {
            agent: spaces.Dict({OBS_KEY: env.observation_space(agent), STATE_KEY: env.unwrapped.state_space})
            for agent in env.possible_agents
        }

    def observation_space(self, agent: Any) -> spaces.Space:
        return self._spaces[agent]

    def _with_state(self, observations: dict) -> dict:
        state = self.env.state()
        return {agent: {OBS_KEY: obs, STATE_KEY: state} for agent, obs in observations.items()}

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        observations, infos = self.env.reset(seed=seed, options=options)
        return self._with_state(observations), infos

    def step(self, actions: dict) -> tuple[dict, dict, dict, dict, dict]:
        observations, rewards, terminations, truncations, infos = self.env.step(actions)
        return self._with_state(observations), rewards, terminations, truncations, infos


def make_parallel_env(parallel_env: ParallelEnvMaker, global_state: bool = False, **env_kwargs: Any) -> ParallelEnv:
    """
    :param parallel_env: A function making a PettingZoo parallel env (e.g. ``mpe2.simple_spread_v3.parallel_env``) or
        its ``"module:function"`` name
    :param global_state: Observations ``{"obs", "state"}`` (:class:`GlobalStateObservation`)
    :param env_kwargs: Keyword arguments of the env
    :return: The parallel env with :class:`TimeLimitInfo` (and :class:`GlobalStateObservation`)
    """
    env = TimeLimitInfo(_resolve(parallel_env)(**env_kwargs))
    return GlobalStateObservation(env) if global_state else env


class _SeededVecEnv(VecEnvWrapper):
    """
    SuperSuit's SB3 adapter with SB3's seeding contract: ``seed(s)`` then ``reset()`` resets copy ``i`` of the env with
    seed ``s + i``. The adapter's own ``seed()`` fails (its gymnasium ``ConcatVecEnv`` has none), which breaks
    ``model = PPO(..., seed=0)``. Its ``dones`` become booleans, as SB3's vec envs give them.
    """

    def __init__(self, venv: VecEnv) -> None:
        super().__init__(venv)
        self._next_seed: int | None = None

    def seed(self, seed: int | None = None) -> list[int | None]:  # type: ignore[override]
        self._next_seed = seed
        return [None if seed is None else seed + i for i in range(self.num_envs)]

    def reset(self) -> VecEnvObs:
        seed, self._next_seed = self._next_seed, None
        observations, self.venv.reset_infos = self.venv.venv.reset(seed=seed)  # type: ignore[attr-defined]
        self.reset_infos = self.venv.reset_infos
        return observations

    def step_wait(self) -> VecEnvStepReturn:
        observations, rewards, dones, infos = self.venv.step_wait()
        # SuperSuit's dones are uint8: SB3 indexes with them (VecNormalize's ``returns[dones] = 0``), which needs bools.
        return observations, rewards, dones.astype(bool), infos

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        if attr_name == "render_mode":
            # SuperSuit's adapter asks its gymnasium vec env, which has no get_attr; every sub-env shares the env's mode.
            return [self.venv.render_mode for _ in self._get_indices(indices)]
        return self.venv.get_attr(attr_name, indices)


class EpisodeReport(VecEnvWrapper):
    """
    Prints each finished game of a multi-agent vec env as rl-zoo3's ``enjoy`` prints an episode ("Episode Reward",
    "Episode Length"), the return being the mean over the game's agents (each agent's in brackets): ``enjoy`` prints
    episodes only with ``--n-envs 1``, which a multi-agent id cannot use (one sub-env per agent).

    :param venv: The multi-agent vec env (with ``VecMonitor``'s episode infos), the agents of a copy side by side
    :param n_agents: Agents per copy of the env
    """

    def __init__(self, venv: VecEnv, n_agents: int) -> None:
        super().__init__(venv)
        self.n_agents = n_agents

    def reset(self) -> VecEnvObs:
        return self.venv.reset()

    def step_wait(self) -> VecEnvStepReturn:
        observations, rewards, dones, infos = self.venv.step_wait()
        for first in range(0, self.num_envs, self.n_agents):
            episodes = [info.get("episode") for info in infos[first : first + self.n_agents]]
            if all(episode is not None for episode in episodes):
                returns = [float(episode["r"]) for episode in episodes]  # type: ignore[index]
                agents = ", ".join(f"{value:.2f}" for value in returns)
                print(f"Episode Reward: {sum(returns) / len(returns):.2f} (agents: {agents})")
                print("Episode Length", episodes[0]["l"])  # type: ignore[index]
        return observations, rewards, dones, infos


#: Whether :func:`parameter_sharing` adds :class:`EpisodeReport` (inside :func:`episode_reports`)
_report_episodes = False


@contextlib.contextmanager
def episode_reports() -> Iterator[None]:
    """Context in which the vec envs that :func:`parameter_sharing` makes print each finished game (``sb3-ncdpo enjoy``)."""
    global _report_episodes
    _report_episodes = True
    try:
        yield
    finally:
        _report_episodes = False


def make_parallel_vec_env(
    parallel_env: ParallelEnvMaker,
    n_envs: int = 1,
    seed: int | None = None,
    global_state: bool = False,
    env_kwargs: dict[str, Any] | None = None,
) -> VecEnv:
    """
    ``n_envs`` copies of a PettingZoo parallel env as one SB3 vec env with a sub-env per agent (parameter sharing),
    episode statistics per agent (``VecMonitor``).

    :param parallel_env: A function making the parallel env, or its ``"module:function"`` name
    :param n_envs: Copies of the env (``num_envs = n_envs * n_agents``)
    :param seed: Seed of the first reset (copy ``i`` gets ``seed + i``); models re-seed with their own ``seed``
    :param global_state: Observations ``{"obs", "state"}`` for a centralised critic
    :param env_kwargs: Keyword arguments of the env (e.g. ``dict(N=3, max_cycles=25)`` for MPE's simple_spread)
    :return: The vec env
    """
    if not isinstance(n_envs, int) or n_envs < 1:
        raise ValueError(f"n_envs must be an int >= 1, got {n_envs!r}")
    env = make_parallel_env(parallel_env, global_state, **(env_kwargs or {}))
    vec_env = supersuit.concat_vec_envs_v1(
        supersuit.pettingzoo_env_to_vec_env_v1(env), n_envs, num_cpus=0, base_class="stable_baselines3"
    )
    monitored = VecMonitor(_SeededVecEnv(vec_env))
    monitored.seed(seed)
    return monitored


class ParallelEnvPlaceholder(gym.Env):
    """
    What ``gym.make`` gives for a multi-agent id of :mod:`sb3_ncdpo.registration`: one agent's spaces and the task's
    settings, no dynamics. :func:`parameter_sharing` (rl-zoo3's and compare's ``vec_env_wrapper``) replaces a vec env
    of placeholders by the real multi-agent vec env.

    :param parallel_env: ``"module:function"`` making the parallel env
    :param global_state: Observations ``{"obs", "state"}``
    :param render_mode: Render mode of the env
    :param env_kwargs: Keyword arguments of the env
    """

    metadata: dict[str, Any] = {"render_modes": ["human", "rgb_array"]}  # noqa: RUF012 (gymnasium's convention)

    def __init__(self, parallel_env: str, global_state: bool = False, render_mode: str | None = None, **env_kwargs: Any):
        if render_mode is not None:
            env_kwargs["render_mode"] = render_mode
        self.settings = dict(parallel_env=parallel_env, global_state=global_state, env_kwargs=env_kwargs)
        env = make_parallel_env(parallel_env, global_state, **env_kwargs)
        agent = env.possible_agents[0]
        self.observation_space, self.action_space = env.observation_space(agent), env.action_space(agent)
        self.render_mode = render_mode
        env.close()

    def _error(self) -> RuntimeError:
        return RuntimeError(
            f"{self.spec.id if self.spec else 'this env'} is a PettingZoo env with one sub-env per agent: make it with "
            "sb3_ncdpo.multiagent.make_parallel_vec_env, or add 'vec_env_wrapper: sb3_ncdpo.multiagent.parameter_sharing' "
            "to its rl-zoo3 hyperparameters"
        )

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        raise self._error()

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        raise self._error()


def parameter_sharing(venv: VecEnv) -> VecEnv:
    """
    rl-zoo3 ``vec_env_wrapper`` for the multi-agent ids: replaces ``venv`` (``n_envs`` placeholders made by rl-zoo3 or
    ``make_vec_env``) by ``n_envs`` copies of the PettingZoo env, one sub-env per agent, seeded like ``venv``.

    :param venv: A vec env of :class:`ParallelEnvPlaceholder`
    :return: The multi-agent vec env (:func:`make_parallel_vec_env`)
    """
    try:
        settings = venv.get_attr("settings", [0])[0]
    except AttributeError:
        settings = None
    if not isinstance(settings, dict) or "parallel_env" not in settings:
        raise ValueError(
            f"parameter_sharing wraps the vec env of a multi-agent id of sb3_ncdpo.registration (sb3_ncdpo/<task>), got {venv}"
        )
    n_envs = venv.num_envs
    seed = getattr(venv, "_seeds", [None])[0]  # what make_vec_env(seed=...) gave the placeholders
    venv.close()
    vec_env = make_parallel_vec_env(
        settings["parallel_env"], n_envs, seed, global_state=settings["global_state"], env_kwargs=settings["env_kwargs"]
    )
    return EpisodeReport(vec_env, vec_env.num_envs // n_envs) if _report_episodes else vec_env


class SelectKeyExtractor(BaseFeaturesExtractor):
    """
    Flattens one key of a ``Dict`` observation.

    :param observation_space: A ``Dict`` observation space
    :param key: The key to read
    """

    def __init__(self, observation_space: spaces.Dict, key: str = OBS_KEY) -> None:
        if not isinstance(observation_space, spaces.Dict) or key not in observation_space.spaces:
            raise ValueError(f"key must be one of the observation's keys, got {key!r} for {observation_space}")
        super().__init__(observation_space, get_flattened_obs_dim(observation_space[key]))
        self.key = key
        self.flatten = nn.Flatten()

    def forward(self, observations: dict[str, th.Tensor]) -> th.Tensor:  # type: ignore[override]
        return self.flatten(observations[self.key])


class CentralCriticMixin:
    """
    A centralised critic for an SB3 actor-critic policy over ``Dict`` observations: the actor's features extractor
    reads ``observation[actor_key]``, the critic's ``observation[critic_key]`` (never shared), each with its own
    ``net_arch`` branch. Mixed in before the policy class.

    :param actor_key: Observation key of the actor (default ``"obs"``, the agent's own observation)
    :param critic_key: Observation key of the critic (default ``"state"``, the global state)
    """

    # Provided by the policy class this is mixed into.
    vf_features_extractor: BaseFeaturesExtractor
    observation_space: spaces.Space
    mlp_extractor: MlpExtractor
    net_arch: Any
    activation_fn: type[nn.Module]
    device: th.device

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Callable[[float], float],
        *args: Any,
        actor_key: str = OBS_KEY,
        critic_key: str = STATE_KEY,
        **kwargs: Any,
    ) -> None:
        for name, key in (("actor_key", actor_key), ("critic_key", critic_key)):
            if not isinstance(observation_space, spaces.Dict) or key not in observation_space.spaces:
                raise ValueError(
                    f"{name} must be a key of the Dict observation space (made with global_state=True), got {key!r} "
                    f"for {observation_space}"
                )
        if kwargs.get("share_features_extractor", False):
            raise ValueError("share_features_extractor must be False with a centralised critic (its actor and critic differ)")
        extractor = kwargs.get("features_extractor_class", SelectKeyExtractor)
        if extractor is not SelectKeyExtractor:
            raise ValueError(f"features_extractor_class must be SelectKeyExtractor with a centralised critic, got {extractor}")
        kwargs.update(share_features_extractor=False, features_extractor_class=extractor, features_extractor_kwargs={})
        self.actor_key, self.critic_key = actor_key, critic_key
        super().__init__(observation_space, action_space, lr_schedule, *args, **kwargs)  # type: ignore[call-arg]

    def make_features_extractor(self) -> BaseFeaturesExtractor:
        # ActorCriticPolicy makes the actor's extractor first, then (share_features_extractor=False) the critic's.
        key = self.actor_key if getattr(self, "features_extractor", None) is None else self.critic_key
        return SelectKeyExtractor(self.observation_space, key)  # type: ignore[arg-type]

    def _build_mlp_extractor(self) -> None:
        super()._build_mlp_extractor()  # type: ignore[misc]
        # SB3's MlpExtractor gives both branches the actor's input size; the critic's input is the state.
        critic = MlpExtractor(self.vf_features_extractor.features_dim, self.net_arch, self.activation_fn, self.device)
        self.mlp_extractor.value_net = critic.value_net
        self.mlp_extractor.latent_dim_vf = critic.latent_dim_vf

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()  # type: ignore[misc]
        data.update(actor_key=self.actor_key, critic_key=self.critic_key)
        return data


class CentralCriticPolicy(CentralCriticMixin, MultiInputActorCriticPolicy):
    """
    SB3's ``MultiInputActorCriticPolicy`` (for PPO) with a centralised critic (:class:`CentralCriticMixin`): the actor
    sees ``obs``, the critic ``state``. Same parameters plus ``actor_key`` and ``critic_key``.
    """


class CentralCriticDiffusionPolicy(CentralCriticMixin, MultiInputDiffusionPolicy):
    """
    :class:`~sb3_ncdpo.common.policies.MultiInputDiffusionPolicy` (for NCDPO) with a centralised critic
    (:class:`CentralCriticMixin`): the denoiser is conditioned on ``obs``, the critic sees ``state``. Same parameters
    plus ``actor_key`` and ``critic_key``.
    """
