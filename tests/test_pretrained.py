"""Loading a pretraining run directory: config, architecture check, restore."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from simclr_jax import checkpointing
from simclr_jax import configlib
from simclr_jax import pretrained
from simclr_jax import pretrain
from simclr_jax.errors import UserError
from helpers import snapshot, tiny_run_config


@pytest.fixture(scope="module")
def run_dir(tiny_run):
  return tiny_run


def _copy(run_dir, tmp_path):
  target = str(tmp_path / "copy")
  shutil.copytree(run_dir, target)
  return target


def test_load_run_config_round_trips(run_dir):
  config = pretrained.load_run_config(run_dir)
  assert config.to_dict() == tiny_run_config().to_dict()
  assert pretrained.run_signature(run_dir) == configlib.model_signature(
    tiny_run_config()
  )


def test_old_run_without_new_keys_loads_with_defaults(run_dir, tmp_path):
  copy = _copy(run_dir, tmp_path)
  path = os.path.join(copy, checkpointing.RUN_CONFIG)
  with open(path) as f:
    payload = json.load(f)
  del payload["config"]["loss"]["chunk_size"]  # a key added later
  payload["config"]["model"]["retired_option"] = 1  # a key removed since
  with open(path, "w") as f:
    json.dump(payload, f)
  config = pretrained.load_run_config(copy)
  assert config.loss.chunk_size == 0
  assert "retired_option" not in config.model
  assert config.augment.crop_area == (0.08, 1.0)  # JSON list back to tuple


def test_load_pretrained_matches_checkpoint_and_writes_nothing(run_dir):
  before = snapshot(run_dir)
  loaded = pretrained.load_pretrained(run_dir)
  assert snapshot(run_dir) == before
  assert loaded.step == 2
  assert loaded.num_classes == 10 and loaded.image_size == 16
  for leaf in jax.tree.leaves(loaded.variables):
    assert leaf.sharding.is_fully_replicated
    assert len(leaf.sharding.device_set) == jax.device_count()

  setup = pretrain.TrainSetup(tiny_run_config())
  ckpt = checkpointing.Checkpointer(run_dir, keep=10, every_steps=1)
  try:
    state = jax.device_get(ckpt.restore(setup.abstract_state))
  finally:
    ckpt.close()
  expected = {"params": state.params, "batch_stats": state.batch_stats}
  got = jax.device_get(loaded.variables)
  assert jax.tree.structure(got) == jax.tree.structure(expected)
  jax.tree.map(np.testing.assert_array_equal, got, expected)

  images = np.random.default_rng(0).random((2, 16, 16, 3), np.float32)
  out = loaded.model.apply(got, images, train=False)
  assert out["representation"].shape == (2, 64)
  assert out["projection"].shape == (2, 16)


def test_expected_architecture_mismatch_names_keys(run_dir):
  with pytest.raises(UserError) as e:
    pretrained.load_pretrained(
      run_dir, expect={"depth": 50, "width_multiplier": 0.125}
    )
  message = str(e.value)
  assert "checkpoint has model.depth=18, config asks for 50" in message
  assert "width_multiplier" not in message


def test_check_architecture_lists_every_difference():
  run = configlib.model_signature(tiny_run_config())
  wanted = dict(run, depth=50, image_size=32)
  with pytest.raises(
    UserError,
    match="model.depth=18, config asks for 50; "
    "checkpoint has data.image_size=16, config asks for 32",
  ):
    pretrained.check_architecture(run, wanted)
  pretrained.check_architecture(run, dict(run))  # equal: no error


@pytest.mark.parametrize(
  "mutate, fragment",
  [
    (lambda d: shutil.rmtree(d), "does not exist"),
    (
      lambda d: os.remove(os.path.join(d, checkpointing.RUN_CONFIG)),
      "not a simclr_jax run directory",
    ),
    (
      lambda d: shutil.rmtree(os.path.join(d, "checkpoints")),
      "has no checkpoint",
    ),
  ],
)
def test_not_a_run_dir(run_dir, tmp_path, mutate, fragment):
  copy = _copy(run_dir, tmp_path)
  mutate(copy)
  with pytest.raises(UserError, match=fragment):
    pretrained.load_pretrained(copy)
  if fragment == "has no checkpoint":  # and it must not create one
    assert not os.path.exists(os.path.join(copy, "checkpoints"))


def test_missing_step_lists_available(run_dir):
  with pytest.raises(
    UserError, match="no checkpoint for step 7; available steps: 2"
  ):
    pretrained.load_pretrained(run_dir, step=7)


def test_relative_run_dir_loads(run_dir, tmp_path, monkeypatch):
  # Orbax refuses relative paths ("Checkpoint path should be absolute").
  monkeypatch.chdir(tmp_path)
  relative = os.path.relpath(run_dir)
  assert not os.path.isabs(relative) and relative.startswith("..")
  assert pretrained.load_run_config(relative).to_dict() == (
    tiny_run_config().to_dict()
  )
  loaded = pretrained.load_pretrained(relative)
  assert loaded.step == 2 and loaded.num_classes == 10


def test_home_run_dir_loads(run_dir, monkeypatch):
  # `--config.init_checkpoint=~/run`: no shell expands a `~` after `=`.
  monkeypatch.setenv("HOME", os.path.dirname(run_dir))
  home = os.path.join("~", os.path.basename(run_dir))
  assert pretrained.run_signature(home) == configlib.model_signature(
    tiny_run_config()
  )
  assert pretrained.load_pretrained(home).step == 2


def _damage(step_dir):
  for dirpath, _, files in os.walk(os.path.join(step_dir, "default")):
    for name in files:
      if os.path.basename(dirpath) == "d":  # the array chunks
        with open(os.path.join(dirpath, name), "wb") as f:
          f.write(b"xx")


def test_damaged_only_checkpoint_is_a_user_error(run_dir, tmp_path):
  copy = _copy(run_dir, tmp_path)
  _damage(os.path.join(copy, "checkpoints", "2"))
  with pytest.raises(UserError, match="checkpoints/2 cannot be read") as e:
    pretrained.load_pretrained(copy)
  message = str(e.value)
  assert "damaged or incomplete" in message
  assert "only checkpoint" in message and "new --workdir" in message
  assert "another step" not in message and "step=N" not in message


def test_damaged_checkpoint_advice_names_the_other_steps(run_dir, tmp_path):
  copy = _copy(run_dir, tmp_path)
  ckpts = os.path.join(copy, "checkpoints")
  shutil.copytree(os.path.join(ckpts, "2"), os.path.join(ckpts, "1"))
  _damage(os.path.join(ckpts, "2"))
  with pytest.raises(UserError, match="checkpoints/2 cannot be read") as e:
    pretrained.load_pretrained(copy)
  message = str(e.value)
  assert "other checkpoints of this run: step 1:" in message
  assert "step=N" in message and "--step N" in message
  assert f"move {ckpts}/2 out of the run directory" in message
  # Both ways out that the message gives work.
  assert pretrained.load_pretrained(copy, step=1).num_classes == 10
  shutil.move(os.path.join(ckpts, "2"), os.path.join(tmp_path, "moved"))
  assert pretrained.load_pretrained(copy).num_classes == 10


def test_unreadable_for_permissions_says_so(run_dir, monkeypatch):
  # Root reads everything, so the OS error is simulated.
  def denied(step_dir):
    raise PermissionError(13, "Permission denied", step_dir)

  monkeypatch.setattr(pretrained, "_num_classes", denied)
  with pytest.raises(
    UserError,
    match="cannot be read .*Permission denied.*"
    "make its files readable by this user",
  ):
    pretrained.load_pretrained(run_dir)


def test_checkpoint_of_another_architecture_is_refused(run_dir, tmp_path):
  copy = _copy(run_dir, tmp_path)
  path = os.path.join(copy, checkpointing.RUN_CONFIG)
  with open(path) as f:
    payload = json.load(f)
  payload["config"]["model"]["width_multiplier"] = 0.25
  payload["model_signature"]["width_multiplier"] = 0.25
  with open(path, "w") as f:
    json.dump(payload, f)
  with pytest.raises(UserError, match="cannot be restored into the model") as e:
    pretrained.load_pretrained(copy)
  assert "put back the run_config.json this run wrote" in str(e.value)
  assert "another step" not in str(e.value)
  payload["model_signature"]["width_multiplier"] = 0.125
  with open(path, "w") as f:
    json.dump(payload, f)
  with pytest.raises(UserError, match="contradicts itself .*width_multiplier"):
    pretrained.load_pretrained(copy)
