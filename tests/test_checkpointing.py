"""Run-directory guards and checkpoint save/restore."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simclr_jax import checkpointing
from simclr_jax.errors import UserError


def test_check_workdir_accepts_new_and_existing_dirs(tmp_path):
  checkpointing.check_workdir(str(tmp_path / "a" / "b"))
  checkpointing.check_workdir(str(tmp_path))
  assert not (tmp_path / "a").exists()  # checking creates nothing


def test_check_workdir_rejects_files(tmp_path):
  f = tmp_path / "f"
  f.write_text("x")
  with pytest.raises(UserError, match="is a file"):
    checkpointing.check_workdir(str(f))
  with pytest.raises(UserError, match="is a file"):
    checkpointing.check_workdir(str(f / "run"))


def test_compatibility_guard(tmp_path):
  sig = {"depth": 18, "width_multiplier": 1.0}
  checkpointing.check_compatible(str(tmp_path), sig)  # nothing stored yet
  checkpointing.write_run_config(str(tmp_path), json.dumps({"a": 1}), sig)
  checkpointing.check_compatible(str(tmp_path), sig)
  with pytest.raises(UserError, match="depth: checkpoint 18 vs config 50"):
    checkpointing.check_compatible(str(tmp_path), dict(sig, depth=50))
  # A resumed run keeps the original record.
  checkpointing.write_run_config(
    str(tmp_path), json.dumps({"a": 2}), dict(sig, depth=50)
  )
  stored = json.loads((tmp_path / checkpointing.RUN_CONFIG).read_text())
  assert stored["config"] == {"a": 1} and stored["model_signature"] == sig


def test_corrupt_run_config_is_a_user_error(tmp_path):
  (tmp_path / checkpointing.RUN_CONFIG).write_text("{not json")
  with pytest.raises(UserError, match="unreadable"):
    checkpointing.check_compatible(str(tmp_path), {"depth": 18})


def test_save_restore_keep_n_and_shape_mismatch(tmp_path):
  state = {"w": jnp.arange(4.0), "step": jnp.array(0, jnp.int32)}
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=2, every_steps=2)
  for step in range(1, 7):
    state = {"w": state["w"] + 1, "step": jnp.array(step, jnp.int32)}
    ckpt.maybe_save(step, state)
  ckpt.close()
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["4", "6"]
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=2, every_steps=2)
  abstract = jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
  )
  restored = ckpt.restore(abstract)
  np.testing.assert_array_equal(restored["w"], np.arange(4.0) + 6)
  assert int(restored["step"]) == 6
  bad = dict(
    abstract,
    w=jax.ShapeDtypeStruct((5,), jnp.float32, sharding=state["w"].sharding),
  )
  with pytest.raises(UserError, match="does not fit this config"):
    ckpt.restore(bad)
  ckpt.close()


def test_check_workdir_rejects_unwritable_dirs(tmp_path, monkeypatch):
  # Root ignores permission bits, so simulate a directory we may not write.
  monkeypatch.setattr(checkpointing.os, "access", lambda path, mode: False)
  with pytest.raises(UserError, match="not readable and writable"):
    checkpointing.check_workdir(str(tmp_path / "run"))


def _steps_on_disk(workdir) -> list[str]:
  return sorted(os.listdir(workdir / "checkpoints"), key=int)


@pytest.mark.parametrize("keep", [1, 3])
def test_keep_n_leaves_exactly_the_newest_steps(tmp_path, keep):
  """keep_checkpoints=N: after more than N saves exactly the newest N steps
  remain, in this session and in a resumed one, and restore takes the
  newest."""

  def state(step):
    return {
      "w": jnp.full((3,), float(step)),
      "step": jnp.array(step, jnp.int32),
    }

  abstract = jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
    state(0),
  )
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=keep, every_steps=1)
  for step in range(1, keep + 3):
    assert ckpt.maybe_save(step, state(step))
  ckpt.close()
  last = keep + 2
  assert _steps_on_disk(tmp_path) == [
    str(s) for s in range(last - keep + 1, last + 1)
  ]

  # A resumed run: restores the newest, then prunes the older session's too.
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=keep, every_steps=1)
  assert ckpt.latest_step() == last
  restored = ckpt.restore(abstract)
  assert int(restored["step"]) == last
  np.testing.assert_array_equal(restored["w"], np.full((3,), float(last)))
  for step in range(last + 1, last + keep + 1):
    ckpt.maybe_save(step, state(step))
  ckpt.close()
  newest = last + keep
  assert _steps_on_disk(tmp_path) == [
    str(s) for s in range(newest - keep + 1, newest + 1)
  ]
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=keep, every_steps=1)
  try:
    assert int(ckpt.restore(abstract)["step"]) == newest
  finally:
    ckpt.close()


def test_resolve_path(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  assert checkpointing.resolve_path("runs/a") == str(tmp_path / "runs" / "a")
  assert checkpointing.resolve_path("./runs/../b/") == str(tmp_path / "b")
  assert checkpointing.resolve_path("~/r") == str(tmp_path / "home" / "r")
  assert checkpointing.resolve_path("/abs/x") == "/abs/x"
  # Unset stays unset; URLs (gs://...) are not local paths.
  assert checkpointing.resolve_path("") == ""
  assert checkpointing.resolve_path("gs://bucket/run") == "gs://bucket/run"
