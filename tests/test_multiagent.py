"""Multi-agent training with parameter sharing: PettingZoo (MPE) through SuperSuit, with and without a centralised critic."""

import os
import re

import gymnasium as gym
import numpy as np
import pytest
import torch as th
import yaml
from stable_baselines3 import PPO
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecNormalize
from test_ncdpo import collected, replay

from sb3_ncdpo import NCDPO
from sb3_ncdpo.cli import main as cli
from sb3_ncdpo.compare import make_model
from sb3_ncdpo.multiagent import (
    CentralCriticDiffusionPolicy,
    CentralCriticPolicy,
    ParallelEnvPlaceholder,
    make_parallel_vec_env,
    parameter_sharing,
)

SPREAD = "mpe2.simple_spread_v3:parallel_env"
SMALL = dict(n_denoising_steps=3, denoiser_hidden_sizes=[32, 32], net_arch=[16])
TINY = dict(n_steps=25, batch_size=50, n_epochs=2)


def spread(n_envs: int = 2, seed: int | None = 0, global_state: bool = False):
    return make_parallel_vec_env(SPREAD, n_envs=n_envs, seed=seed, global_state=global_state, env_kwargs=dict(N=3))


def test_each_agent_is_a_sub_env_and_truncation_is_marked():
    env = spread(n_envs=2)
    assert env.num_envs == 6 and env.observation_space.shape == (18,) and env.action_space == gym.spaces.Discrete(5)
    first = env.reset()
    np.testing.assert_array_equal(first, spread(n_envs=2).reset())  # seeded
    assert not np.array_equal(first, spread(n_envs=2, seed=1).reset())
    for step in range(25):  # MPE episodes end by truncation after max_cycles=25
        _, rewards, dones, infos = env.step(np.zeros(6, dtype=int))
        assert dones.dtype == bool and dones.all() == (step == 24)
    assert all(info["TimeLimit.truncated"] and "terminal_observation" in info and "episode" in info for info in infos)
    # cooperative task: the agents of one copy share the reward
    assert rewards[0] == pytest.approx(rewards[1]) == pytest.approx(rewards[2])


def test_reward_normalisation_restarts_every_agents_return():
    """VecNormalize resets the discounted return of the sub-envs that are done (it indexes with ``dones``)."""
    env = VecNormalize(spread(n_envs=1))
    env.reset()
    for step in range(25):
        env.step(np.zeros(3, dtype=int))
        assert (env.returns != 0).all() == (step < 24)
    np.testing.assert_array_equal(env.returns, np.zeros(3))


@pytest.mark.parametrize("algo, policy", [(NCDPO, "MlpPolicy"), (PPO, "MlpPolicy")])
def test_shared_policy_trains_saves_loads_and_acts_for_every_agent(tmp_path, algo, policy):
    env = spread()
    kwargs = dict(policy_kwargs=SMALL) if algo is NCDPO else {}
    model = algo(policy, env, seed=0, **TINY, **kwargs)
    model.learn(300)  # two rollouts of 25 steps x 6 agents, two updates
    assert model.num_timesteps == 300 and len(model.ep_info_buffer) == 12  # one finished episode per agent and rollout
    obs = env.reset()
    actions, _ = model.predict(obs, deterministic=True)
    assert actions.shape == (6,) and all(env.action_space.contains(a) for a in actions)
    model.save(tmp_path / "model")
    loaded = algo.load(tmp_path / "model", env=env)
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], actions)
    loaded.learn(150)


@pytest.mark.parametrize("algo, policy", [(NCDPO, CentralCriticDiffusionPolicy), (PPO, CentralCriticPolicy)])
def test_centralised_critic_trains_saves_loads_and_acts_for_every_agent(tmp_path, algo, policy):
    env = spread(global_state=True)
    assert set(env.observation_space.spaces) == {"obs", "state"} and env.observation_space["state"].shape == (54,)
    kwargs = dict(policy_kwargs=SMALL) if algo is NCDPO else {}
    model = algo(policy, env, seed=0, **TINY, **kwargs)
    model.learn(300)
    obs = env.reset()
    # Every agent sees the same global state of its copy of the env
    np.testing.assert_array_equal(obs["state"][0], obs["state"][2])
    actions, _ = model.predict(obs, deterministic=True)
    assert actions.shape == (6,)
    model.save(tmp_path / "model")
    loaded = algo.load(tmp_path / "model", env=env)
    assert type(loaded.policy) is policy
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], actions)
    loaded.learn(150)


@pytest.mark.parametrize("policy", [CentralCriticDiffusionPolicy, CentralCriticPolicy])
def test_critic_sees_the_state_and_the_actor_only_its_observation(policy):
    env = spread(global_state=True)
    kwargs = dict(policy_kwargs=SMALL) if policy is CentralCriticDiffusionPolicy else {}
    model = (NCDPO if policy is CentralCriticDiffusionPolicy else PPO)(policy, env, seed=0, **TINY, **kwargs)
    assert model.policy.pi_features_extractor.key == "obs" and model.policy.vf_features_extractor.key == "state"
    assert model.policy.mlp_extractor.value_net[0].in_features == 54
    obs = env.reset()
    changed = {"obs": obs["obs"], "state": obs["state"] + 1.0}
    actions, _ = model.predict(obs, deterministic=True)
    np.testing.assert_array_equal(model.predict(changed, deterministic=True)[0], actions)
    values = model.policy.predict_values(model.policy.obs_to_tensor(obs)[0])
    changed_values = model.policy.predict_values(model.policy.obs_to_tensor(changed)[0])
    assert not th.allclose(values, changed_values)


def test_stored_noise_reproduces_old_log_prob_with_a_centralised_critic():
    model = NCDPO(CentralCriticDiffusionPolicy, spread(global_state=True), n_steps=32, batch_size=64, policy_kwargs=SMALL)
    log_prob, old_log_prob, values, old_values = replay(collected(model))
    assert (log_prob - old_log_prob).abs().max().item() < 1e-5
    assert (values - old_values).abs().max().item() < 1e-5


def test_bad_multiagent_input():
    with pytest.raises(ValueError, match=r"actor_key must be a key of the Dict observation space .* got 'obs'"):
        NCDPO(CentralCriticDiffusionPolicy, spread(), policy_kwargs=SMALL)
    with pytest.raises(ValueError, match="share_features_extractor must be False"):
        PPO(CentralCriticPolicy, spread(global_state=True), policy_kwargs=dict(share_features_extractor=True))
    with pytest.raises(ValueError, match="global_state=True needs a PettingZoo env with a global state"):
        make_parallel_vec_env(_stateless, global_state=True)
    with pytest.raises(ValueError, match="'module:function'"):
        make_parallel_vec_env("mpe2.simple_spread_v3")
    with pytest.raises(ValueError, match="n_envs must be an int >= 1"):
        make_parallel_vec_env(SPREAD, n_envs=0)
    with pytest.raises(RuntimeError, match=r"vec_env_wrapper: sb3_ncdpo\.multiagent\.parameter_sharing"):
        gym.make("sb3_ncdpo/simple_spread_v3").reset()
    with pytest.raises(ValueError, match="parameter_sharing wraps the vec env of a multi-agent id"):
        parameter_sharing(make_model("ppo", "CartPole-v1", 0)[1])


def _stateless(**kwargs):
    from mpe2 import simple_spread_v3

    env = simple_spread_v3.parallel_env(**kwargs)
    env.unwrapped.state_space = None  # as for a PettingZoo env without state()
    return env


def test_registered_ids_through_compare_make_model():
    for env_id, policy in (("sb3_ncdpo/simple_spread_v3", "MlpPolicy"), ("sb3_ncdpo/simple_spread_v3-state", None)):
        assert isinstance(gym.make(env_id).unwrapped, ParallelEnvPlaceholder)
        for algo in ("ncdpo", "ppo"):
            model, eval_env = make_model(algo, env_id, seed=0, algo_kwargs=dict(n_steps=25, batch_size=50))
            assert model.get_env().num_envs % 3 == 0 and eval_env.num_envs == 3
            if policy is None:
                assert isinstance(model.policy, (CentralCriticPolicy, CentralCriticDiffusionPolicy))
            model.learn(model.n_steps * model.get_env().num_envs)
            mean, _ = evaluate_policy(model, eval_env, n_eval_episodes=3)
            assert -200 < mean < 0


def test_zoo_train_and_enjoy_a_multiagent_id(tmp_path, capsys):
    logs = str(tmp_path / "logs")
    env_id = "sb3_ncdpo/simple_spread_v3-state"
    params = ["-params", "n_envs:2", "n_steps:25", "batch_size:50", "n_epochs:1", "policy_kwargs:dict(n_denoising_steps=2)"]
    cli(["train", "--algo", "ncdpo", "--env", env_id, "-n", "300", "-f", logs, "--num-threads", "1", "--seed", "0", *params])
    run = os.path.join(logs, "ncdpo", "sb3_ncdpo-simple_spread_v3-state_1")
    with open(os.path.join(run, "sb3_ncdpo-simple_spread_v3-state", "config.yml")) as file:
        config = dict(yaml.unsafe_load(file))
    assert config["vec_env_wrapper"] == "sb3_ncdpo.multiagent.parameter_sharing"  # from the packaged ncdpo.yml
    model = NCDPO.load(os.path.join(run, "sb3_ncdpo-simple_spread_v3-state.zip"))
    assert isinstance(model.policy, CentralCriticDiffusionPolicy) and model.num_timesteps == 300
    with pytest.raises(SystemExit, match="needs --n-envs 2 or more"):
        cli(["enjoy", "--algo", "ncdpo", "--env", env_id, "-f", logs, "--no-render", "-n", "10"])
    cli(["enjoy", "--algo", "ncdpo", "--env", env_id, "-f", logs, "--no-render", "-n", "30", "--n-envs", "2"])
    out = capsys.readouterr().out
    # simple_spread's games last 25 steps: each of the 2 copies finished one, its return the mean of its 3 agents'
    assert "Loading" in out and len(re.findall(r"Episode Reward: -[\d.]+ \(agents: (-[\d.]+, ){2}-[\d.]+\)", out)) == 2, out
    assert out.count("Episode Length 25") == 2


def test_compare_runs_and_reports_a_multiagent_id(tmp_path):
    from sb3_ncdpo.compare import RunSpec, report, run_one

    spec = RunSpec("ncdpo", "sb3_ncdpo/simple_spread_v3", 0, 300, 300, 3, policy_kwargs="dict(n_denoising_steps=2)")
    assert run_one(spec, tmp_path).name == "ncdpo__sb3_ncdpo-simple_spread_v3__seed0.csv"
    table = report(tmp_path)
    assert "| sb3_ncdpo/simple_spread_v3 | ncdpo | 1 | 2400 |" in table  # one rollout: 8 copies x 3 agents x 100 steps
    assert (tmp_path / "curves_sb3_ncdpo-simple_spread_v3.png").exists()


def test_agents_execute_action_chunks():
    env = make_parallel_vec_env(SPREAD, n_envs=1, seed=0, env_kwargs=dict(N=3, continuous_actions=True))
    chunks = dict(SMALL, horizon=4, n_action_steps=2)
    model = NCDPO("MlpDiffusionPolicy", env, seed=0, n_steps=26, batch_size=39, n_epochs=1, policy_kwargs=chunks)
    model.learn(150)  # 13 decisions per agent and rollout: MPE's 25-step episode is 12 chunks of 2 steps and one of 1
    assert model.num_timesteps == 2 * 25 * 3 and model.rollout_buffer.buffer_size == 13
    assert model.rollout_buffer.actions.shape == (13 * 3, 4 * 5)  # flattened by the update
    assert len(model.ep_info_buffer) == 6 and {info["l"] for info in model.ep_info_buffer} == {25}
    actions, _ = model.predict(env.reset(), deterministic=True)
    assert actions.shape == (3, 5) and all(env.action_space.contains(a) for a in actions)
