"""Files saved by sb3-ncdpo 0.1.0 (commit 0df43c7: tests/fixtures/v0.1) load and predict what they predicted then."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sb3_ncdpo import DPPO, NCDPO
from sb3_ncdpo.common.pretrained import load_pretrained
from sb3_ncdpo.dppo.buffers import ChainRolloutBuffer
from sb3_ncdpo.dppo.denoising_mdp import DenoisingMDP
from sb3_ncdpo.ncdpo.buffers import NoiseRolloutBuffer

FIXTURES = Path(__file__).parent / "fixtures" / "v0.1"
SAVED = json.loads((FIXTURES / "predictions.json").read_text())


@pytest.mark.parametrize(
    "algo, name, observations, buffer_class",
    [
        (NCDPO, "ncdpo_pendulum", "observations", NoiseRolloutBuffer),
        (DPPO, "dppo_pendulum", "observations", ChainRolloutBuffer),
        (NCDPO, "ncdpo_cartpole", "observations_cartpole", NoiseRolloutBuffer),
    ],
)
def test_models_saved_by_0_1_load_and_predict_the_same(algo, name, observations, buffer_class):
    model = algo.load(FIXTURES / f"{name}.zip", device="cpu")
    # The classes named by their 0.1 module paths resolve to the classes of today.
    assert model.rollout_buffer_class is buffer_class
    if algo is DPPO:
        assert isinstance(model.denoising_mdp, DenoisingMDP) and model.bc_coef == 0.1
        assert model.policy.frozen_actor is not None
    obs = np.array(SAVED[observations], dtype=np.float32)
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], np.array(SAVED["predictions"][name]))
    # 0.1 clipped a Box action's final mean by default (0.2 does not): its files keep the chain they were saved with.
    assert model.policy.chain.config.x0_clip_final == (name != "ncdpo_cartpole")
    # ... and its update rules: one gradient norm over all parameters, the learning rate of its schedule.
    assert (model.clip_grad_per_group, model.desired_kl, model.lr_scale) == (False, None, 1.0)


def test_the_final_clip_and_update_rules_a_model_was_saved_with_are_kept(tmp_path):
    for policy_kwargs, rules in (({}, {}), (dict(x0_clip_final=True), dict(clip_grad_per_group=False, desired_kl=0.02))):
        model = NCDPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=32, policy_kwargs=policy_kwargs, **rules)
        model.save(tmp_path / "model.zip")
        loaded = NCDPO.load(tmp_path / "model.zip", device="cpu")
        assert loaded.policy.chain.config.x0_clip_final == policy_kwargs.get("x0_clip_final", False)
        assert (loaded.clip_grad_per_group, loaded.desired_kl) == (
            rules.get("clip_grad_per_group", True),
            rules.get("desired_kl"),
        )


def test_pretrained_folder_written_by_0_1_starts_fine_tuning_the_same(tmp_path):
    folder = tmp_path / "pretrained"
    shutil.copytree(FIXTURES / "pretrained_pendulum", folder)
    loaded = load_pretrained(folder, device="cpu")
    assert loaded.metadata["dataset_id"] == "fixture/random-v0" and loaded.vec_normalize is not None
    model = NCDPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=32, seed=0, pretrained=str(folder), device="cpu")
    obs = model.get_vec_normalize_env().normalize_obs(np.array(SAVED["observations"], dtype=np.float32))
    np.testing.assert_array_equal(
        model.predict(obs, deterministic=True)[0], np.array(SAVED["predictions"]["ncdpo_from_pretrained"])
    )
