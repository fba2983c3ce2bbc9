"""Run-directory guards and checkpoint save/restore."""

import json
import os
import shutil

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


# ------------------------------------------------------------ integrity ---


def _three_steps(tmp_path):
  """A run dir with checkpoints 1, 2, 3 of {'w': step * ones}; the
  abstract state to restore into."""
  state = {"w": jnp.ones((64,)), "b": jnp.zeros((3, 3))}
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=5, every_steps=1)
  for step in (1, 2, 3):
    ckpt.maybe_save(step, jax.tree.map(lambda x: x + step, state))
  ckpt.close()
  abstract = jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
  )
  return tmp_path / "checkpoints", abstract


def _files(step_dir):
  return sorted(p for p in step_dir.rglob("*") if p.is_file())


def _truncate(path):
  path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _named(name, change):
  def damage(step_dir):
    paths = [p for p in _files(step_dir) if p.name == name]
    assert paths, name
    for p in paths:
      change(p)

  return damage


# What a failing disk or a half-copied directory leaves (each one makes
# orbax's restore fail; many other single files are not needed to restore).
DAMAGE = {
  "garbled array index": _named(
    "manifest.ocdbt", lambda p: p.write_bytes(b"\x00garbage")
  ),
  "truncated array index": _named("manifest.ocdbt", _truncate),
  "truncated tree metadata": _named("_METADATA", _truncate),
  "missing item": lambda d: shutil.rmtree(d / "default"),
  "emptied": lambda d: [p.unlink() for p in _files(d)],
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_newest_checkpoint_falls_back(tmp_path, capsys, damage):
  ckpts, abstract = _three_steps(tmp_path)
  DAMAGE[damage](ckpts / "3")
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=5, every_steps=1)
  state, step = ckpt.restore_newest_intact(abstract)
  assert step == 2
  np.testing.assert_array_equal(state["w"], np.full((64,), 3.0))
  out = capsys.readouterr().out
  assert "warning: checkpoint 3 in" in out and "resumed from step 2" in out
  # Kept for inspection, out of the way of keep-N and the next saves.
  assert (tmp_path / "checkpoints_damaged" / "3").is_dir()
  assert ckpt.latest_step() == 2
  assert ckpt.maybe_save(3, state)
  ckpt.close()


def test_no_intact_checkpoint_is_one_error_that_changes_nothing(tmp_path):
  ckpts, abstract = _three_steps(tmp_path)
  DAMAGE["truncated array index"](ckpts / "3")
  DAMAGE["truncated tree metadata"](ckpts / "2")
  DAMAGE["emptied"](ckpts / "1")
  before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=5, every_steps=1)
  with pytest.raises(UserError, match="no checkpoint in .* can be restored"):
    ckpt.restore_newest_intact(abstract)
  ckpt.close()
  after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
  assert after == before


def test_no_checkpoint_is_none(tmp_path):
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=5, every_steps=1)
  assert ckpt.restore_newest_intact({"w": jnp.ones(3)}) is None
  ckpt.close()


def test_a_kill_during_a_write_leaves_the_previous_checkpoints(tmp_path):
  ckpts, abstract = _three_steps(tmp_path)
  # What a write interrupted by kill -9 leaves: orbax's temporary directory.
  os.rename(ckpts / "3", ckpts / "3.orbax-checkpoint-tmp-1700000000")
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=5, every_steps=1)
  state, step = ckpt.restore_newest_intact(abstract)
  assert step == 2
  ckpt.close()


def test_a_failed_write_says_the_earlier_checkpoints_are_intact(
  tmp_path, monkeypatch
):
  _, abstract = _three_steps(tmp_path)
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=5, every_steps=1)
  state, _ = ckpt.restore_newest_intact(abstract)

  def full(*args, **kwargs):
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(ckpt._manager, "save", full)
  with pytest.raises(UserError, match=r"writing the checkpoint of step 4 .*"
                     r"No space left on device.*intact \(newest: step 3\)"):  # fmt: skip
    ckpt.maybe_save(4, state)
  monkeypatch.undo()
  ckpt.close()
  again = checkpointing.Checkpointer(str(tmp_path), keep=5, every_steps=1)
  assert again.restore_newest_intact(abstract)[1] == 3
  again.close()
