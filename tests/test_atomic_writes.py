"""Files the package writes are written atomically; nothing is overwritten by surprise; loaded models keep their chain."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from kill_harness import kill_while_saving

from sb3_ncdpo import NCDPO
from sb3_ncdpo.cli import main
from sb3_ncdpo.common import atomic
from sb3_ncdpo.common.atomic import atomic_file, atomic_folder
from sb3_ncdpo.pretrain import load_pretrained, save_pretrained

FIXTURES = Path(__file__).parent / "fixtures" / "v0.1"
SAVED_KWARGS = dict(n_denoising_steps=3, denoiser_hidden_sizes=[16], net_arch=dict(pi=[16], vf=[16]), time_embed_dim=4)


def test_a_failed_write_leaves_the_previous_file_and_no_temporary_file(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("good")
    with pytest.raises(RuntimeError, match="interrupted"), atomic_file(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "good" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
    target.chmod(0o640)
    with atomic_file(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".tmp" and tmp.name.startswith(".a.txt.tmp-")
        tmp.write_text("new")
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
    assert target.stat().st_mode & 0o777 == 0o640  # the replaced file's permissions are kept
    with atomic_file(tmp_path / "b.txt") as tmp:
        tmp.write_text("b")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o666 & ~umask  # a new file's: as open() would make it


@pytest.mark.parametrize("exchange", [True, False])
def test_a_folder_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch, exchange):
    if not exchange:  # systems without renameat2: two renames
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    target = tmp_path / "folder"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_folder(target) as tmp:
        (tmp / "new.txt").write_text("new")
        raise RuntimeError("interrupted")
    assert [p.name for p in target.iterdir()] == ["old.txt"] and [p.name for p in tmp_path.iterdir()] == ["folder"]
    with atomic_folder(target) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.txt"] and [p.name for p in tmp_path.iterdir()] == ["folder"]
    with atomic_folder(tmp_path / "fresh" / "inner") as tmp:
        (tmp / "x").write_text("x")
    assert (tmp_path / "fresh" / "inner" / "x").read_text() == "x"


def test_model_save_is_atomic_and_keeps_sb3_s_path_rules(tmp_path):
    model = NCDPO("MlpPolicy", "Pendulum-v1", n_steps=16, batch_size=16, policy_kwargs=SAVED_KWARGS, seed=0)
    model.save(tmp_path / "no_suffix")  # SB3 adds .zip
    model.save(str(tmp_path / "sub" / "model.zip"))  # and creates the folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["no_suffix.zip", "sub"]
    obs = np.zeros((1, 3), np.float32)
    expected = model.predict(obs, deterministic=True)[0]
    for path in (tmp_path / "no_suffix.zip", tmp_path / "sub" / "model.zip"):
        np.testing.assert_array_equal(NCDPO.load(path).predict(obs, deterministic=True)[0], expected)
    model.policy.save(str(tmp_path / "policy.pth"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["no_suffix.zip", "policy.pth", "sub"]


@pytest.mark.parametrize("kind", ["model", "pretrained"])
def test_a_kill_while_saving_over_a_good_file_never_loses_it(tmp_path, kind):
    """Real processes killed at random moments while they save over a complete file (more tries: the slow test)."""
    assert kill_while_saving(kind, tmp_path, tries=2, seed=1) == (2, 0)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["model", "pretrained"])
def test_many_kills_while_saving_never_lose_a_file(tmp_path, kind):
    assert kill_while_saving(kind, tmp_path, tries=40, seed=2) == (40, 0)


def test_a_pretrained_folder_is_not_overwritten_by_surprise(tmp_path, capsys):
    folder = tmp_path / "bc"
    shutil.copytree(FIXTURES / "pretrained_pendulum", folder)
    policy = load_pretrained(folder).policy
    with pytest.raises(FileExistsError, match=r"already exists and is not empty: .* replace it with overwrite=True"):
        save_pretrained(folder, policy, None, {"dataset_id": "other"})
    assert load_pretrained(folder).metadata["dataset_id"] == "fixture/random-v0"
    save_pretrained(folder, policy, None, {"dataset_id": "other"}, overwrite=True)
    assert load_pretrained(folder).metadata["dataset_id"] == "other" and load_pretrained(folder).vec_normalize is None
    (tmp_path / "empty").mkdir()
    save_pretrained(tmp_path / "empty", policy, None, {})  # an empty folder holds nothing to lose
    # The command refuses before it reads the dataset (which does not exist here).
    with pytest.raises(SystemExit):
        main(["pretrain", "--dataset", "nowhere/none-v0", "--out", str(folder)])
    assert "--out: " in (err := capsys.readouterr().err) and "replace it with --overwrite" in err


def test_loaded_models_keep_their_chain_and_networks():
    path = FIXTURES / "ncdpo_pendulum.zip"
    with pytest.raises(ValueError, match=r"would change the loaded policy's n_denoising_steps: 3 -> 5: a loaded model keeps"):
        NCDPO.load(path, custom_objects={"policy_kwargs": dict(SAVED_KWARGS, n_denoising_steps=5)})
    with pytest.raises(ValueError, match=r"denoiser_hidden_sizes: \[16\] -> \(128, 128\)"):  # a left-out setting changes too
        NCDPO.load(path, custom_objects={"policy_kwargs": {}})
    with pytest.raises(ValueError, match=r"^policy_kwargs would change the loaded policy's time_embed_dim: 4 -> 8"):
        NCDPO.load(path, policy_kwargs=dict(SAVED_KWARGS, time_embed_dim=8))
    assert NCDPO.load(path, policy_kwargs=dict(SAVED_KWARGS, min_std=0.05)).policy.min_std == 0.05
    # the fine-tuning settings may change, as from a pre-trained folder
    model = NCDPO.load(path, custom_objects={"policy_kwargs": dict(SAVED_KWARGS, fixed_std=0.2, sampler="ddim")})
    assert model.policy.fixed_std == 0.2 and model.policy.chain.config.sampler == "ddim"


def test_collect_demos_publishes_a_dataset_whole_or_not_at_all(tmp_path, monkeypatch):
    import minari
    from stable_baselines3 import PPO

    from sb3_ncdpo.pretrain.demos import collect_demos

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    PPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=64, seed=0).save(tmp_path / "expert.zip")
    create = minari.DataCollector.create_dataset

    def create_then_fail(self, **kwargs):
        create(self, **kwargs)  # the dataset is complete in the staging folder...
        raise RuntimeError("killed")  # ...and the process dies before it is published

    monkeypatch.setattr(minari.DataCollector, "create_dataset", create_then_fail)
    with pytest.raises(RuntimeError, match="killed"):
        collect_demos(tmp_path / "expert.zip", "ppo", "Pendulum-v1", "test/atomic-v0", n_episodes=1, seed=0)
    assert "test/atomic-v0" not in minari.list_local_datasets()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["datasets", "expert.zip"]  # no staging folder left
    monkeypatch.setattr(minari.DataCollector, "create_dataset", create)
    dataset = collect_demos(tmp_path / "expert.zip", "ppo", "Pendulum-v1", "test/atomic-v0", n_episodes=1, seed=0)
    assert dataset.total_episodes == 1 and "test/atomic-v0" in minari.list_local_datasets()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["datasets", "expert.zip"]


def test_collect_demos_works_with_a_relative_datasets_folder(tmp_path, monkeypatch):
    import minari
    from stable_baselines3 import PPO

    from sb3_ncdpo.pretrain.demos import collect_demos

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MINARI_DATASETS_PATH", "out/minari")
    PPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=64, seed=0).save(tmp_path / "expert.zip")
    dataset = collect_demos(tmp_path / "expert.zip", "ppo", "Pendulum-v1", "test/relative-v0", n_episodes=1, seed=0)
    assert dataset.total_episodes == 1 and "test/relative-v0" in minari.list_local_datasets()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["minari"]  # published there, no staging folder left
