"""Demonstrations (Minari) -> behaviour cloning -> fine-tuning, at tiny budgets on local data only."""

import json

import gymnasium as gym
import minari
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

from sb3_ncdpo import NCDPO
from sb3_ncdpo.cli import main
from sb3_ncdpo.common.pretrained import observation_normalizer
from sb3_ncdpo.pretrain import FrozenRunningMeanStd, load_pretrained, pretrained_policy_kwargs, save_pretrained
from sb3_ncdpo.pretrain.bc import BCConfig, bc_loss, behaviour_cloning, gaussian_loss, split_episodes
from sb3_ncdpo.pretrain.demos import Transitions, collect_demos, dataset_transitions, load_demos

SMALL = dict(n_denoising_steps=5, denoiser_hidden_sizes=[64, 64], net_arch=dict(pi=[], vf=[32]))


@pytest.fixture(autouse=True)
def local_minari(tmp_path, monkeypatch):
    """Every dataset of these tests lives in the test's own folder."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))


@pytest.fixture(scope="module")
def pendulum_expert(tmp_path_factory):
    """A (barely trained) PPO model on Pendulum with observation normalisation, saved as rl-zoo3 would."""
    folder = tmp_path_factory.mktemp("expert")
    env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=1, seed=0))
    model = PPO("MlpPolicy", env, n_steps=128, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(256)
    model.save(folder / "Pendulum-v1.zip")
    env.save(str(folder / "vecnormalize.pkl"))
    return folder / "Pendulum-v1.zip"


@pytest.fixture(scope="module")
def pendulum_pretrained(tmp_path_factory, pendulum_expert):
    """A local dataset recorded from the expert and a diffusion policy cloned from it (through the Python API)."""
    folder = tmp_path_factory.mktemp("pretrained")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINARI_DATASETS_PATH", str(folder / "minari"))
        dataset = collect_demos(pendulum_expert, "ppo", "Pendulum-v1", "test/pendulum-v0", n_episodes=3, seed=1)
        transitions = dataset_transitions(dataset)
        result = behaviour_cloning(
            transitions,
            dataset.observation_space,
            dataset.action_space,
            "diffusion",
            SMALL,
            BCConfig(n_steps=400, eval_every=200),
            progress_bar=False,
        )
    save_pretrained(folder / "bc", result.policy, result.normalizer, {"dataset_id": "test/pendulum-v0"})
    return folder / "bc", transitions


def test_collect_pretrain_finetune_through_the_cli(tmp_path, pendulum_expert):
    main(
        [
            "collect-demos",
            "--algo",
            "ppo",
            "--model",
            str(pendulum_expert),
            "--env",
            "Pendulum-v1",
            "--dataset-id",
            "test/cli-v0",
            "--n-episodes",
            "2",
            "--action-noise",
            "0.3",
        ]
    )
    dataset = minari.load_dataset("test/cli-v0")
    assert dataset.total_episodes == 2 and dataset.total_steps == 400  # Pendulum's episodes are 200 steps
    episode = next(iter(dataset.iterate_episodes()))
    assert episode.observations.shape == (201, 3) and np.all(np.abs(episode.actions) <= 2.0)

    out = tmp_path / "bc"
    main(["pretrain", "--dataset", "test/cli-v0", "--out", str(out), "--n-steps", "100", "--eval-every", "50"])
    main(["pretrain", "--dataset", "test/cli-v0", "--out", str(tmp_path / "gauss"), "--policy", "gaussian", "--n-steps", "50"])
    for name in ("policy.pth", "vecnormalize.pkl", "pretrain.json"):
        assert (out / name).is_file(), name
    metadata = json.loads((out / "pretrain.json").read_text())
    assert metadata["dataset_id"] == "test/cli-v0" and metadata["n_transitions"] == 400 and metadata["val_loss"] > 0
    assert metadata["history"][-1]["step"] == 100

    logs = tmp_path / "logs"
    zoo = ["--algo", "ncdpo", "--env", "Pendulum-v1", "-f", str(logs), "--num-threads", "1", "--seed", "0"]
    main(["train", *zoo, "-n", "256", "--pretrained", str(out), "-params", "n_envs:1", "n_steps:64", "batch_size:32"])
    run = logs / "ncdpo" / "Pendulum-v1_1"
    model = NCDPO.load(run / "Pendulum-v1.zip", device="cpu")
    assert model.pretrained == str(out.resolve()) and model.critic_warmup_iters == 2  # ncdpo_finetune.yml
    assert model.policy.fixed_std == 0.1 and model.policy.chain.n_steps == 10  # the file's chain (pretrain default)
    saved = VecNormalize.load(str(run / "Pendulum-v1" / "vecnormalize.pkl"), make_vec_env("Pendulum-v1"))
    pretrained = load_pretrained(out)
    assert isinstance(saved.obs_rms, FrozenRunningMeanStd)  # the pre-trained statistics, never updated
    np.testing.assert_array_equal(saved.obs_rms.mean, pretrained.vec_normalize.obs_rms.mean)
    action, _ = model.predict(saved.reset(), deterministic=True)
    assert action.shape == (1, 1) and np.all(np.abs(action) <= 2.0)
    main(["enjoy", "--algo", "ncdpo", "--env", "Pendulum-v1", "-f", str(logs), "--no-render", "-n", "20"])


def test_cli_rejects_bad_input(tmp_path, pendulum_expert, capsys):
    with pytest.raises(SystemExit):
        main(["pretrain", "--dataset", "x", "--out", str(tmp_path), "--ema-decay", "1.5"])
    assert "ema_decay must be in [0, 1)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["pretrain", "--dataset", "x", "--out", str(tmp_path), "--policy-kwargs", "dict(sampler='x')"])
    assert "sampler must be one of" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["collect-demos", "--algo", "nope", "--model", str(pendulum_expert), "--env", "Pendulum-v1", "--dataset-id", "a"])
    assert "--algo must be one of" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="--pretrained must be a folder"):
        main(["train", "--algo", "ncdpo", "--env", "Pendulum-v1", "--pretrained", str(tmp_path)])
    (tmp_path / "policy.pth").touch()
    with pytest.raises(
        SystemExit, match=r"--pretrained needs an algorithm with a `pretrained` argument .*'ncdpo'.*got --algo ppo"
    ):
        main(["train", "--algo", "ppo", "--env", "Pendulum-v1", "--pretrained", str(tmp_path)])
    with pytest.raises(ValueError, match=r"not a local Minari dataset.*--download"):
        load_demos("nobody/nothing-v0")


def test_remote_dataset_path_downloads_through_minari(tmp_path, monkeypatch, pendulum_expert):
    """load_demos(download=True) goes through Minari's own download; here the 'remote' is faked by a local copy."""
    calls = []

    def fake_download(dataset_id: str, force_download: bool = False) -> None:
        calls.append(dataset_id)
        collect_demos(pendulum_expert, "ppo", "Pendulum-v1", dataset_id, n_episodes=1)

    monkeypatch.setattr(minari.storage.hosting, "download_dataset", fake_download)
    dataset = load_demos("remote/pendulum-v0", download=True)
    assert calls == ["remote/pendulum-v0"] and dataset.total_episodes == 1


def bimodal(n: int, seed: int = 0) -> Transitions:
    """One observation region, two separated action modes (+-0.6) with equal probability."""
    rng = np.random.default_rng(seed)
    observations = rng.normal(0.0, 0.1, size=(n, 2)).astype(np.float32)
    actions = (rng.choice([-0.6, 0.6], size=(n, 1)) + rng.normal(0.0, 0.03, size=(n, 1))).astype(np.float32)
    return Transitions(observations, actions, np.arange(n) // 50, np.zeros(n // 50))


def test_bc_of_a_bimodal_dataset_keeps_both_modes():
    data = bimodal(2000)
    obs_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
    act_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
    config = BCConfig(n_steps=1500, eval_every=500, learning_rate=3e-3, seed=0)
    kwargs = dict(n_denoising_steps=10, denoiser_hidden_sizes=[64, 64], net_arch=dict(pi=[], vf=[8]))
    diffusion = behaviour_cloning(data, obs_space, act_space, "diffusion", kwargs, config, progress_bar=False).policy
    gaussian = behaviour_cloning(data, obs_space, act_space, "gaussian", {}, config, progress_bar=False).policy
    obs = th.zeros((4000, 2))
    with th.no_grad():
        samples = diffusion.get_distribution(obs).distribution.mean.numpy().ravel()  # the chain's output, fresh noise
        gaussian_mean = gaussian.get_distribution(obs[:1]).distribution.mean.item()
    near_low, near_high = np.mean(np.abs(samples + 0.6) < 0.2), np.mean(np.abs(samples - 0.6) < 0.2)
    between = np.mean(np.abs(samples) < 0.3)
    assert 0.35 < near_low < 0.65 and 0.35 < near_high < 0.65, (near_low, near_high)
    # DDPM's tails leave a little mass between the modes (measured here: 44.2% / 47.5% near the modes, 6.0% within 0.3
    # of 0; 4.5% after 2500 steps)
    assert near_low + near_high > 0.85 and between < 0.1, (near_low, near_high, between)
    assert abs(gaussian_mean) < 0.2  # a Gaussian policy puts its mean between the modes, where no demonstration is


def test_pretrained_weights_and_normalisation_load(pendulum_pretrained):
    folder, transitions = pendulum_pretrained
    pretrained = load_pretrained(folder)
    with pytest.warns(UserWarning, match="the env has no VecNormalize: it is wrapped in one"):
        model = NCDPO(
            "MlpDiffusionPolicy",
            "Pendulum-v1",
            pretrained=str(folder),
            n_steps=64,
            batch_size=32,
            n_epochs=2,
            critic_warmup_iters=1,
            policy_kwargs=dict(fixed_std=0.1),
            seed=0,
            device="cpu",
        )
    normalizer = model.get_vec_normalize_env()
    assert normalizer is not None and isinstance(normalizer.obs_rms, FrozenRunningMeanStd)
    mean_before = normalizer.obs_rms.mean.copy()
    np.testing.assert_array_equal(mean_before, pretrained.vec_normalize.obs_rms.mean)

    # The same loss as the pre-trained policy's (its prediction type: BC's default, epsilon)
    fresh_kwargs = dict(SMALL, prediction_type=pretrained.policy.chain.config.prediction_type)
    fresh = NCDPO("MlpDiffusionPolicy", "Pendulum-v1", policy_kwargs=fresh_kwargs, device="cpu", seed=0)
    loss = bc_loss(model.policy, transitions, normalizer)
    assert loss == pytest.approx(bc_loss(pretrained.policy, transitions, pretrained.vec_normalize), rel=1e-6)
    assert loss < 0.5 * bc_loss(fresh.policy, transitions, pretrained.vec_normalize)

    actor = {
        k: v.clone() for k, v in model.policy.state_dict().items() if not k.startswith(("value_net", "mlp_extractor.value"))
    }
    model.learn(64)  # one rollout, then a critic warm-up update: the actor must not move at all
    for key, value in actor.items():
        assert th.equal(value, model.policy.state_dict()[key]), key
    np.testing.assert_array_equal(normalizer.obs_rms.mean, mean_before)
    # The first rollout acted like the BC policy: its stored log-probs are those of the BC chain's mean (given the stored
    # noise) under the fine-tuning std.
    buffer = model.rollout_buffer
    obs = th.as_tensor(buffer.observations.reshape(64, -1))
    noises = th.as_tensor(buffer.noises.reshape(64, *model.policy.noise_shape))
    with th.no_grad():
        bc_mean = pretrained.policy.get_distribution(obs, noises).distribution.mean
    expected = th.distributions.Normal(bc_mean, 0.1).log_prob(th.as_tensor(buffer.actions.reshape(64, -1))).sum(-1)
    np.testing.assert_allclose(buffer.log_probs.ravel(), expected.numpy(), atol=1e-4)
    model.learn(64, reset_num_timesteps=False)  # after the warm-up the actor trains
    assert any(not th.equal(v, model.policy.state_dict()[k]) for k, v in actor.items() if k.startswith("denoiser"))


def test_finetune_settings_are_validated(pendulum_pretrained, tmp_path):
    folder, _ = pendulum_pretrained
    kwargs = pretrained_policy_kwargs(
        folder, dict(fixed_std=0.2, sampler="ddim", chain_noise_scale=0.5, deterministic_draws=8)
    )
    assert kwargs["fixed_std"] == 0.2 and kwargs["sampler"] == "ddim" and kwargs["n_denoising_steps"] == 5
    assert kwargs["chain_noise_scale"] == 0.5 and kwargs["deterministic_draws"] == 8
    with pytest.raises(ValueError, match=r"policy_kwargs\['n_denoising_steps'\]=10 differs from the pre-trained"):
        NCDPO("MlpDiffusionPolicy", "Pendulum-v1", pretrained=str(folder), policy_kwargs=dict(n_denoising_steps=10))
    with pytest.raises(ValueError, match=r"pretrained must be a folder written by `sb3-ncdpo pretrain`"):
        NCDPO("MlpDiffusionPolicy", "Pendulum-v1", pretrained=str(tmp_path))
    with pytest.raises(ValueError, match="critic_warmup_iters must be an int >= 0"):
        NCDPO("MlpDiffusionPolicy", "Pendulum-v1", critic_warmup_iters=-1)
    with pytest.raises(ValueError, match="bc_coef must be a float >= 0"):
        NCDPO("MlpDiffusionPolicy", "Pendulum-v1", bc_coef=-0.1)


def test_bc_regulariser_is_logged_and_survives_save_load(pendulum_pretrained, tmp_path):
    folder, _ = pendulum_pretrained
    model = NCDPO(
        "MlpDiffusionPolicy", "Pendulum-v1", pretrained=str(folder), n_steps=64, batch_size=32, n_epochs=3, bc_coef=1.0, seed=0
    )
    reference = {k: v.clone() for k, v in model.reference_policy.state_dict().items()}
    model.learn(128)
    assert model.logger.name_to_value["train/bc_kl"] > 0  # the policy moved away from the reference, which did not move
    for key, value in reference.items():
        assert th.equal(value, model.reference_policy.state_dict()[key]), key
    model.save(tmp_path / "model.zip")
    loaded = NCDPO.load(tmp_path / "model.zip", device="cpu")
    for key, value in reference.items():
        assert th.equal(value, loaded.reference_policy.state_dict()[key]), key


def test_gaussian_bc_starts_ppo_through_compare(tmp_path):
    """A Gaussian policy cloned with PPO's architecture starts SB3's PPO (no `pretrained` argument) via make_model."""
    from sb3_ncdpo.compare import make_model
    from sb3_ncdpo.zoo import load_hyperparams

    env = gym.make("Hopper-v5")
    rng = np.random.default_rng(0)
    data = Transitions(
        rng.normal(size=(256, 11)).astype(np.float32),
        rng.uniform(-1, 1, size=(256, 3)).astype(np.float32),
        np.arange(256) // 64,
        np.zeros(4),
    )
    kwargs = load_hyperparams("ppo_finetune", "Hopper-v5")["policy_kwargs"]
    result = behaviour_cloning(data, env.observation_space, env.action_space, "gaussian", kwargs, BCConfig(n_steps=20), False)
    save_pretrained(tmp_path / "gauss", result.policy, result.normalizer, {})
    model, _ = make_model("ppo", "Hopper-v5", seed=0, pretrained=str(tmp_path / "gauss"))
    for key, value in result.policy.state_dict().items():
        if key != "log_std":
            assert th.equal(value, model.policy.state_dict()[key]), key
    assert model.policy.log_std.detach().numpy() == pytest.approx(-2.0)  # PPO's fine-tuning std, not the file's
    assert isinstance(model.get_vec_normalize_env().obs_rms, FrozenRunningMeanStd)


def test_normalizer_matches_vecnormalize():
    """The saved normaliser is SB3's VecNormalize: normalize_obs is what the fine-tuning env applies."""
    rng = np.random.default_rng(0)
    obs = rng.normal(3.0, 2.0, size=(500, 4))
    space = spaces.Box(-np.inf, np.inf, (4,), np.float32)
    normalizer = observation_normalizer(obs, space, spaces.Box(-1, 1, (1,)))
    np.testing.assert_allclose(normalizer.normalize_obs(obs).mean(axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(normalizer.normalize_obs(obs).std(axis=0), 1.0, atol=1e-3)


def test_compare_fine_tunes_from_a_template_and_evaluates_step_zero(pendulum_pretrained, tmp_path):
    from sb3_ncdpo.compare import RunSpec, commands, load_rows, parse_args, run_one

    folder, _ = pendulum_pretrained
    template = str(folder.parent / "{policy}")
    (folder.parent / "diffusion").symlink_to(folder)  # the template names the folder by its policy kind
    spec = RunSpec("ncdpo", "Pendulum-v1", 0, 4096, 4096, 2, pretrained=template)
    run_one(spec, tmp_path)
    rows = load_rows(tmp_path)
    assert [r["timesteps"] for r in rows] == [0, 4096]  # the pre-trained policy, then after one (warm-up) iteration
    assert f'--pretrained "{template}"' in commands(tmp_path)[0]
    with pytest.raises(SystemExit):
        parse_args(
            ["--env", "Pendulum-v1", "--algos", "ncdpo", "--timesteps", "10", "--out", "x", "--pretrained", "/nowhere/{env}"]
        )
    with pytest.raises(SystemExit):  # PPO has no fine-tuning entry for Pendulum
        parse_args(["--env", "Pendulum-v1", "--algos", "ppo", "--timesteps", "10", "--out", "x", "--pretrained", template])


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample"])
def test_denoising_loss_is_zero_for_the_exact_prediction(prediction_type):
    """x_k = sqrt(abar_k) a + sqrt(1 - abar_k) eps at the sampled k, and the target is eps or a: an oracle that inverts
    that relation has zero loss; predicting the other quantity does not."""
    from sb3_ncdpo.common.policies import DiffusionActorCriticPolicy
    from sb3_ncdpo.pretrain.bc import denoising_loss

    policy = DiffusionActorCriticPolicy(
        spaces.Box(-np.inf, np.inf, (3,)),
        spaces.Box(-1.0, 1.0, (2,)),
        lambda _: 1e-3,
        n_denoising_steps=7,
        prediction_type=prediction_type,
        net_arch=dict(pi=[], vf=[8]),
    )
    actions, obs = th.rand(256, 2) * 2 - 1, th.randn(256, 3)
    alpha_bars = policy.chain.alpha_bars

    def oracle(noisy: th.Tensor, steps: th.Tensor, condition: th.Tensor) -> th.Tensor:
        alpha_bar = alpha_bars.to(noisy)[steps - 1].unsqueeze(-1)
        noise = (noisy - alpha_bar.sqrt() * actions) / (1 - alpha_bar).sqrt()
        return noise if prediction_type == "epsilon" else actions

    policy.denoiser.forward = oracle  # type: ignore[method-assign]
    assert denoising_loss(policy, obs, actions).item() < 1e-8
    policy.denoiser.forward = lambda noisy, steps, condition: noisy  # type: ignore[method-assign]
    assert denoising_loss(policy, obs, actions).item() > 0.1


def test_early_stopping_keeps_the_best_validation_weights():
    """Held-out episodes demonstrate the opposite action: the validation loss rises as the clone fits its training set."""
    rng = np.random.default_rng(0)
    n = 1000
    episode_ids = np.arange(n) // 50
    observations = rng.normal(0.0, 1.0, size=(n, 2)).astype(np.float32)
    _, val_index = split_episodes(episode_ids, 0.2, seed=0)
    actions = np.full((n, 1), 0.5, dtype=np.float32)
    actions[val_index] = -0.5
    data = Transitions(observations, actions, episode_ids, np.zeros(n // 50))
    spaces_ = spaces.Box(-np.inf, np.inf, (2,), np.float32), spaces.Box(-1.0, 1.0, (1,), np.float32)
    config = BCConfig(n_steps=3000, eval_every=20, val_fraction=0.2, patience=3, normalize=False, ema_decay=0.9)
    result = behaviour_cloning(data, *spaces_, "gaussian", {}, config, progress_bar=False)
    losses = [row["val_loss"] for row in result.history]
    best = int(np.argmin(losses))
    assert len(result.history) == best + 1 + 3 < 3000 // 20  # stopped three validations after the best one
    assert result.best_step == result.history[best]["step"]
    obs, target = th.as_tensor(observations[val_index]), th.as_tensor(actions[val_index])
    with th.no_grad():
        assert gaussian_loss(result.policy, obs, target).item() == pytest.approx(losses[best], rel=1e-6)
    without = behaviour_cloning(data, *spaces_, "gaussian", {}, BCConfig(**{**config.__dict__, "patience": 0}), False)
    assert len(without.history) == 3000 // 20 and without.best_step == 3000


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(patience=-1), "patience must be an int >= 0"),
        (dict(patience=2, val_fraction=0.0), "patience > 0 stops on the validation loss: it needs val_fraction > 0"),
    ],
)
def test_bad_early_stopping_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        BCConfig(**settings)
