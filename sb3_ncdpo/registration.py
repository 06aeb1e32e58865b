"""
Gymnasium ids of the multi-agent tasks and of Meta-World's manipulation tasks, so that rl-zoo3 (``sb3-ncdpo train``)
and ``sb3-ncdpo compare`` can name them. Registering costs nothing: each env's package is imported only when one of its
envs is made.

Meta-World: ``sb3_ncdpo/metaworld-<task>-v3`` (Meta-World's dense reward) and ``sb3_ncdpo/metaworld-<task>-sparse-v3``
(1 on a success step, else 0) for each of its tasks, made by :func:`sb3_ncdpo.metaworld_envs.make_task`.

rl-zoo3 only builds envs from registered gym ids (``gym.spec(env_id)`` then SB3's ``make_vec_env``) and applies the
YAML entry's ``vec_env_wrapper`` afterwards. A multi-agent id therefore makes a placeholder gym env (one agent's
spaces, no dynamics) that carries the task's settings; the entry's ``vec_env_wrapper:
sb3_ncdpo.multiagent.parameter_sharing`` replaces the placeholders by the PettingZoo env as an SB3 vec env (SuperSuit,
one sub-env per agent).
"""

import gymnasium as gym

#: Namespace of the registered ids.
NAMESPACE = "sb3_ncdpo"
#: Suffix of the id whose observations are ``{"obs": agent's observation, "state": global state}``.
STATE_SUFFIX = "-state"
#: Entry point of the registered ids (a placeholder env replaced by ``sb3_ncdpo.multiagent.parameter_sharing``).
PLACEHOLDER = "sb3_ncdpo.multiagent:ParallelEnvPlaceholder"
#: PettingZoo parallel envs registered here: task name -> ``"module:function"`` that makes the parallel env.
TASKS = {
    "simple_spread_v3": "mpe2.simple_spread_v3:parallel_env",
    "simple_reference_v3": "mpe2.simple_reference_v3:parallel_env",
}
#: Google Research Football academy scenarios registered here (:mod:`sb3_ncdpo.football`, needs ``gfootball``):
#: scenario -> controlled left-team players (the agents).
FOOTBALL_TASKS = {
    "academy_empty_goal_close": 1,
    "academy_3_vs_1_with_keeper": 3,
    "academy_counterattack_easy": 4,
}

#: Meta-World 3.1.1's tasks (``metaworld.ALL_V3_ENVIRONMENTS``, listed here so that registering imports nothing; a test
#: keeps the two equal).
METAWORLD_TASKS = (
    "assembly-v3",
    "basketball-v3",
    "bin-picking-v3",
    "box-close-v3",
    "button-press-topdown-v3",
    "button-press-topdown-wall-v3",
    "button-press-v3",
    "button-press-wall-v3",
    "coffee-button-v3",
    "coffee-pull-v3",
    "coffee-push-v3",
    "dial-turn-v3",
    "disassemble-v3",
    "door-close-v3",
    "door-lock-v3",
    "door-open-v3",
    "door-unlock-v3",
    "hand-insert-v3",
    "drawer-close-v3",
    "drawer-open-v3",
    "faucet-open-v3",
    "faucet-close-v3",
    "hammer-v3",
    "handle-press-side-v3",
    "handle-press-v3",
    "handle-pull-side-v3",
    "handle-pull-v3",
    "lever-pull-v3",
    "pick-place-wall-v3",
    "pick-out-of-hole-v3",
    "pick-place-v3",
    "plate-slide-v3",
    "plate-slide-side-v3",
    "plate-slide-back-v3",
    "plate-slide-back-side-v3",
    "peg-insert-side-v3",
    "peg-unplug-side-v3",
    "soccer-v3",
    "stick-push-v3",
    "stick-pull-v3",
    "push-v3",
    "push-wall-v3",
    "push-back-v3",
    "reach-v3",
    "reach-wall-v3",
    "shelf-place-v3",
    "sweep-into-v3",
    "sweep-v3",
    "window-open-v3",
    "window-close-v3",
)
#: Entry point of the Meta-World ids.
METAWORLD_ENTRY_POINT = "sb3_ncdpo.metaworld_envs:make_task"
#: Episode cap of the Meta-World ids: Meta-World's ``max_path_length``, the most its envs allow.
METAWORLD_MAX_EPISODE_STEPS = 500


def metaworld_id(task: str, sparse: bool = False) -> str:
    """
    :param task: Meta-World's task name (``"push-v3"``)
    :param sparse: The id of the success-only reward
    :return: The gym id of the task (``sb3_ncdpo/metaworld-push-v3``, ``sb3_ncdpo/metaworld-push-sparse-v3``)
    """
    return f"{NAMESPACE}/metaworld-{task.removesuffix('-v3')}{'-sparse' if sparse else ''}-v3"


def register_parallel_env(name: str, parallel_env: str, env_kwargs: dict | None = None) -> tuple[str, str]:
    """
    Register a PettingZoo parallel env under two gym ids: ``sb3_ncdpo/<name>`` (each agent observes its own
    observation) and ``sb3_ncdpo/<name>-state`` (observations ``{"obs", "state"}`` for a centralised critic).

    :param name: Task name (the id's name part)
    :param parallel_env: ``"module:function"`` making the parallel env (keyword arguments: the env's, ``render_mode``)
    :param env_kwargs: Keyword arguments of the env fixed by the ids (``gym.make`` ones are added to them)
    :return: The two ids
    """
    ids = (f"{NAMESPACE}/{name}", f"{NAMESPACE}/{name}{STATE_SUFFIX}")
    for env_id, global_state in zip(ids, (False, True), strict=True):
        if env_id not in gym.registry:
            gym.register(
                env_id,
                entry_point=PLACEHOLDER,
                kwargs={"parallel_env": parallel_env, "global_state": global_state, **(env_kwargs or {})},
                disable_env_checker=True,
            )
    return ids


def register_tasks() -> None:
    """Register every task of :data:`TASKS`, :data:`FOOTBALL_TASKS` and :data:`METAWORLD_TASKS` (idempotent)."""
    for name, parallel_env in TASKS.items():
        register_parallel_env(name, parallel_env)
    for scenario, n_players in FOOTBALL_TASKS.items():
        register_parallel_env(scenario, "sb3_ncdpo.football:parallel_env", dict(scenario=scenario, n_players=n_players))
    for task in METAWORLD_TASKS:
        for sparse in (False, True):
            if metaworld_id(task, sparse) not in gym.registry:
                gym.register(
                    metaworld_id(task, sparse),
                    entry_point=METAWORLD_ENTRY_POINT,
                    kwargs={"task": task, "sparse": sparse},
                    max_episode_steps=METAWORLD_MAX_EPISODE_STEPS,
                )


def is_multiagent(env_id: str) -> bool:
    """:return: Whether ``env_id`` is a multi-agent id registered by :func:`register_parallel_env`"""
    spec = gym.registry.get(env_id)
    return spec is not None and spec.entry_point == PLACEHOLDER
