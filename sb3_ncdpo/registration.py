"""
Gymnasium ids of the multi-agent tasks, so that rl-zoo3 (``sb3-ncdpo train``) and ``sb3-ncdpo compare`` can name them.

rl-zoo3 only builds envs from registered gym ids (``gym.spec(env_id)`` then SB3's ``make_vec_env``) and applies the
YAML entry's ``vec_env_wrapper`` afterwards. A multi-agent id therefore makes a placeholder gym env (one agent's
spaces, no dynamics) that carries the task's settings; the entry's ``vec_env_wrapper:
sb3_ncdpo.multiagent.parameter_sharing`` replaces the placeholders by the PettingZoo env as an SB3 vec env (SuperSuit,
one sub-env per agent). Registering costs nothing: PettingZoo is imported only when such an env is made.
"""

import gymnasium as gym

#: Namespace of the registered multi-agent ids.
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
    """Register every task of :data:`TASKS` and :data:`FOOTBALL_TASKS` (idempotent)."""
    for name, parallel_env in TASKS.items():
        register_parallel_env(name, parallel_env)
    for scenario, n_players in FOOTBALL_TASKS.items():
        register_parallel_env(scenario, "sb3_ncdpo.football:parallel_env", dict(scenario=scenario, n_players=n_players))


def is_multiagent(env_id: str) -> bool:
    """:return: Whether ``env_id`` is a multi-agent id registered by :func:`register_parallel_env`"""
    spec = gym.registry.get(env_id)
    return spec is not None and spec.entry_point == PLACEHOLDER
