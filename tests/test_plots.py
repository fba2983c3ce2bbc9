"""Training-curve PNGs from metrics.jsonl (or old TensorBoard event files)."""

import json
import os

import numpy as np
from PIL import Image
import pytest

from simclr_jax import plots
from simclr_jax import reporting
from simclr_jax.errors import UserError

ALL_FIGURES = [
  "loss.png",
  "accuracy.png",
  "learning_rate.png",
  "throughput.png",
]


def _write_run(run_dir, records):
  os.makedirs(run_dir, exist_ok=True)
  with open(os.path.join(run_dir, reporting.METRICS_FILE), "a") as f:
    for rec in records:
      f.write(json.dumps(rec) + "\n")
  return str(run_dir)


def _full_records(scale=1.0):
  recs = [
    {
      "step": s,
      "time": 1000.0 + s,
      "contrastive_loss": scale * 6 / s,
      "contrast_acc": s / 100,
      "probe_loss": 2.0,
      "probe_acc": s / 200,
      "learning_rate": s / 1000,
      "images_per_sec": 500.0 + s,
    }
    for s in range(10, 101, 10)
  ]
  recs += [
    {"step": s, "time": 1000.5 + s, "monitor/knn_accuracy": s / 150}
    for s in (50, 100)
  ]
  recs.append(
    {
      "step": 100,
      "time": 1200.0,
      "eval/trained/knn_accuracy": 0.7,
      "eval/random_init/knn_accuracy": 0.2,
    }
  )
  return recs


def _assert_png(path):
  assert os.path.getsize(path) > 0
  with Image.open(path) as img:
    assert img.format == "PNG"
    assert img.size[0] > 100 and img.size[1] > 100
    img.verify()


def test_load_metrics_keeps_last_value_per_step(tmp_path):
  run = _write_run(
    tmp_path / "run",
    [
      {"step": 10, "time": 1.0, "contrastive_loss": 5.0, "learning_rate": 0.1},
      {"step": 20, "time": 2.0, "contrastive_loss": 4.0, "learning_rate": 0.2},
      {"step": 30, "time": 3.0, "contrastive_loss": 3.0, "learning_rate": 0.3},
      # Resumed from the step-10 checkpoint: steps 20 and 30 are redone.
      {"step": 20, "time": 9.0, "contrastive_loss": 3.5, "learning_rate": 0.2},
      {"step": 30, "time": 10.0, "contrastive_loss": 2.5},
    ],
  )
  m = plots.load_metrics(run)
  assert set(m) == {"contrastive_loss", "learning_rate"}
  steps, values = m["contrastive_loss"]
  np.testing.assert_array_equal(steps, [10, 20, 30])
  np.testing.assert_array_equal(values, [5.0, 3.5, 2.5])
  steps, values = m["learning_rate"]
  np.testing.assert_array_equal(steps, [10, 20, 30])
  np.testing.assert_allclose(values, [0.1, 0.2, 0.3])


def test_load_metrics_skips_a_line_cut_off_by_a_crash(tmp_path):
  run = _write_run(
    tmp_path / "run", [{"step": 10, "time": 1.0, "contrastive_loss": 5.0}]
  )
  with open(os.path.join(run, reporting.METRICS_FILE), "a") as f:
    f.write('{"step": 20, "time": 2.0, "contrastive_lo')
  steps, values = plots.load_metrics(run)["contrastive_loss"]
  assert steps.tolist() == [10] and values.tolist() == [5.0]


def test_plot_run_writes_all_figures(tmp_path):
  run = _write_run(tmp_path / "run", _full_records())
  paths = plots.plot_run(run)
  assert paths == [os.path.join(run, "plots", n) for n in ALL_FIGURES]
  for path in paths:
    _assert_png(path)
  # Regenerating overwrites in place and leaves no temporary files.
  assert plots.plot_run([run]) == paths
  assert sorted(os.listdir(os.path.join(run, "plots"))) == sorted(ALL_FIGURES)


def test_figures_without_data_are_skipped(tmp_path):
  run = _write_run(
    tmp_path / "run",
    [
      {"step": s, "time": float(s), "contrastive_loss": 1.0 / s}
      for s in (1, 2, 3)
    ],
  )
  out = tmp_path / "out"
  assert plots.plot_run(run, out_dir=str(out)) == [str(out / "loss.png")]
  assert os.listdir(out) == ["loss.png"]
  assert not os.path.exists(os.path.join(run, "plots"))


def test_several_runs_are_overlaid_in_the_first_dir(tmp_path):
  a = _write_run(tmp_path / "a", _full_records())
  b = _write_run(tmp_path / "b", _full_records(scale=0.5)[:3])
  paths = plots.plot_run([a, b])
  assert paths == [os.path.join(a, "plots", n) for n in ALL_FIGURES]
  for path in paths:
    _assert_png(path)
  assert not os.path.exists(os.path.join(b, "plots"))
  assert plots._run_labels([a, b]) == ["a", "b"]
  # Same base name in two places: the labels keep the paths apart.
  assert plots._run_labels(["x/run", "y/run/"]) == [
    os.path.normpath("x/run"),
    os.path.normpath("y/run"),
  ]


def test_accuracy_figure_collects_monitor_and_eval_metrics():
  group = next(g for g in plots._GROUPS if g.name == "accuracy")
  keys = plots._group_keys(
    group,
    [
      {
        "eval/trained/linear_accuracy": None,
        "contrast_acc": None,
        "monitor/knn_accuracy": None,
        "eval/trained/knn_accuracy": None,
        "grad_norm": None,
      }
    ],
  )
  assert keys == [
    "contrast_acc",
    "monitor/knn_accuracy",
    "eval/trained/knn_accuracy",
    "eval/trained/linear_accuracy",
  ]


def test_missing_or_empty_run_dir_is_a_user_error(tmp_path):
  with pytest.raises(UserError, match="does not exist"):
    plots.load_metrics(str(tmp_path / "nope"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(UserError, match="no metrics.jsonl"):
    plots.plot_run([str(tmp_path / "empty")])
  run = _write_run(tmp_path / "blank", [])
  with pytest.raises(UserError, match="holds no metrics yet"):
    plots.plot_run(run)
  only_other = _write_run(
    tmp_path / "other", [{"step": 1, "time": 0.0, "grad_norm": 1.0}]
  )
  with pytest.raises(UserError, match="none of the plotted metrics"):
    plots.plot_run(only_other)
  with pytest.raises(UserError, match="no run directory"):
    plots.plot_run([])


def test_falls_back_to_tensorboard_event_files(tmp_path):
  run = tmp_path / "run"
  r = reporting.Reporter(str(run), total_steps=30, batch_size=8)
  r.report(10, {"contrastive_loss": 3.0, "learning_rate": 0.5})
  r.report(20, {"contrastive_loss": 2.0, "learning_rate": 0.25})
  r.close()
  r = reporting.Reporter(
    str(run), total_steps=30, batch_size=8, start_step=10
  )  # resumed: step 20 again
  r.report(20, {"contrastive_loss": 1.5, "learning_rate": 0.25})
  r.write_scalars(20, {"eval/trained/knn_accuracy": 0.75})
  r.close()
  from_jsonl = plots.load_metrics(str(run))
  os.remove(run / reporting.METRICS_FILE)
  from_events = plots.load_metrics(str(run))
  assert (
    set(from_events)
    == set(from_jsonl)
    == {
      "contrastive_loss",
      "learning_rate",
      "images_per_sec",
      "eval/trained/knn_accuracy",
    }
  )
  for key, (steps, values) in from_jsonl.items():
    np.testing.assert_array_equal(from_events[key][0], steps)
    np.testing.assert_allclose(from_events[key][1], values, rtol=1e-6)
  np.testing.assert_allclose(from_events["contrastive_loss"][1], [3.0, 1.5])
  assert "accuracy.png" in {
    os.path.basename(p) for p in plots.plot_run(str(run))
  }


def test_cli_exit_codes(tmp_path, capsys):
  run = _write_run(tmp_path / "run", _full_records())
  assert plots.main([run]) == 0
  out = capsys.readouterr().out.split()
  assert out == [os.path.join(run, "plots", n) for n in ALL_FIGURES]

  out_dir = str(tmp_path / "cmp")
  assert plots.main([run, run, "--out", out_dir]) == 0
  assert sorted(os.listdir(out_dir)) == sorted(ALL_FIGURES)
  capsys.readouterr()

  assert plots.main([str(tmp_path / "missing")]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: run directory") and "Traceback" not in err

  assert plots.main([]) == 2  # argparse: RUN_DIR is required
  assert "RUN_DIR" in capsys.readouterr().err
  assert plots.main(["--help"]) == 0
  assert "--out" in capsys.readouterr().out


def test_relative_and_home_run_dirs(tmp_path, monkeypatch, capsys):
  run = _write_run(tmp_path / "runs" / "a", _full_records())
  monkeypatch.chdir(tmp_path / "runs")
  assert plots.main(["a"]) == 0
  # Printed absolute, so the paths work from any directory.
  assert capsys.readouterr().out.split() == [
    os.path.join(run, "plots", n) for n in ALL_FIGURES
  ]
  for name in ALL_FIGURES:
    _assert_png(os.path.join(run, "plots", name))

  monkeypatch.setenv("HOME", str(tmp_path))
  assert plots.main(["./a", "~/runs/a", "--out", "~/cmp"]) == 0
  assert capsys.readouterr().out.split() == [
    str(tmp_path / "cmp" / n) for n in ALL_FIGURES
  ]
  # A run dir given as "." is labelled with its name, not ".".
  monkeypatch.chdir(run)
  assert plots._run_labels(["."]) == ["a"]
