"""
Where NCDPO's time goes, per call, against PPO's same calls: the rollout policy call (actor + critic + sample +
log-prob, no gradient) at the env's batch size, and one minibatch update (evaluate_actions, loss, backward, gradient
clipping, optimizer step) at the env's minibatch size, with the share of the update spent in matrix multiplications
(torch.profiler: ``aten::mm`` + ``aten::addmm`` self time), which no amount of per-operation overhead removal reduces.

Example::

    python benchmarks/chain_cost.py --env Hopper-v5 --ks 1 5 10 20

Prints a markdown table (medians of ``--repeats`` timings of ``--calls`` calls each, NCDPO and PPO interleaved).
"""

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from torch import nn

from sb3_ncdpo import NCDPO
from sb3_ncdpo.zoo import load_hyperparams


def build(algo: str, env_id: str, k: int) -> Any:
    hyperparams = load_hyperparams("ppo", env_id)
    for key in ("n_timesteps", "policy", "normalize"):
        hyperparams.pop(key, None)
    env = make_vec_env(env_id, n_envs=hyperparams.pop("n_envs", 1))
    if algo == "ncdpo":
        hyperparams["policy_kwargs"] = {**hyperparams.get("policy_kwargs", {}), "n_denoising_steps": k}
        return NCDPO("MlpPolicy", env, device="cpu", **hyperparams)
    return PPO("MlpPolicy", env, device="cpu", **hyperparams)


def calls(model: Any) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """:return: (one rollout policy call, one minibatch update) on random data of the model's sizes"""
    policy = model.policy
    obs_dim, act_dim = model.observation_space.shape[0], model.action_space.shape[0]
    rollout_obs = th.randn(model.n_envs, obs_dim)
    obs, actions = th.randn(model.batch_size, obs_dim), th.rand(model.batch_size, act_dim) * 2 - 1
    is_ncdpo = isinstance(model, NCDPO)
    noises = policy.sample_noise(model.batch_size) if is_ncdpo else None
    advantages, old_log_prob = th.randn(model.batch_size), th.zeros(model.batch_size)

    def rollout() -> Any:
        with th.no_grad():
            return policy.forward_with_noise(rollout_obs) if is_ncdpo else policy(rollout_obs)

    def update() -> None:
        extra = (noises,) if is_ncdpo else ()
        values, log_prob, entropy = policy.evaluate_actions(obs, actions, *extra)
        ratio = th.exp(log_prob - old_log_prob)
        loss = -th.min(advantages * ratio, advantages * th.clamp(ratio, 0.8, 1.2)).mean()
        loss = loss + 0.5 * nn.functional.mse_loss(advantages, values.flatten()) - 0.01 * entropy.mean()
        policy.optimizer.zero_grad()
        loss.backward()
        th.nn.utils.clip_grad_norm_(policy.parameters(), 0.5)
        policy.optimizer.step()

    return rollout, update


def microseconds(function: Callable[[], Any], n_calls: int) -> float:
    start = time.perf_counter()
    for _ in range(n_calls):
        function()
    return (time.perf_counter() - start) / n_calls * 1e6


def matmul_share(update: Callable[[], Any], n_calls: int) -> float:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n_calls):
            update()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    return sum(e.self_cpu_time_total for e in events if e.key in ("aten::mm", "aten::addmm")) / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="Hopper-v5", help="an env with an entry in hyperparams/ppo.yml")
    parser.add_argument("--ks", nargs="+", type=int, default=[1, 5, 10, 20])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    th.set_num_threads(1)
    th.manual_seed(0)
    configs = [("ppo", 0)] + [("ncdpo", k) for k in args.ks]
    functions = {config: calls(build(*config[:1], args.env, config[1])) for config in configs}
    timings: dict[tuple[str, int], dict[str, list[float]]] = {c: {"rollout": [], "update": []} for c in configs}
    for function_pair in functions.values():  # warm-up
        for function in function_pair:
            microseconds(function, 10)
    for _ in range(args.repeats):  # interleaved, so that a slow spell of the machine hits every configuration
        for config, (rollout, update) in functions.items():
            timings[config]["rollout"].append(microseconds(rollout, args.calls))
            timings[config]["update"].append(microseconds(update, max(args.calls // 4, 1)))
    ppo = {key: statistics.median(values) for key, values in timings[("ppo", 0)].items()}
    model = build("ppo", args.env, 0)
    print(f"{args.env}: rollout batch {model.n_envs}, minibatch {model.batch_size}, 1 torch thread\n")
    print("| algo | K | rollout call µs | / PPO | minibatch update ms | / PPO | update share in matmul |")
    print("|---|---|---|---|---|---|---|")
    for config, (_, update) in functions.items():
        rollout_us = statistics.median(timings[config]["rollout"])
        update_us = statistics.median(timings[config]["update"])
        share = matmul_share(update, max(args.calls // 4, 1))
        print(
            f"| {config[0]} | {config[1] or '-'} | {rollout_us:.0f} | {rollout_us / ppo['rollout']:.1f} "
            f"| {update_us / 1000:.2f} | {update_us / ppo['update']:.1f} | {share:.0%} |"
        )


if __name__ == "__main__":
    main()
