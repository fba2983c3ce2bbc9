"""Checkpoints of the downstream trainers (`training/resume.py`): a linear
evaluation or fine-tuning stopped by a signal resumes to the same result as
an uninterrupted one; a damaged newest checkpoint falls back; a workdir that
holds another run is refused before anything is written."""

import functools
import json
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from simclr_jax import data as data_lib
from simclr_jax import models
from simclr_jax.errors import UserError
from simclr_jax.eval import finetune as ft_lib
from simclr_jax.eval import linear
from simclr_jax.training import loop
from simclr_jax.training.resume import SETUP_FILE, TrainerCheckpoints
from helpers import snapshot

SIZE, BATCH, STEPS = 16, 16, 6
DATA = data_lib.DataConfig(
  source="builtin",
  image_size=SIZE,
  builtin_train_examples=64,
  builtin_eval_examples=8,
  shuffle_buffer=64,
)
SETUP = {"steps": STEPS, "batch_size": BATCH}


@functools.lru_cache(maxsize=None)
def _simclr():
  model = models.SimCLRModel(
    backbone=models.ResNet(depth=18, width_multiplier=0.0625, cifar_stem=True),
    projection_head=models.ProjectionHead(num_layers=2, out_dim=8),
    num_classes=0,
  )
  variables = jax.jit(
    lambda key: model.init(key, jnp.zeros((2, SIZE, SIZE, 3)), train=False)
  )(jax.random.PRNGKey(1))
  return model, variables


@pytest.fixture(scope="module")
def mesh():
  return Mesh(np.array(jax.devices()), ("data",))


def _checkpoints(workdir, setup=SETUP, what="test training"):
  return TrainerCheckpoints(
    str(workdir), what=what, setup=setup, keep=3, every_steps=2
  )


def _signal_at(step):
  """A log_fn that sends this process SIGTERM when `step` is logged."""

  def log_fn(logged, means):
    if logged == step:
      os.kill(os.getpid(), signal.SIGTERM)

  return log_fn


def _batches(starts):
  """Batches from the steps done on; records where each call started."""

  def make(done):
    starts.append(done)
    return data_lib.train_batches(
      DATA, global_batch_size=BATCH, seed=0, start_step=done
    )

  return make


def _linear(mesh, workdir, log_fn=None, starts=None):
  model, variables = _simclr()
  head = linear.train_linear(
    model, variables, _batches([] if starts is None else starts),
    mesh=mesh, num_classes=10, steps=STEPS, batch_size=BATCH,
    image_size=SIZE, base_learning_rate=2.0, log_fn=log_fn, log_every=1,
    checkpoints=_checkpoints(workdir, what="linear evaluation"),
    resume_hint="rerun `cmd`",
  )  # fmt: skip
  return jax.device_get(head)


def _finetune(mesh, workdir, log_fn=None, starts=None):
  model, variables = _simclr()
  ft_model = models.finetune_model(model, num_classes=10, head_layers=1)
  start = ft_lib.init_variables(ft_model, variables, image_size=SIZE)
  tuned = ft_lib.finetune(
    ft_model, start, _batches([] if starts is None else starts),
    mesh=mesh, steps=STEPS, batch_size=BATCH, image_size=SIZE,
    base_learning_rate=0.5, log_fn=log_fn, log_every=1,
    checkpoints=_checkpoints(workdir, what="fine-tuning"),
    resume_hint="rerun `cmd`",
  )  # fmt: skip
  return jax.device_get(tuned)


def _assert_same(got, want):
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
  "train, what",
  [(_linear, "linear evaluation"), (_finetune, "fine-tuning")],
  ids=["linear", "finetune"],
)
def test_a_stopped_trainer_resumes_to_the_uninterrupted_result(
  train, what, mesh, tmp_path, capsys
):
  straight = train(mesh, tmp_path / "straight")
  workdir = tmp_path / "stopped"
  with pytest.raises(loop.preemption.Interrupted) as info:
    train(mesh, workdir, log_fn=_signal_at(3))
  assert str(info.value) == (
    f"SIGTERM: {what} stopped after step 3 of 6; saved a checkpoint of "
    f"step 3 in {workdir}/checkpoints; rerun `cmd` to resume."
  )
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "3"]
  capsys.readouterr()
  starts = []
  resumed = train(mesh, workdir, starts=starts)
  assert starts == [3]  # the data goes on from where the run stopped
  assert (
    f"{what}: resumed from {workdir}/checkpoints at step 3."
    in capsys.readouterr().out
  )
  _assert_same(resumed, straight)
  assert "6" in os.listdir(workdir / "checkpoints")  # the trained state stays


def test_a_damaged_newest_checkpoint_falls_back_and_ends_the_same(
  mesh, tmp_path, capsys
):
  straight = _linear(mesh, tmp_path)
  manifests = list((tmp_path / "checkpoints" / "6").rglob("manifest.ocdbt"))
  assert manifests
  for manifest in manifests:
    manifest.write_bytes(b"\x00garbled")
  starts = []
  again = _linear(mesh, tmp_path, starts=starts)
  out = capsys.readouterr().out
  assert starts == [4]
  assert "warning: checkpoint 6 in" in out and "resumed from step 4" in out
  assert os.listdir(tmp_path / "checkpoints_damaged") == ["6"]
  _assert_same(again, straight)


def test_the_setup_is_recorded_and_another_one_is_refused(tmp_path):
  ckpts = _checkpoints(tmp_path)
  ckpts.start(
    lambda: {"w": jnp.zeros(3)},
    jax.sharding.SingleDeviceSharding(jax.devices()[0]),
  )
  ckpts.save(2, {"w": jnp.ones(3)})
  ckpts.close()
  with open(tmp_path / SETUP_FILE) as f:
    assert json.load(f) == {"what": "test training", **SETUP}
  _checkpoints(tmp_path)  # the same setup: fine
  before = snapshot(str(tmp_path))
  with pytest.raises(UserError, match=r"holds a test training run with other "
                     r"settings \(steps: 6 there, 8 now\); use a new "
                     "--workdir"):  # fmt: skip
    _checkpoints(tmp_path, setup={**SETUP, "steps": 8})
  assert snapshot(str(tmp_path)) == before


def test_checkpoints_of_another_kind_of_run_are_refused(tmp_path):
  (tmp_path / "checkpoints" / "100").mkdir(parents=True)
  with pytest.raises(UserError, match=f"holds checkpoints but no {SETUP_FILE}"):
    _checkpoints(tmp_path)
  (tmp_path / SETUP_FILE).write_text("{not json")
  with pytest.raises(UserError, match=f"{SETUP_FILE} is unreadable"):
    _checkpoints(tmp_path)


def test_bad_settings_and_iterator_batches_on_a_resume_are_user_errors():
  with pytest.raises(UserError, match="checkpoint_every_steps >= 1"):
    TrainerCheckpoints("/tmp/x", what="t", setup={}, keep=1, every_steps=0)
  assert list(loop.batches_from([1, 2], 0, "t")) == [1, 2]
  with pytest.raises(UserError, match="t resumes after step 4, but its "
                     "batches were given as an iterator"):  # fmt: skip
    loop.batches_from([1, 2], 4, "t")
