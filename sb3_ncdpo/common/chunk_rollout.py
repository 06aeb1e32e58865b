"""
The rollout loop's bookkeeping of action chunks: one decision of the policy (a chunk of ``n_action_steps`` actions)
lasts several env steps, and the rollout buffer stores one row per decision.

Each env executes its own chunk: it decides when its previous chunk is done or its episode ended inside it (the rest of
that chunk is dropped), so after an episode end the envs of a ``VecEnv`` no longer decide at the same env steps. A row
of SB3's rollout buffer holds one decision of every env, and GAE runs down each env's column, so rows need not be
aligned in time across envs, only in order within an env: finished decisions wait per env until every env has one,
then they form a row. At the rollout's end the decisions that did not make a row (or are still executing) are dropped;
the first of them gives its env's last row the value to bootstrap from.

A decision's reward is the sum of its env steps' rewards, discounted within the chunk (``gamma ** i`` at its ``i``-th
step, the buffer then discounting by ``gamma ** n_action_steps`` per decision: the same return as step by step) or
plain (DPPO's sum, the buffer discounting by ``gamma`` per decision).
"""

from collections import deque
from dataclasses import dataclass

import numpy as np
import torch as th

#: How the rewards inside a chunk make a decision's reward (see the module docstring)
CHUNK_REWARDS = ("discounted", "sum")


def check_chunk_reward(chunk_reward: str) -> None:
    """
    :param chunk_reward: One of :data:`CHUNK_REWARDS`
    :raises ValueError: naming the argument and its allowed values
    """
    if chunk_reward not in CHUNK_REWARDS:
        raise ValueError(f"chunk_reward must be one of {CHUNK_REWARDS}, got {chunk_reward!r}")


def decision_gamma(gamma: float, n_action_steps: int, chunk_reward: str) -> float:
    """
    :param gamma: The discount factor per env step
    :param n_action_steps: Env steps per decision
    :param chunk_reward: One of :data:`CHUNK_REWARDS`
    :return: The discount factor per decision, the rollout buffer's (``gamma`` itself with one action per decision)
    """
    return gamma**n_action_steps if chunk_reward == "discounted" and n_action_steps > 1 else gamma


Observations = np.ndarray | dict[str, np.ndarray]


def take_observations(obs: Observations, index: np.ndarray | slice) -> Observations:
    """:return: The observations of the envs ``index`` (each key's, for a ``Dict`` observation)"""
    if isinstance(obs, dict):
        return {key: value[index] for key, value in obs.items()}
    return obs[index]


def stack_observations(observations: list[Observations]) -> Observations:
    """:return: Batches of observations concatenated along their batch axis (each key's, for a ``Dict``)"""
    first = observations[0]
    if isinstance(first, dict):
        return {key: np.concatenate([obs[key] for obs in observations]) for key in first}  # type: ignore[index]
    return np.concatenate(observations)  # type: ignore[arg-type]


@dataclass
class Decisions:
    """
    What one policy call decided for some envs (row ``i`` for ``env_indices[i]``), as the rollout buffer stores it.

    :param env_indices: The envs that decided
    :param observations: Their observations (each with a leading batch axis)
    :param actions: Their chunks, in the policy's space, ``(n, *chunk_shape)``
    :param executed: The chunks' actions per env step, ``(n, n_action_steps, *action_shape)``
    :param episode_starts: Whether each observation starts an episode
    :param values: The critic's values, ``(n, 1)``
    :param log_probs: The log-probabilities, ``(n,)``
    :param extras: What else the buffer's ``add`` takes, by keyword (tensors with a leading batch axis)
    """

    env_indices: np.ndarray
    observations: Observations
    actions: np.ndarray
    executed: np.ndarray
    episode_starts: np.ndarray
    values: th.Tensor
    log_probs: th.Tensor
    extras: dict[str, th.Tensor]

    def select(self, i: int) -> "Decisions":
        """:return: The decision of row ``i`` alone"""
        index = slice(i, i + 1)
        return Decisions(
            self.env_indices[index],
            take_observations(self.observations, index),
            self.actions[index],
            self.executed[index],
            self.episode_starts[index],
            self.values[index],
            self.log_probs[index],
            {key: value[index] for key, value in self.extras.items()},
        )


@dataclass
class Row:
    """One row of the rollout buffer: a decision of every env, in env order, with the rewards they collected."""

    decisions: Decisions
    rewards: np.ndarray


class ChunkRollout:
    """
    Per env: the chunk being executed, the reward it has collected, and the finished decisions that wait for a row.

    :param n_envs: Number of envs
    :param n_action_steps: Env steps per decision (actions executed per chunk)
    :param gamma: The discount factor per env step
    :param chunk_reward: One of :data:`CHUNK_REWARDS`
    """

    def __init__(self, n_envs: int, n_action_steps: int, gamma: float, chunk_reward: str) -> None:
        self.n_envs, self.n_action_steps = n_envs, n_action_steps
        self.gamma, self.discounted = gamma, chunk_reward == "discounted"
        self._executing: list[tuple[Decisions, int] | None] = [None] * n_envs
        self._finished: list[deque[tuple[Decisions, np.float32]]] = [deque() for _ in range(n_envs)]
        self._rewards = np.zeros(n_envs, dtype=np.float32)
        self._discounts = np.ones(n_envs)
        self._n_executed = np.zeros(n_envs, dtype=np.int64)
        # One action per decision: every env decides at every step and each step's decisions make a row, so the
        # bookkeeping is skipped (it would cost ~20 µs of a ~1 ms env step on Hopper-v5).
        self._single_step = n_action_steps == 1
        self._every_env = np.arange(n_envs)
        self._last: Decisions | None = None

    def deciding(self) -> np.ndarray:
        """:return: The indices of the envs that need a decision (their chunk is done, or their episode ended)"""
        if self._single_step:
            return self._every_env
        return np.flatnonzero([executing is None for executing in self._executing])

    def decide(self, decisions: Decisions) -> None:
        """:param decisions: The decisions of the envs :meth:`deciding` named"""
        if self._single_step:
            self._last = decisions
            return
        for i, env in enumerate(decisions.env_indices):
            self._executing[env] = (decisions, i)
        self._n_executed[decisions.env_indices] = 0
        self._discounts[decisions.env_indices] = 1.0

    def actions(self) -> np.ndarray:
        """:return: Every env's next action, ``(n_envs, *action_shape)`` (each env has a decision)"""
        if self._last is not None:
            return self._last.executed[:, 0]
        executing = self._executing
        first = executing[0]
        if (
            first is not None
            and first[0].env_indices.size == self.n_envs
            and all(e is not None and e[0] is first[0] for e in executing)
        ):
            # One policy call decided for every env, still in step: its actions at the common step, in one slice.
            steps = self._n_executed
            if (steps == steps[0]).all():
                return first[0].executed[:, steps[0]]
        return np.stack([e[0].executed[e[1], self._n_executed[env]] for env, e in enumerate(executing)])  # type: ignore[index]

    def record(self, rewards: np.ndarray, dones: np.ndarray) -> Row | None:
        """
        Account for one env step of every env.

        :param rewards: The step's rewards (with the bootstrapped value of a truncated episode added)
        :param dones: Whether each env's episode ended at this step
        :return: The buffer row that this step completes, if any
        """
        if self._last is not None:
            return Row(self._last, rewards)
        first = self._n_executed == 0
        self._rewards[first] = rewards[first]
        later = ~first
        self._rewards[later] += self._discounts[later] * rewards[later]
        if self.discounted:
            self._discounts *= self.gamma
        self._n_executed += 1
        finished = np.logical_or(dones, self._n_executed == self.n_action_steps)
        if finished.all() and not any(self._finished):
            decisions = [executing[0] for executing in self._executing]  # type: ignore[index]
            if decisions[0].env_indices.size == self.n_envs and all(d is decisions[0] for d in decisions):
                # Every env finished the decision of one policy call at this step: that call is the row.
                self._executing = [None] * self.n_envs
                return Row(decisions[0], self._rewards.copy())
        for env in np.flatnonzero(finished):
            decision, i = self._executing[env]  # type: ignore[misc]
            self._finished[env].append((decision.select(i), self._rewards[env].copy()))
            self._executing[env] = None
        return self.pop_row()

    def pop_row(self) -> Row | None:
        """:return: A row of finished decisions, one per env, if every env has one waiting"""
        if not all(self._finished):
            return None
        waiting = [self._finished[env].popleft() for env in range(self.n_envs)]
        parts = [decision for decision, _ in waiting]
        decisions = Decisions(
            np.arange(self.n_envs),
            stack_observations([part.observations for part in parts]),
            np.concatenate([part.actions for part in parts]),
            np.concatenate([part.executed for part in parts]),
            np.concatenate([part.episode_starts for part in parts]),
            th.cat([part.values for part in parts]),
            th.cat([part.log_probs for part in parts]),
            {key: th.cat([part.extras[key] for part in parts]) for key in parts[0].extras},
        )
        return Row(decisions, np.array([reward for _, reward in waiting], dtype=np.float32))

    def next_decisions(self) -> list[tuple[th.Tensor, bool] | None]:
        """
        :return: Per env, the value and episode start of its first decision that is not in a row (waiting or still
            executing), from which its last row bootstraps; ``None`` where it has none (the next decision is yet to be
            made, at the current observation)
        """
        result: list[tuple[th.Tensor, bool] | None] = []
        for env in range(self.n_envs):
            executing = self._executing[env]
            if self._finished[env]:
                decision = self._finished[env][0][0]
                result.append((decision.values[0], bool(decision.episode_starts[0])))
            elif executing is not None:
                result.append((executing[0].values[executing[1]], bool(executing[0].episode_starts[executing[1]])))
            else:
                result.append(None)
        return result
