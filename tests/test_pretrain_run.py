"""End-to-end pretraining runs (builtin, tfds mock, image folder) and resume."""

import glob
import json
import os
import re

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from simclr_jax import augment
from simclr_jax import data as data_lib
from simclr_jax import results as results_lib
from simclr_jax import pretrain
from simclr_jax.pretrain import step as step_lib
from simclr_jax.training import state as state_lib
from simclr_jax import checkpointing
from simclr_jax.errors import UserError
from helpers import tiny_config


def _final_state(workdir, config):
  setup = pretrain.TrainSetup(config)
  ckpt = checkpointing.Checkpointer(workdir, keep=10, every_steps=1)
  try:
    return jax.device_get(ckpt.restore(setup.abstract_state))
  finally:
    ckpt.close()


def test_builtin_run_writes_results_checkpoints_and_events(tmp_path, capsys):
  workdir = str(tmp_path / "run")
  c = tiny_config()
  c.eval.compare_raw_pixels = True
  c.eval.monitor_every_epochs = 2 * c.batch_size / 128  # every 2 steps
  c.profile_steps = 2  # steps 3-4: after the first report (step 2)
  results = pretrain.train_and_evaluate(c, workdir)
  out = capsys.readouterr().out
  assert "step 4/4" in out and "ETA" in out and "random_init" in out
  assert "(monitor)" in out
  # Progress during the end-of-run evaluation, one line per stage.
  for row in ("trained", "random_init", "raw_pixels"):
    assert f"  {row}: features of 128 + 64 images in" in out
  assert "random_init: estimating BatchNorm" in out
  assert tuple(results) == results_lib.KEYS
  assert results["mode"] == "pretrain"
  assert results["checkpoint"] == {"dir": os.path.abspath(workdir), "step": 4}
  assert set(results["metrics"]) == {"trained", "random_init", "raw_pixels"}
  for name in ("trained", "random_init", "raw_pixels"):
    for metric in ("knn_k10_top1", "linear_top1"):
      assert 0.0 <= results["metrics"][name][metric] <= 1.0
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f) == results
  # The online head (trained jointly) on the eval split, computed here
  # straight from the checkpoint: the full model in inference mode on the
  # eval-preprocessed test images. Only the trained encoder has such a row.
  top1, top5 = _online_head_by_hand(workdir, c)
  trained = results["metrics"]["trained"]
  assert trained["online_head_top1"] == pytest.approx(top1, abs=1e-9)
  assert trained["online_head_top5"] == pytest.approx(top5, abs=1e-9)
  assert top1 < top5 < 1.0  # 10 classes: top-5 is not trivially 1
  for name in ("random_init", "raw_pixels"):
    assert not {"online_head_top1", "online_head_top5"} & set(
      results["metrics"][name]
    )
  header = next(l for l in out.splitlines() if l.startswith("encoder"))
  assert "online_head_top1" in header and "online_head_top5" in header
  row = next(l for l in out.splitlines() if l.startswith("trained "))
  assert f"{100 * top1:.2f}%" in row and f"{100 * top5:.2f}%" in row
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(l) for l in f]
  monitored = [r["step"] for r in records if "monitor/knn_top1" in r]
  assert monitored == [2, 4]
  waits = [r["input_wait_fraction"] for r in records if "contrastive_loss" in r]
  assert len(waits) == 2 and all(0 <= w <= 1 for w in waits)
  assert re.search(r" \| input_wait_fraction [01]\.\d\d \| ", out)
  profile = os.path.join(workdir, "profile")
  assert glob.glob(os.path.join(profile, "**", "*.xplane.pb"), recursive=True)
  assert f"Profiler trace of steps 3-4 written to {profile}" in out
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
  assert any(n.startswith("events.out.tfevents") for n in os.listdir(workdir))
  assert os.path.exists(os.path.join(workdir, checkpointing.RUN_CONFIG))


def _online_head_by_hand(workdir, config):
  """Top-1 / top-5 of the checkpoint's `logits` on the eval split."""
  state = _final_state(workdir, config)
  setup = pretrain.TrainSetup(config)
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  logits_fn = jax.jit(
    lambda v, x: setup.model.apply(
      v,
      augment.preprocess_eval(x, image_size=config.data.image_size),
      train=False,
    )["logits"]
  )
  hits1, hits5 = [], []
  for batch in data_lib.eval_batches(
    setup.data_cfg,
    config.data.eval_split,
    global_batch_size=config.eval.batch_size,
  ):
    mask, labels = batch["mask"], batch["label"]
    logits = np.asarray(logits_fn(variables, batch["image"]))[mask]
    top = np.argsort(-logits, axis=-1)[:, :5]
    hits1.append(top[:, 0] == labels[mask])
    hits5.append((top == labels[mask][:, None]).any(-1))
  hits1, hits5 = np.concatenate(hits1), np.concatenate(hits5)
  assert len(hits1) == config.data.builtin_eval_examples
  return hits1.mean(), hits5.mean()


def test_resume_continues_and_matches_uninterrupted_run(tmp_path, capsys):
  straight = str(tmp_path / "straight")
  c = tiny_config()
  c.eval.enabled = False
  c.train_steps = 6
  pretrain.train_and_evaluate(c, straight)

  split = str(tmp_path / "split")
  first = tiny_config()
  first.eval.enabled = False
  first.train_steps = 6
  # Stop after 4 of 6 steps by running a 6-step schedule with a 4-step cap.
  first.checkpoint_every_steps = 4
  _run_until(first, split, stop_at=4)
  capsys.readouterr()
  results = pretrain.train_and_evaluate(c, split)
  assert "Resumed" in capsys.readouterr().out
  assert results["checkpoint"]["step"] == 6
  # The interrupted invocation's time counts too.
  assert results["total_time_s"] > results["time_s"] > 0
  assert results["details"]["train_time_s"] > results["time_s"] / 2
  a, b = _final_state(straight, c), _final_state(split, c)
  assert int(a.step) == int(b.step) == 6
  jax.tree.map(
    lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6),
    (a.params, a.batch_stats, a.opt_state, a.rng),
    (b.params, b.batch_stats, b.opt_state, b.rng),
  )


def test_finished_run_is_reported_not_recomputed(tmp_path, capsys, monkeypatch):
  from simclr_jax.eval import frozen

  workdir = str(tmp_path / "run")
  c = tiny_config()
  c.train_steps = 2
  c.eval.linear_probe = False
  c.eval.compare_random_init = False
  first = pretrain.train_and_evaluate(c, workdir)
  capsys.readouterr()
  with monkeypatch.context() as m:
    m.setattr(frozen, "from_config", _must_not_evaluate)
    again = pretrain.train_and_evaluate(c, workdir)
  out = capsys.readouterr().out
  assert again == first
  assert results_lib.read(workdir) == first  # not rewritten
  assert "Nothing was recomputed" in out and "reevaluate" in out
  assert "knn_k10_top1" in out and "online_head_top1" in out

  c.reevaluate = True
  third = pretrain.train_and_evaluate(c, workdir)
  assert "Evaluating the finished run again" in capsys.readouterr().out
  assert third["metrics"] == first["metrics"]
  assert third["details"]["train_time_s"] == first["details"]["train_time_s"]
  total = first["total_time_s"] + third["time_s"]
  assert third["total_time_s"] >= total - 0.2  # rounded to 0.1 s each

  # Other eval settings: evaluated again without being asked.
  c.reevaluate = False
  c.eval.knn_ks = (5,)
  fourth = pretrain.train_and_evaluate(c, workdir)
  assert set(fourth["metrics"]["trained"]) >= {"knn_k5_top1"}


def _must_not_evaluate(*args, **kwargs):
  raise AssertionError("a finished run was evaluated again")


def _run_until(config, workdir, stop_at):
  """Runs the real loop but interrupts it after `stop_at` steps."""
  original = step_lib.make_train_step

  def limited(**kwargs):
    step = original(**kwargs)
    calls = {"n": 0}

    def wrapped(state, batch):
      if calls["n"] == stop_at:
        raise KeyboardInterrupt
      calls["n"] += 1
      return step(state, batch)

    return wrapped

  step_lib.make_train_step = limited
  try:
    with pytest.raises(KeyboardInterrupt):
      pretrain.train_and_evaluate(config, workdir)
  finally:
    step_lib.make_train_step = original
  steps = sorted(
    int(s) for s in os.listdir(os.path.join(workdir, "checkpoints"))
  )
  assert steps[-1] == stop_at


def test_tfds_mock_run(tmp_path):
  c = tiny_config(source="tfds", name="cifar10", image_size=32)
  c.train_steps = 2
  c.eval.compare_random_init = False
  with tfds.testing.mock_data(num_examples=64):
    results = pretrain.train_and_evaluate(c, str(tmp_path / "run"))
  assert results["checkpoint"]["step"] == 2
  assert results["dataset"]["name"] == "cifar10"
  assert "knn_k10_top1" in results["metrics"]["trained"]


def _write_folder(root, classes=("cats", "dogs"), per_class=24):
  rng = np.random.default_rng(0)
  for split in ("train", "test"):
    for ci, name in enumerate(classes):
      d = root / split / name
      d.mkdir(parents=True)
      for i in range(per_class if split == "train" else 8):
        size = int(rng.integers(12, 40))
        img = rng.integers(0, 120, (size, size + 3, 3), np.uint8) + 120 * ci
        ext = "png" if i % 2 else "jpg"
        Image.fromarray(img.astype(np.uint8)).save(d / f"{i}.{ext}")


def test_image_folder_run(tmp_path, capsys):
  """A folder run whose host squares (24 px) are larger than the model
  input (16 px): training views and eval crops are cut from them. One
  training file is corrupt: skipped, counted in the progress line and in
  results.json."""
  root = tmp_path / "images"
  _write_folder(root)
  (root / "train" / "cats" / "corrupt.jpg").write_bytes(b"\xff\xd8 not a jpeg")
  c = tiny_config(source="folder", data_dir=str(root), host_size=24)
  c.data.max_unreadable_fraction = 0.05  # 1 of 49
  c.eval.knn_ks = (5,)
  c.eval.batch_size = 16
  c.eval.compare_random_init = False  # the builtin run covers that row
  c.train_steps = 2
  results = pretrain.train_and_evaluate(c, str(tmp_path / "run"))
  assert results["details"]["unreadable_skipped"] >= 1
  assert "unreadable images skipped" in capsys.readouterr().out
  assert results["dataset"]["num_train"] == 49
  assert results["dataset"]["num_eval"] == 16
  assert set(results["metrics"]) == {"trained"}
  assert results["config"]["data"]["host_size"] == 24


def test_incompatible_checkpoint_is_refused_untouched(tmp_path):
  workdir = tmp_path / "run"
  c = tiny_config()
  c.train_steps = 2
  c.eval.enabled = False
  pretrain.train_and_evaluate(c, str(workdir))
  before = {p: os.path.getmtime(p) for p in workdir.rglob("*")}
  other = tiny_config()
  other.model.width_multiplier = 0.25
  with pytest.raises(UserError, match="different model"):
    pretrain.train_and_evaluate(other, str(workdir))
  assert {p: os.path.getmtime(p) for p in workdir.rglob("*")} == before


def test_batch_larger_than_dataset_is_a_user_error(tmp_path):
  c = tiny_config()
  c.batch_size = 256
  with pytest.raises(UserError, match="fewer than config.batch_size"):
    pretrain.train_and_evaluate(c, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_param_and_device_counts_reported(tmp_path, capsys):
  c = tiny_config()
  c.train_steps = 1
  c.eval.enabled = False
  results = pretrain.train_and_evaluate(c, str(tmp_path / "run"))
  setup = pretrain.TrainSetup(c)
  n = state_lib.count_params(setup.abstract_state.params["backbone"])
  assert f"({n:,} backbone params)" in capsys.readouterr().out
  # What a sweep report plots against (accuracy vs size, throughput vs
  # devices).
  assert results["details"]["backbone_params"] == n
  assert results["details"]["devices"] == jax.device_count()
  assert results["details"]["processes"] == 1
