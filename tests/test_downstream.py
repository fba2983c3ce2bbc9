"""Downstream protocols on a pretraining run (`config.mode`): kNN, linear
evaluation (SGD and logistic), fine-tuning; results.json; bad input."""

import json
import os

import pytest

from simclr_jax import downstream as evaluate
from simclr_jax import results as results_lib
from simclr_jax.errors import UserError
from helpers import ROOT, TINY, assert_one_line_error, run_cli
from helpers import snapshot, tiny_run_config


@pytest.fixture(scope="module")
def run_dir(tiny_run):
  return tiny_run


def _config(run_dir, mode, **sections):
  c = tiny_run_config()
  c.mode = mode
  c.init_checkpoint = run_dir
  c.log_every_steps = 1
  for section, values in sections.items():
    for key, value in values.items():
      c[section][key] = value
  return c


def _check_results(workdir, results, mode, run_dir):
  with open(os.path.join(workdir, "results.json")) as f:
    stored = json.load(f)
  assert stored == results
  assert tuple(stored) == results_lib.KEYS
  assert stored["schema_version"] == 2 and stored["mode"] == mode
  assert stored["checkpoint"] == {"dir": os.path.abspath(run_dir), "step": 2}
  assert stored["dataset"]["num_classes"] == 10
  assert stored["config"]["mode"] == mode
  assert stored["time_s"] > 0


def test_knn_mode_writes_results_and_leaves_the_run_alone(
  run_dir, tmp_path, capsys
):
  before = snapshot(run_dir)
  workdir = str(tmp_path / "knn")
  results = evaluate.run(
    _config(run_dir, "knn", eval=dict(knn_ks=(20, 5))), workdir
  )
  out = capsys.readouterr().out
  assert "Features of 128 training and 64 eval images in" in out
  _check_results(workdir, results, "knn", run_dir)
  assert set(results["metrics"]) == {
    "knn_k20_top1",
    "knn_k20_top5",
    "knn_k5_top1",
    "knn_k5_top5",
  }
  for v in results["metrics"].values():
    assert 0.0 <= v <= 1.0
  assert snapshot(run_dir) == before


def test_linear_logistic_mode(run_dir, tmp_path):
  workdir = str(tmp_path / "logistic")
  results = evaluate.run(
    _config(run_dir, "linear", linear_eval=dict(method="logistic")), workdir
  )
  _check_results(workdir, results, "linear", run_dir)
  m = results["metrics"]
  assert 0.0 <= m["linear_top1"] <= m["linear_top5"] <= 1.0
  assert results["details"]["method"] == "logistic"
  assert results["details"]["l2"] > 0


def test_linear_sgd_mode_logs_progress(run_dir, tmp_path, capsys):
  workdir = str(tmp_path / "sgd")
  results = evaluate.run(
    _config(run_dir, "linear", linear_eval=dict(epochs=1, batch_size=32)),
    workdir,
  )
  _check_results(workdir, results, "linear", run_dir)
  assert results["details"] == {"method": "sgd", "steps": 128 // 32 + 1}
  assert "step 5/5" in capsys.readouterr().out
  assert os.path.exists(os.path.join(workdir, "metrics.jsonl"))
  # The head is kept; the same command again resumes at the end and
  # evaluates the same head.
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["4", "5"]
  assert os.path.exists(os.path.join(workdir, "training_setup.json"))
  again = evaluate.run(
    _config(run_dir, "linear", linear_eval=dict(epochs=1, batch_size=32)),
    workdir,
  )
  out = capsys.readouterr().out
  assert (
    f"linear evaluation: resumed from {workdir}/checkpoints at step 5." in out
  )
  assert "step 5/5" not in out  # nothing was trained again
  assert again["metrics"] == results["metrics"]


def test_finetune_mode_from_head_layer_1(run_dir, tmp_path):
  workdir = str(tmp_path / "finetune")
  results = evaluate.run(
    _config(
      run_dir,
      "finetune",
      finetune=dict(
        label_fraction=0.25, epochs=2, batch_size=16, head_layers=1
      ),
    ),
    workdir,
  )
  _check_results(workdir, results, "finetune", run_dir)
  d = results["details"]
  # The fine-tuned network is kept (and a stopped run resumes from it).
  assert str(d["steps"]) in os.listdir(os.path.join(workdir, "checkpoints"))
  assert d["head_layers"] == 1 and d["batch_size"] == 16
  assert 28 <= d["num_labelled"] <= 36  # a stratified quarter of 128
  assert d["steps"] == d["num_labelled"] * 2 // 16 + 1
  assert (
    0.0
    <= results["metrics"]["finetune_top1"]
    <= results["metrics"]["finetune_top5"]
  )


def test_model_and_data_settings_come_from_the_run(run_dir, tmp_path, capsys):
  c = _config(run_dir, "knn", eval=dict(knn_ks=(5,)))
  # A config that differs from the run's in architecture and data: without
  # overrides, the run's run_config.json wins.
  c.model.depth, c.data.image_size = 50, 32
  c.data.builtin_eval_examples = 48
  results = evaluate.run(c, str(tmp_path / "knn"))
  out = capsys.readouterr().out
  assert "model.depth=18 (config had 50)" in out
  assert "data.image_size=16 (config had 32)" in out
  assert results["config"]["model"]["depth"] == 18
  assert results["config"]["data"]["image_size"] == 16
  assert results["dataset"]["num_eval"] == 64  # the run's eval examples
  # A named override is kept: a data key changes the data...
  again = evaluate.run(
    c, str(tmp_path / "knn2"), overrides=["data.builtin_eval_examples"]
  )
  assert again["dataset"]["num_eval"] == 48
  assert "yours: data.builtin_eval_examples" in capsys.readouterr().out


def test_architecture_override_that_conflicts_names_the_keys(run_dir, tmp_path):
  c = _config(run_dir, "knn")
  c.model.depth = 34
  c.model.proj_out_dim = 32
  with pytest.raises(UserError, match=r"model\.depth.*18.*34") as e:
    evaluate.run(
      c,
      str(tmp_path / "out"),
      overrides=("model.depth", "model.proj_out_dim"),
    )
  assert "proj_out_dim" in str(e.value)
  assert "leave those keys out" in str(e.value)
  assert not os.path.exists(tmp_path / "out" / "results.json")


def test_workdir_must_not_be_the_pretraining_run(run_dir):
  with pytest.raises(UserError, match="its own --workdir"):
    evaluate.run(_config(run_dir, "knn"), run_dir)


def test_cli_downstream_mode_needs_a_checkpoint(tmp_path):
  proc = run_cli(
    "--config",
    "configs/default.py",
    *TINY,
    "--config.mode=linear",
    "--workdir",
    str(tmp_path / "w"),
    cwd=ROOT,
  )
  assert_one_line_error(proc, "config.mode='linear'", "init_checkpoint")
  assert not os.path.exists(tmp_path / "w")
