"""
Action chunks (``horizon`` Tp, ``n_action_steps`` Ta): one decision per Ta env steps, env steps counted as env steps,
episode returns as the env's own, the rewards of a decision, the buffer's rows per env, the stored-noise invariant,
``predict``'s action queue, save / load, and the errors of bad settings.
"""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env

from sb3_ncdpo import DPPO, NCDPO
from sb3_ncdpo.common.chunk_rollout import ChunkRollout, Decisions
from sb3_ncdpo.common.pretrained import save_pretrained
from sb3_ncdpo.pretrain.bc import BCConfig, behaviour_cloning, window_indices, windows
from sb3_ncdpo.pretrain.demos import Transitions

GAMMA = 0.9
SMALL = dict(n_denoising_steps=2, net_arch=dict(pi=[16], vf=[16]), denoiser_hidden_sizes=[16])


class CountingEnv(gym.Env):
    """Episodes of ``length`` steps (terminated); the reward of the ``t``-th step of an episode is ``t`` (1-based)."""

    def __init__(self, length: int = 5) -> None:
        self.length = length
        self.observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.n_env_steps = 0

    def _obs(self) -> np.ndarray:
        return np.array([self.t / self.length, 0.5], np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        assert self.action_space.contains(np.asarray(action, np.float32))
        self.t += 1
        self.n_env_steps += 1
        return self._obs(), float(self.t), self.t == self.length, False, {}


def decision_rewards(length: int, n_action_steps: int, n_decisions: int, discounted: bool) -> list[float]:
    """The rewards of an env's first ``n_decisions`` decisions: chunks cut at each episode's end."""
    rewards, t = [], 0
    while len(rewards) < n_decisions:
        steps = range(t + 1, min(t + n_action_steps, length) + 1)
        rewards.append(sum(r * (GAMMA**i if discounted else 1.0) for i, r in enumerate(steps)))
        t = 0 if steps[-1] == length else steps[-1]
    return rewards


def chunk_model(lengths=(5, 7), chunk_reward="discounted", n_steps=12, **policy_kwargs):
    env = make_vec_env(CountingEnv, n_envs=len(lengths), env_kwargs=None, seed=0)
    for inner, length in zip(env.envs, lengths, strict=True):
        inner.unwrapped.length = length
    kwargs = {**SMALL, "horizon": 4, "n_action_steps": 3, **policy_kwargs}
    model = NCDPO(
        "MlpPolicy", env, n_steps=n_steps, batch_size=8, n_epochs=1, gamma=GAMMA, chunk_reward=chunk_reward, seed=0,
        policy_kwargs=kwargs,
    )  # fmt: skip
    return model, env


def collect(model) -> None:
    model._setup_learn(total_timesteps=10_000)
    model.collect_rollouts(model.env, model._init_callback(None), model.rollout_buffer, model.n_steps)


@pytest.mark.parametrize("chunk_reward", ["discounted", "sum"])
def test_a_decision_is_n_action_steps_env_steps_and_collects_their_rewards(chunk_reward):
    model, env = chunk_model(chunk_reward=chunk_reward)
    assert model.rollout_buffer.buffer_size == 4  # ceil(n_steps / n_action_steps)
    collect(model)
    buffer = model.rollout_buffer
    assert buffer.gamma == pytest.approx(GAMMA**3 if chunk_reward == "discounted" else GAMMA)
    for column, length in enumerate((5, 7)):
        expected = decision_rewards(length, 3, 4, discounted=chunk_reward == "discounted")
        np.testing.assert_allclose(buffer.rewards[:, column], expected, rtol=1e-6)
        # A decision starts an episode where the previous one ended it
        starts = [True] + [r == expected[0] for r in expected[1:]]
        np.testing.assert_array_equal(buffer.episode_starts[:, column], starts)
    executed = [inner.unwrapped.n_env_steps for inner in env.envs]
    assert executed[0] == executed[1] == model.num_timesteps // 2
    # The rollout ends when every env has 4 decisions: 3 + 2 + 3 + 2 steps with 5-step episodes, 3 + 3 + 1 + 3 with
    # 7-step ones (chunks cut at the episodes' ends), so 10 env steps, not ceil(12 / 3) * 3
    assert model.num_timesteps == 2 * 10


def test_the_last_row_bootstraps_from_the_next_decision_and_the_next_rollout_goes_on():
    """Ta = 2, episodes of 3 and 7 steps: the rollout ends at env 1's 4th decision (step 7), when env 0 has started its
    5th decision (at an episode start): env 0's last row bootstraps from that decision, not from an episode end."""
    model, _ = chunk_model(lengths=(3, 7), n_steps=8, horizon=2, n_action_steps=2)
    collect(model)
    buffer = model.rollout_buffer
    assert model.num_timesteps == 2 * 7
    # env 0's last row (its 4th decision, the 3rd episode's step 3) ended an episode: nothing to bootstrap
    assert buffer.returns[-1, 0] == pytest.approx(buffer.rewards[-1, 0])
    # the env's own state for the next rollout: env 0 is one step into an episode, env 1 at an episode's start
    np.testing.assert_array_equal(model._last_episode_starts, [False, True])
    # Episodes of 4 and 3 steps: the third row is complete at step 6, when env 1 has also finished a 4th decision (its
    # episode's step 3, decided at the observation of step 2): env 1's last row bootstraps from that decision's value,
    # env 0's (also mid-episode) from the value of the current observation, as without chunks
    model, _ = chunk_model(lengths=(4, 3), n_steps=6, horizon=2, n_action_steps=2)
    collect(model)
    buffer = model.rollout_buffer
    assert model.num_timesteps == 2 * 6
    with th.no_grad():
        following, current = model.policy.predict_values(th.tensor([[2 / 3, 0.5], [2 / 4, 0.5]])).flatten().tolist()
    assert buffer.returns[-1, 1] == pytest.approx(buffer.rewards[-1, 1] + GAMMA**2 * following, rel=1e-5)
    assert buffer.returns[-1, 0] == pytest.approx(buffer.rewards[-1, 0] + GAMMA**2 * current, rel=1e-5)


def test_episode_returns_and_env_steps_are_the_envs_own():
    model, env = chunk_model(n_steps=24)
    model.learn(60)
    assert model.num_timesteps == sum(inner.unwrapped.n_env_steps for inner in env.envs) >= 60
    returns = {info["r"] for info in model.ep_info_buffer}
    lengths = {info["l"] for info in model.ep_info_buffer}
    assert returns == {15.0, 28.0} and lengths == {5, 7}  # 1 + ... + 5 and 1 + ... + 7, whatever the chunks


@pytest.mark.parametrize("chunk_log_prob", ["executed", "horizon"])
def test_stored_noise_replays_the_log_probs_of_chunks(chunk_log_prob):
    model, _ = chunk_model(chunk_log_prob=chunk_log_prob, n_steps=24)
    collect(model)
    data = next(model.rollout_buffer.get())
    assert data.actions.shape == (16, 8) and data.noises.shape == (16, 2, 8)
    with th.no_grad():
        _, log_prob, entropy = model.policy.evaluate_actions(data.observations, data.actions, data.noises)
    assert (log_prob - data.old_log_prob).abs().max() < 1e-5
    # The log-probability of the executed actions (3 of 4) or of the whole chunk, from the same Gaussian
    distribution = model.policy.evaluate_distribution(data.observations, data.noises)[1].distribution
    n_scored = 3 * 2 if chunk_log_prob == "executed" else 4 * 2
    expected = distribution.log_prob(data.actions)[:, :n_scored].sum(dim=1)
    th.testing.assert_close(log_prob, expected)
    th.testing.assert_close(entropy, distribution.entropy()[:, :n_scored].sum(dim=1))


@pytest.mark.parametrize("chunk_log_prob", ["executed", "horizon"])
def test_dppo_replays_the_log_probs_of_every_denoising_step_of_chunks(chunk_log_prob):
    env = make_vec_env(CountingEnv, n_envs=2, seed=0)
    kwargs = dict(SMALL, horizon=4, n_action_steps=3, chunk_log_prob=chunk_log_prob)
    model = DPPO("MlpPolicy", env, n_steps=12, batch_size=16, n_epochs=1, gamma=GAMMA, seed=0, policy_kwargs=kwargs)
    collect(model)
    batch = next(model.rollout_buffer.get(batch_size=None))
    assert len(batch.steps) == 4 * 2 * 2 and batch.x_prev.shape[1] == 8  # decisions * envs * K, chunks of 4 x 2
    with th.no_grad():
        _, means = model.policy.denoising_step_means(batch.observations, batch.x_k, batch.steps)
    stds = model.policy.step_stds()[batch.steps - 1]
    scored = model.policy.scored
    log_prob = model.denoising_mdp.log_prob(scored(batch.x_prev), scored(means), scored(stds))
    assert (log_prob - batch.old_log_prob).abs().max() < 1e-5
    whole = model.denoising_mdp.log_prob(batch.x_prev, means, stds)
    assert ((whole - batch.old_log_prob).abs().max() < 1e-5) == (chunk_log_prob == "horizon")


def test_chunk_rollout_rows_and_bootstrap_per_env():
    """Two envs, Ta = 2: env 0 ends an episode after one step of its chunk, so the envs decide at different steps."""
    chunks = ChunkRollout(n_envs=2, n_action_steps=2, gamma=GAMMA, chunk_reward="discounted")

    def decisions(envs, tag):
        n = len(envs)
        return Decisions(
            np.array(envs), np.full((n, 1), tag, np.float32), np.zeros((n, 2, 1)), np.zeros((n, 2, 1)),
            np.array([tag == 0.0] * n), th.full((n, 1), tag), th.zeros(n), {},
        )  # fmt: skip

    assert chunks.deciding().tolist() == [0, 1]
    chunks.decide(decisions([0, 1], 0.0))
    assert chunks.record(np.array([1.0, 1.0]), np.array([True, False])) is None  # env 0's episode ended: it waits
    assert chunks.deciding().tolist() == [0]
    chunks.decide(decisions([0], 1.0))
    row = chunks.record(np.array([2.0, 2.0]), np.array([False, False]))  # env 1's chunk is done: a row
    assert row is not None
    np.testing.assert_allclose(row.rewards, [1.0, 1.0 + GAMMA * 2.0])
    np.testing.assert_array_equal(row.decisions.observations[:, 0], [0.0, 0.0])
    # Env 0's second decision is still executing: its value is where env 0's last row bootstraps from
    following = chunks.next_decisions()
    assert following[0] is not None and following[0][0].item() == 1.0 and following[0][1] is False
    assert following[1] is None


def test_predict_queues_a_chunk_per_env_and_episode_start_empties_it():
    model, _ = chunk_model()
    policy = model.policy
    obs = [np.array([[0.1 * i, 0.5], [-0.1 * i, 0.2]], np.float32) for i in range(4)]
    with th.no_grad():
        chunk0 = policy._predict(policy.obs_to_tensor(obs[0])[0], deterministic=True).numpy().reshape(2, 4, 2)
        chunk2 = policy._predict(policy.obs_to_tensor(obs[2])[0], deterministic=True).numpy().reshape(2, 4, 2)
    actions = [policy.predict(obs[0], deterministic=True)[0]]
    actions.append(policy.predict(obs[1], deterministic=True)[0])
    actions.append(policy.predict(obs[2], episode_start=np.array([False, True]), deterministic=True)[0])
    unscale = policy.unscale_action
    np.testing.assert_allclose(actions[0], unscale(chunk0[:, 0]), rtol=1e-6)
    np.testing.assert_allclose(actions[1], unscale(chunk0[:, 1]), rtol=1e-6)  # from the queue: obs[1] is not read
    np.testing.assert_allclose(actions[2][0], unscale(chunk0[0, 2]), rtol=1e-6)  # third of three executed actions
    np.testing.assert_allclose(actions[2][1], unscale(chunk2[1, 0]), rtol=1e-6)  # a new episode: a new chunk
    single = policy.predict(obs[3][0], deterministic=True)[0]  # a batch of another size: every queue is new
    assert single.shape == (2,)


def test_a_saved_model_with_chunks_loads_and_acts_the_same(tmp_path):
    model, env = chunk_model()
    model.learn(24)
    model.save(tmp_path / "chunks.zip")
    loaded = NCDPO.load(tmp_path / "chunks.zip")
    assert (loaded.policy.horizon, loaded.policy.n_action_steps, loaded.chunk_reward) == (4, 3, "discounted")
    obs = env.reset()
    for _ in range(5):
        action = model.predict(obs, deterministic=True)[0]
        np.testing.assert_array_equal(action, loaded.predict(obs, deterministic=True)[0])
        obs = env.step(action)[0]


def test_the_policy_reads_a_history_of_observations_padded_at_episode_starts():
    model, _ = chunk_model(lengths=(4, 6), n_steps=8, horizon=1, n_action_steps=1, n_obs_steps=3)
    collect(model)
    observations = model.rollout_buffer.observations  # (n_steps, n_envs, n_obs_steps, obs_size), the env's own
    assert observations.shape == (8, 2, 3, 2)
    for column, length in enumerate((4, 6)):
        times = [t % length for t in range(8)]  # the episode's step of each observation
        expected = [[max(t - 2, 0), max(t - 1, 0), t] for t in times]  # oldest first, the first one repeated
        np.testing.assert_allclose(observations[:, column, :, 0], np.array(expected) / length, rtol=1e-6)
    # predict keeps its own history per env: the same stacks as the rollout's
    policy = model.policy
    obs = [np.array([[t / 4, 0.5], [t / 6, 0.5]], np.float32) for t in range(3)]
    for t, o in enumerate(obs):
        action = policy.predict(o, episode_start=np.array([t == 0, t == 0]), deterministic=True)[0]
    history = th.as_tensor(np.stack([np.stack([o[env] for o in obs]) for env in range(2)]))
    with th.no_grad():
        expected_action = policy.unscale_action(policy._predict(history, deterministic=True).numpy())
    np.testing.assert_allclose(action, expected_action, rtol=1e-6)
    restarted = policy.predict(obs[2], episode_start=np.array([True, False]), deterministic=True)[0]
    with th.no_grad():
        alone = policy._predict(th.as_tensor(np.stack([obs[2][0]] * 3))[None], deterministic=True).numpy()
    np.testing.assert_allclose(restarted[0], policy.unscale_action(alone)[0], rtol=1e-6)


def test_bc_windows_are_padded_with_the_episode_edges():
    observation_index, action_index = window_indices(np.array([0, 0, 0, 1, 1]), n_obs_steps=2, horizon=3)
    np.testing.assert_array_equal(observation_index, [[0, 0], [0, 1], [1, 2], [3, 3], [3, 4]])
    np.testing.assert_array_equal(action_index, [[0, 1, 2], [1, 2, 2], [2, 2, 2], [3, 4, 4], [4, 4, 4]])
    with pytest.raises(ValueError, match="the transitions of each episode must be contiguous"):
        window_indices(np.array([0, 1, 0]), n_obs_steps=2, horizon=1)


def echo_demonstrations(n_episodes: int = 40, length: int = 25, seed: int = 0) -> Transitions:
    """Random observations; the demonstrated action is half the previous observation's first value (the first one's at
    an episode's start): the chunk (a_t, a_t+1) is known from the observations (o_t-1, o_t), not from o_t alone."""
    rng = np.random.default_rng(seed)
    observations = rng.uniform(-1, 1, (n_episodes, length, 2)).astype(np.float32)
    previous = np.concatenate([observations[:, :1], observations[:, :-1]], axis=1)
    actions = 0.5 * previous[..., :1]
    ids = np.repeat(np.arange(n_episodes), length)
    return Transitions(observations.reshape(-1, 2), actions.reshape(-1, 1), ids, np.zeros(n_episodes))


class EchoEnv(gym.Env):
    observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


def test_bc_clones_chunks_from_histories_and_fine_tuning_keeps_them(tmp_path):
    data = echo_demonstrations()
    space_o, space_a = EchoEnv.observation_space, EchoEnv.action_space
    config = BCConfig(n_steps=1500, eval_every=500, learning_rate=3e-3, normalize=False, seed=0)
    errors = {}
    for n_obs_steps in (1, 2):
        kwargs = dict(SMALL, denoiser_hidden_sizes=[64, 64], net_arch=dict(pi=[32], vf=[8]), horizon=2, n_action_steps=2)
        kwargs["n_obs_steps"] = n_obs_steps
        policy = behaviour_cloning(data, space_o, space_a, "diffusion", kwargs, config, progress_bar=False).policy
        observations, targets = windows(policy, data.observations, data.actions, data.episode_ids)
        with th.no_grad():
            chunks = policy._predict(th.as_tensor(observations[:500]), deterministic=True).numpy()
        errors[n_obs_steps] = np.abs(chunks - targets[:500]).mean()
    # With the previous observation in its history the policy knows the whole chunk; without it, only its second action
    assert errors[2] < 0.05 < 0.5 * errors[1], errors
    save_pretrained(tmp_path / "bc", policy, None, {})
    chunked = dict(horizon=2, n_action_steps=2, n_obs_steps=2)
    model = NCDPO("MlpPolicy", EchoEnv(), n_steps=8, batch_size=4, pretrained=str(tmp_path / "bc"), policy_kwargs=chunked)
    assert (model.policy.horizon, model.policy.n_action_steps, model.policy.n_obs_steps) == (2, 2, 2)
    with pytest.raises(ValueError, match=r"policy_kwargs\['n_obs_steps'\]=1 differs from the pre-trained policy's 2"):
        NCDPO("MlpPolicy", EchoEnv(), pretrained=str(tmp_path / "bc"), policy_kwargs=dict(chunked, n_obs_steps=1))


BAD = [
    (NCDPO, dict(horizon=0), "horizon must be an int >= 1, got 0"),
    (NCDPO, dict(horizon=2, n_action_steps=3), "n_action_steps must be <= horizon .* got n_action_steps=3 and horizon=2"),
    (NCDPO, dict(n_obs_steps=0), "n_obs_steps must be an int >= 1, got 0"),
    (NCDPO, dict(horizon=2, chunk_log_prob="all"), r"chunk_log_prob must be one of \('executed', 'horizon'\), got 'all'"),
    (DPPO, dict(horizon=4, n_action_steps=5), "n_action_steps must be <= horizon"),
]


@pytest.mark.parametrize("algo, policy_kwargs, message", BAD)
def test_bad_chunk_settings_are_named_before_the_env_is_built(algo, policy_kwargs, message):
    with pytest.raises(ValueError, match=message):
        algo("MlpPolicy", "NoSuchEnv-v0", policy_kwargs=policy_kwargs)


def test_bad_chunk_reward_and_discrete_chunks_are_named():
    with pytest.raises(ValueError, match=r"chunk_reward must be one of \('discounted', 'sum'\), got 'mean'"):
        NCDPO("MlpPolicy", "NoSuchEnv-v0", chunk_reward="mean")
    with pytest.raises(ValueError, match="horizon > 1 \\(action chunks\\) needs a Box action space, got horizon=2"):
        NCDPO("MlpPolicy", "CartPole-v1", policy_kwargs=dict(horizon=2))
    with pytest.raises(ValueError, match="n_obs_steps > 1 \\(an observation history\\) needs a Box observation space that"):
        NCDPO("MlpPolicy", "FrozenLake-v1", policy_kwargs=dict(n_obs_steps=2))
