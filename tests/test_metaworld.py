"""Meta-World's tasks as gymnasium ids: success through SB3's key, the sparse reward, scripted demonstrations."""

import gymnasium as gym
import metaworld
import numpy as np
import pytest
from metaworld.policies import SawyerReachV3Policy

from sb3_ncdpo.metaworld_envs import make_task
from sb3_ncdpo.pretrain.demos import GetActionPolicy, collect_policy_demos, dataset_transitions
from sb3_ncdpo.registration import METAWORLD_MAX_EPISODE_STEPS, METAWORLD_TASKS, metaworld_id


def test_every_task_of_metaworld_has_its_two_ids():
    assert METAWORLD_TASKS == tuple(metaworld.ALL_V3_ENVIRONMENTS)
    for task in METAWORLD_TASKS:
        for sparse in (False, True):
            spec = gym.spec(metaworld_id(task, sparse))
            assert spec.kwargs == {"task": task, "sparse": sparse} and spec.max_episode_steps == METAWORLD_MAX_EPISODE_STEPS
    assert metaworld_id("push-v3") == "sb3_ncdpo/metaworld-push-v3"
    assert metaworld_id("push-v3", sparse=True) == "sb3_ncdpo/metaworld-push-sparse-v3"


def play(env, policy, seed, n_steps=METAWORLD_MAX_EPISODE_STEPS):
    observation, _ = env.reset(seed=seed)
    steps = []
    for _ in range(n_steps):
        observation, reward, terminated, truncated, info = env.step(policy(observation))
        assert env.observation_space.contains(observation)
        steps.append((reward, info["is_success"], info["success"], terminated, truncated))
        if terminated or truncated:
            break
    return observation, steps


def test_an_episode_reports_success_through_sbs_key_and_ends_at_the_cap():
    env = gym.make(metaworld_id("reach-v3"))
    expert = GetActionPolicy(SawyerReachV3Policy())
    _, steps = play(env, expert, seed=0)
    rewards, successes, metaworld_successes, terminated, truncated = map(np.array, zip(*steps, strict=True))
    assert len(steps) == METAWORLD_MAX_EPISODE_STEPS and truncated[-1] and not terminated.any() and not truncated[:-1].any()
    # SB3's flag says whether the episode has succeeded by then: Meta-World's, accumulated
    np.testing.assert_array_equal(successes, np.maximum.accumulate(metaworld_successes.astype(bool)))
    assert successes[-1] and not successes[0]  # the scripted expert reaches the goal
    assert rewards.min() >= 0 and len(set(rewards.round(6))) > 10  # Meta-World's dense reward


def test_the_sparse_id_rewards_success_steps_only_and_resets_are_seeded():
    env = gym.make(metaworld_id("reach-v3", sparse=True))
    expert = GetActionPolicy(SawyerReachV3Policy())
    last, steps = play(env, expert, seed=3)
    rewards, successes = np.array([s[0] for s in steps]), np.array([s[2] for s in steps])
    np.testing.assert_array_equal(rewards, successes.astype(float))  # the step's own success
    assert rewards.sum() > 0
    again, _ = play(env, expert, seed=3)
    np.testing.assert_array_equal(again, last)
    other, _ = play(gym.make(metaworld_id("reach-v3", sparse=True)), expert, seed=4, n_steps=1)
    assert not np.array_equal(other, env.reset(seed=3)[0])  # another seed draws another variation of the task


def test_terminate_on_success_and_a_shorter_cap_are_gym_make_arguments():
    env = gym.make(metaworld_id("reach-v3"), terminate_on_success=True)
    _, steps = play(env, GetActionPolicy(SawyerReachV3Policy()), seed=0)
    assert steps[-1][3] and steps[-1][1] and len(steps) < METAWORLD_MAX_EPISODE_STEPS
    _, steps = play(gym.make(metaworld_id("reach-v3"), max_episode_steps=20), lambda o: np.zeros(4), seed=0)
    assert len(steps) == 20 and steps[-1][4]


def test_a_wrong_task_name_is_refused_with_the_names():
    with pytest.raises(ValueError, match=r"task must be one of Meta-World's \['assembly-v3', .* got 'push-v2'"):
        make_task("push-v2")


def test_scripted_demonstrations_make_a_dataset_with_success_flags(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    dataset = collect_policy_demos(
        GetActionPolicy(SawyerReachV3Policy()),
        metaworld_id("reach-v3"),
        "metaworld/reach-expert-v0",
        2,
        max_episode_steps=100,
        noisy_fraction=0.5,
        noisy_action_noise=0.3,
    )
    transitions = dataset_transitions(dataset)
    assert dataset.total_episodes == 2 and dataset.total_steps == 200 and transitions.observations.shape == (200, 39)
    assert transitions.episode_successes.tolist() == [True, True]
    flags = np.concatenate([episode.infos["success"] for episode in dataset.iterate_episodes()])
    assert flags.dtype == bool and 0 < flags.mean() < 1


@pytest.mark.parametrize("algo", ["ncdpo", "ppo"])
def test_compare_reports_the_success_rate_of_a_metaworld_id(tmp_path, algo):
    from sb3_ncdpo.compare import RunSpec, load_rows, report
    from sb3_ncdpo.compare.runs import run_one

    spec = RunSpec(
        algo, metaworld_id("reach-v3"), seed=0, timesteps=512, eval_freq=256, n_eval_episodes=2, hyperparams="defaults",
        algo_kwargs="dict(n_steps=256, batch_size=64)",
    )  # fmt: skip
    run_one(spec, tmp_path)
    rows = load_rows(tmp_path)
    assert [r["timesteps"] for r in rows] == [256, 512]
    assert all(r["eval_success_rate"] in (0.0, 0.5, 1.0) for r in rows)  # two episodes each
    table = report(tmp_path).splitlines()
    assert "final success rate, IQM [95% CI]" in table[0] and len(table[2].split("|")) == len(table[0].split("|"))


@pytest.mark.parametrize("algo", ["ncdpo", "dppo"])
def test_train_fine_tunes_a_chunked_clone_on_a_metaworld_id_and_reports_success(tmp_path, monkeypatch, algo):
    """Scripted demos -> BC with 4-action chunks -> `sb3-ncdpo train --pretrained` with the packaged Meta-World entry."""
    from sb3_ncdpo.cli import main
    from sb3_ncdpo.dppo import DPPO
    from sb3_ncdpo.ncdpo import NCDPO

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    collect_policy_demos(
        GetActionPolicy(SawyerReachV3Policy()), metaworld_id("reach-v3", sparse=True), "metaworld/reach-v0", 2,
        max_episode_steps=40,
    )  # fmt: skip
    clone = tmp_path / "clone"
    kwargs = "dict(n_denoising_steps=5, denoiser_hidden_sizes=[32, 32], net_arch=dict(pi=[]), horizon=4, n_action_steps=4)"
    main(["pretrain", "--dataset", "metaworld/reach-v0", "--out", str(clone), "--n-steps", "20", "--eval-every", "10",
          "--policy-kwargs", kwargs, "--no-progress"])  # fmt: skip
    logs, env_id = tmp_path / "logs", metaworld_id("reach-v3", sparse=True)
    main(["train", "--algo", algo, "--env", env_id, "-f", str(logs), "--num-threads", "1", "--seed", "0", "-n", "80",
          "--pretrained", str(clone), "--env-kwargs", "max_episode_steps:40", "--eval-freq", "40", "--eval-episodes", "2",
          "-params", "n_envs:1", "n_steps:40", f"batch_size:{5 if algo == 'ncdpo' else 10}"])  # fmt: skip
    run = logs / algo / f"{env_id.replace('/', '-')}_1"  # rl-zoo3's folder name for a namespaced id
    evaluations = np.load(run / "evaluations.npz")
    assert evaluations["successes"].shape == (2, 2)  # two evaluations of two episodes, each with its success flag
    assert evaluations["timesteps"].tolist() == [40, 80]
    # the packaged Meta-World entry (tuned: benchmarks/results/metaworld_tuning2) and the clone's chunks
    model = (NCDPO if algo == "ncdpo" else DPPO).load(run / f"{env_id.replace('/', '-')}.zip", device="cpu")
    assert model.policy.n_action_steps == 4 and model.critic_warmup_iters == 2 and model.gamma == 0.99
    assert model.lr_schedule(1.0) == 3e-5 and model.critic_learning_rate == 1e-3
    # NCDPO's final std 0.4; DPPO fine-tunes every step of the clone's chain (K' = K = 5 here) at its final std 0.1
    assert (model.policy.fixed_std, model.policy.trained_steps) == ((0.4, 5) if algo == "ncdpo" else (0.1, 5))


def test_every_metaworld_id_has_a_fine_tuning_entry():
    from sb3_ncdpo.zoo import load_hyperparams

    for algo in ("ncdpo_finetune", "dppo_finetune", "ppo_finetune"):
        for task in METAWORLD_TASKS:
            for sparse in (False, True):
                assert load_hyperparams(algo, metaworld_id(task, sparse))["n_envs"] == 10


@pytest.fixture
def offscreen_rendering(monkeypatch):
    """MuJoCo renders offscreen through EGL (Mesa's software renderer on a machine without a GPU)."""
    monkeypatch.setenv("MUJOCO_GL", "egl")


def test_pixel_pipeline_replay_clone_and_fine_tune(tmp_path, monkeypatch, offscreen_rendering):
    """State demos -> replayed as images -> a CNN diffusion clone -> NCDPO fine-tuning on images, at a tiny budget."""
    import minari
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.torch_layers import NatureCNN

    from sb3_ncdpo.cli import main
    from sb3_ncdpo.ncdpo import NCDPO
    from sb3_ncdpo.pretrain.bc import BCConfig, pretrain
    from sb3_ncdpo.pretrain.demos import replay_demos

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    env_id, pixels = metaworld_id("reach-v3", sparse=True), dict(pixels=True, image_size=40)
    state = collect_policy_demos(
        GetActionPolicy(SawyerReachV3Policy()), env_id, "metaworld/reach-state-v0", 2, max_episode_steps=12,
        action_noise=0.2,
    )  # fmt: skip
    main(["collect-demos", "--replay", "metaworld/reach-state-v0", "--dataset-id", "metaworld/reach-pixels-v0",
          "--env-kwargs", "dict(pixels=True, image_size=40)"])  # fmt: skip
    images = minari.load_dataset("metaworld/reach-pixels-v0")
    assert images.observation_space == gym.spaces.Box(0, 255, (3, 40, 40), np.uint8) and images.total_steps == 24
    for replayed, recorded in zip(images.iterate_episodes(), state.iterate_episodes(), strict=True):
        np.testing.assert_array_equal(replayed.actions, recorded.actions)
        np.testing.assert_array_equal(replayed.rewards, recorded.rewards)
        np.testing.assert_array_equal(replayed.infos["success"], recorded.infos["success"])
        assert replayed.observations.dtype == np.uint8
        assert np.abs(replayed.observations[-1].astype(int) - replayed.observations[0]).max() > 0  # the arm moved
    with pytest.raises(ValueError, match="already exists locally"):
        replay_demos("metaworld/reach-state-v0", "metaworld/reach-pixels-v0", pixels)

    clone = tmp_path / "clone"
    kwargs = dict(n_denoising_steps=4, denoiser_hidden_sizes=[16], net_arch=dict(pi=[], vf=[16]), horizon=2, n_action_steps=2)
    result = pretrain("metaworld/reach-pixels-v0", clone, "diffusion", kwargs, BCConfig(n_steps=4, eval_every=2), False)
    assert isinstance(result.policy.features_extractor, NatureCNN) and result.normalizer is None  # scaled, not normalised
    assert not (clone / "vecnormalize.pkl").exists()

    env = make_vec_env(env_id, n_envs=1, seed=0, env_kwargs=dict(pixels, max_episode_steps=12))
    model = NCDPO("CnnDiffusionPolicy", env, pretrained=clone, n_steps=12, batch_size=3, n_epochs=1, seed=0, device="cpu")
    first_layer = "features_extractor.cnn.0.weight"
    np.testing.assert_array_equal(model.policy.state_dict()[first_layer], result.policy.state_dict()[first_layer])
    calls = []
    model.policy.features_extractor.register_forward_hook(lambda *_: calls.append(1))
    model.predict(env.reset(), deterministic=True)
    assert len(calls) == 1  # one image encoding conditions all K denoising steps of the decision
    model.learn(24)
    assert model.num_timesteps == 24 and len(model.ep_success_buffer) == 2  # the success flags reach SB3's buffer


def test_a_replay_that_diverges_is_refused_and_leaves_no_dataset(tmp_path, monkeypatch, capsys):
    import minari

    from sb3_ncdpo.cli import main
    from sb3_ncdpo.pretrain.demos import replay_demos

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    collect_policy_demos(
        GetActionPolicy(SawyerReachV3Policy()), metaworld_id("reach-v3"), "metaworld/reach-v0", 1, max_episode_steps=5
    )
    with pytest.raises(ValueError, match=r"the replay of episode 0 diverged at step 0 .* is not the source's simulation"):
        replay_demos("metaworld/reach-v0", "metaworld/other-v0", dict(task_seed=1))  # other variations of the task
    assert "metaworld/other-v0" not in minari.list_local_datasets()
    with pytest.raises(ValueError, match="not a local Minari dataset"):
        replay_demos("metaworld/none-v0", "metaworld/other-v0")
    with pytest.raises(SystemExit):
        main(["collect-demos", "--replay", "metaworld/reach-v0", "--dataset-id", "a/b-v0", "--env", "Hopper-v5"])
    assert "--env goes with --model or --policy: --replay keeps the dataset's env" in capsys.readouterr().err
