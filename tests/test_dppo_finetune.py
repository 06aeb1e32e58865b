"""DPPO from a pre-trained folder (the format of ``sb3-ncdpo pretrain``): weights, frozen early steps, warm-up, BC, CLI."""

import os

import gymnasium as gym
import numpy as np
import pytest
import torch as th
import yaml
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

from sb3_ncdpo import DPPO
from sb3_ncdpo.cli import main
from sb3_ncdpo.common.pretrained import FrozenRunningMeanStd, load_pretrained, save_pretrained
from sb3_ncdpo.compare import make_model
from sb3_ncdpo.pretrain.bc import BCConfig, behaviour_cloning
from sb3_ncdpo.pretrain.demos import Transitions
from sb3_ncdpo.toy_envs import TargetEnv
from sb3_ncdpo.zoo import load_hyperparams

BC_KWARGS = dict(n_denoising_steps=4, denoiser_hidden_sizes=[64, 64], net_arch=dict(pi=[16], vf=[32]))


def pretrain(folder, env: gym.Env, policy_kwargs: dict, n: int = 512, n_steps: int = 300, seed: int = 0):
    """Clone the target task's optimal actions (or random ones for other envs) into a pre-trained folder."""
    rng = np.random.default_rng(seed)
    observations = rng.uniform(-1, 1, (n, *env.observation_space.shape)).astype(np.float32)
    if isinstance(env, TargetEnv):
        actions = env.target(observations)
    else:
        actions = rng.uniform(-1, 1, (n, *env.action_space.shape)).astype(np.float32)
    data = Transitions(observations, actions, np.arange(n) // 8, np.zeros(n // 8))
    config = BCConfig(n_steps=n_steps, batch_size=64, eval_every=n_steps, seed=seed)
    result = behaviour_cloning(data, env.observation_space, env.action_space, "diffusion", policy_kwargs, config, False)
    return save_pretrained(folder, result.policy, result.normalizer, {"dataset_id": "synthetic"})


@pytest.fixture(scope="module")
def target_pretrained(tmp_path_factory):
    return pretrain(tmp_path_factory.mktemp("pretrained") / "target", TargetEnv(), BC_KWARGS, n_steps=600)


def target_env():
    return VecNormalize(make_vec_env(TargetEnv, n_envs=2, seed=0), gamma=0.0)


def make_dppo(folder, **kwargs) -> DPPO:
    kwargs = {"n_steps": 32, "batch_size": 64, "n_epochs": 2, "gamma": 0.0, "seed": 0, **kwargs}
    return DPPO("MlpDiffusionPolicy", target_env(), pretrained=str(folder), **kwargs)


def test_starts_from_the_pretrained_policy(target_pretrained):
    pretrained = load_pretrained(target_pretrained)
    model = make_dppo(target_pretrained, policy_kwargs=dict(n_finetuned_steps=2), critic_warmup_iters=1)
    policy = model.policy
    # The file's architecture and chain, DPPO's fine-tuning stds over the file's, n_finetuned_steps from the user
    assert policy.chain.n_steps == 4 and policy.n_finetuned_steps == 2
    assert (policy.fixed_std, policy.chain.config.min_step_std, policy.chain.config.noise_clip) == (0.1, 0.1, 3.0)
    saved = pretrained.policy.state_dict()
    for name, value in policy.state_dict().items():
        if name.startswith("frozen_actor."):
            # The frozen early steps are the pre-trained actor
            module, key = name.split(".")[1], name.split(".", 2)[2]
            source = {"features_extractor": "pi_features_extractor", "policy_net": "mlp_extractor.policy_net"}
            assert th.equal(value, saved[f"{source.get(module, module)}.{key}"]), name
        elif name != "log_std":
            assert th.equal(value, saved[name]), name
    assert isinstance(model.get_vec_normalize_env().obs_rms, FrozenRunningMeanStd)
    # Deterministic actions (zero noise: the std settings play no part) are the pre-trained policy's
    raw_obs = np.random.default_rng(1).uniform(-1, 1, (16, 2)).astype(np.float32)
    obs = pretrained.vec_normalize.normalize_obs(raw_obs) if pretrained.vec_normalize is not None else raw_obs
    actions, _ = pretrained.policy.predict(obs, deterministic=True)
    np.testing.assert_array_equal(policy.predict(obs, deterministic=True)[0], actions)
    # ... and they are good ones: behaviour cloning of the optimal actions solved the task
    assert -np.sum((actions - TargetEnv().target(raw_obs)) ** 2, axis=1).mean() > -0.05

    actor = {k: v.clone() for k, v in policy.state_dict().items() if not k.startswith(("value_net", "mlp_extractor.value"))}
    critic = policy.value_net.weight.clone()
    model.learn(64)  # the first iteration is the critic warm-up: the actor does not move
    assert model.logger.name_to_value["train/critic_warmup"] == 1
    assert all(th.equal(v, policy.state_dict()[k]) for k, v in actor.items())
    assert not th.equal(critic, policy.value_net.weight)
    model.learn(64, reset_num_timesteps=False)  # then the trained steps train, the frozen ones stay
    assert not th.equal(actor["denoiser.output.weight"], policy.denoiser.output.weight)
    assert all(th.equal(v, policy.state_dict()[k]) for k, v in actor.items() if k.startswith("frozen_actor."))


def test_finetune_settings_are_validated(target_pretrained, tmp_path):
    with pytest.raises(ValueError, match=r"policy_kwargs\['n_denoising_steps'\]=10 differs from the pre-trained"):
        make_dppo(target_pretrained, policy_kwargs=dict(n_denoising_steps=10))
    with pytest.raises(ValueError, match=r"n_finetuned_steps must be an int in \[1, n_denoising_steps=4\]"):
        make_dppo(target_pretrained, policy_kwargs=dict(n_finetuned_steps=5))
    with pytest.raises(ValueError, match="pretrained must be a folder written by `sb3-ncdpo pretrain`"):
        make_dppo(tmp_path)
    with pytest.raises(ValueError, match="critic_warmup_iters must be an int >= 0"):
        DPPO("MlpPolicy", "Pendulum-v1", critic_warmup_iters=-1)
    with pytest.raises(ValueError, match="bc_coef must be a float >= 0"):
        DPPO("MlpPolicy", "Pendulum-v1", bc_coef=-0.1)


def test_bc_regulariser_is_logged_and_survives_save_load(target_pretrained, tmp_path):
    model = make_dppo(target_pretrained, bc_coef=1.0, learning_rate=1e-3)
    reference = {k: v.clone() for k, v in model.reference_policy.state_dict().items()}
    model.learn(64)
    assert model.logger.name_to_value["train/bc_kl"] > 0  # the policy moved away from the reference, which did not move
    assert all(th.equal(v, model.reference_policy.state_dict()[k]) for k, v in reference.items())
    model.save(tmp_path / "model.zip")
    loaded = DPPO.load(tmp_path / "model.zip", device="cpu")
    assert loaded.bc_coef == 1.0 and loaded.pretrained == str(target_pretrained)
    assert all(th.equal(v, loaded.reference_policy.state_dict()[k]) for k, v in reference.items())


def test_finetune_through_the_cli(tmp_path):
    """`sb3-ncdpo train --algo dppo --pretrained` reads dppo_finetune.yml: the last 5 steps train, the 6th is frozen."""
    folder = pretrain(tmp_path / "pendulum", gym.make("Pendulum-v1"), dict(BC_KWARGS, n_denoising_steps=6), n_steps=20)
    logs = tmp_path / "logs"
    tiny = ["-params", "n_steps:32", "batch_size:64", "n_epochs:1"]
    args = ["--algo", "dppo", "--env", "Pendulum-v1", "--pretrained", str(folder), "-n", "64", "--seed", "0"]
    main(["train", *args, *tiny, "--num-threads", "1", "-f", str(logs), "--eval-freq", "-1"])
    run = logs / "dppo" / "Pendulum-v1_1"
    with open(run / "Pendulum-v1" / "config.yml") as file:
        config = dict(yaml.unsafe_load(file))
    assert config["critic_warmup_iters"] == 2 and config["clip_range"] == 0.01  # dppo_finetune.yml
    assert os.path.exists(run / "Pendulum-v1" / "vecnormalize.pkl")
    model = DPPO.load(run / "Pendulum-v1.zip")
    assert model.policy.n_finetuned_steps == 5 and model.policy.chain.n_steps == 6
    saved = load_pretrained(folder).policy.denoiser.state_dict()
    for name, value in model.policy.frozen_actor.denoiser.state_dict().items():
        assert th.equal(value, saved[name]), name
    # `sb3-ncdpo compare --pretrained` builds its runs the same way
    compared, _ = make_model("dppo", "Pendulum-v1", seed=0, pretrained=str(folder))
    assert compared.pretrained == str(folder) and compared.critic_warmup_iters == 2
    assert th.equal(compared.policy.frozen_actor.denoiser.output.weight, saved["output.weight"])


def _finetune_entries() -> list[str]:
    """The entries of dppo_finetune.yml, one per distinct entry (the Meta-World ids share one through YAML aliases)."""
    from sb3_ncdpo.zoo import hyperparams_file

    with open(hyperparams_file("dppo_finetune")) as file:
        table = yaml.safe_load(file)
    first_of = {}
    for env_id, entry in table.items():
        first_of.setdefault(id(entry), env_id)  # an alias loads as the same dict
    return list(first_of.values())


@pytest.mark.parametrize("env_id", _finetune_entries())
def test_every_finetune_entry_builds_and_trains(tmp_path, env_id):
    """Each dppo_finetune.yml entry as written, from a (barely) pre-trained K = 10 policy: no typo can hide in it."""
    folder = pretrain(tmp_path / env_id, gym.make(env_id), dict(n_denoising_steps=10), n=64, n_steps=2)
    model, _ = make_model("dppo", env_id, seed=0, pretrained=str(folder), algo_kwargs=dict(n_epochs=1))
    # K' as the entry writes it (DPPO's Gym setting: 5 of 10), or every step where it sets none (Meta-World's, tuned)
    written = load_hyperparams("dppo_finetune", env_id).get("policy_kwargs", {}).get("n_finetuned_steps")
    assert model.policy.trained_steps == (written or 10) and model.critic_warmup_iters == 2
    model.learn(model.n_steps * model.n_envs)
    assert np.isfinite(model.logger.name_to_value["train/value_loss"])
