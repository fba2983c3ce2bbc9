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
  "comparison.png",
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
    {"step": s, "time": 1000.5 + s, "monitor/knn_top1": s / 150}
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


def _write_results(run_dir, metrics, mode="pretrain"):
  with open(os.path.join(run_dir, "results.json"), "w") as f:
    json.dump({"schema_version": 1, "mode": mode, "metrics": metrics}, f)


@pytest.fixture
def figures(monkeypatch):
  """{png name: Figure} of every figure plot_run saves."""
  saved = {}
  save = plots._save

  def spy(fig, out_dir, name):
    saved[name + ".png"] = fig
    return save(fig, out_dir, name)

  monkeypatch.setattr(plots, "_save", spy)
  return saved


def _bars(ax):
  """{row: {metric: bar height, rounded}} of a comparison subplot."""
  ticks = [t.get_text() for t in ax.get_xticklabels()]
  return {
    c.get_label(): {
      ticks[round(p.get_x() + p.get_width() / 2)]: round(p.get_height(), 6)
      for p in c
    }
    for c in ax.containers
  }


def _legend(ax):
  return [t.get_text() for t in ax.get_legend().get_texts()]


def _printed_paths(out):
  """The PNG paths main printed: the last lines, after any tables."""
  lines = out.splitlines()
  paths = [line for line in lines if line.endswith(".png")]
  assert lines[len(lines) - len(paths) :] == paths
  return paths


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


def test_accuracy_figure_keeps_end_of_run_results_out():
  group = next(g for g in plots._GROUPS if g.name == "accuracy")
  keys = plots._group_keys(
    group,
    [
      {
        "eval/trained/linear_top1": None,
        "eval/random_init/knn_k20_top1": None,
        "eval/raw_pixels/online_head_top5": None,
        "contrast_acc": None,
        "monitor/knn_top1": None,
        "monitor/knn_top5": None,
        "top1": None,  # a linear-evaluation or fine-tuning run
        "grad_norm": None,
        "contrastive_loss": None,
      }
    ],
  )
  assert keys == [
    "contrast_acc",
    "monitor/knn_top1",
    "monitor/knn_top5",
    "top1",
  ]


def test_accuracy_figure_has_only_training_curves(tmp_path, figures):
  run = _write_run(tmp_path / "run", _full_records())
  plots.plot_run(run)
  (ax,) = figures["accuracy.png"].axes
  # The old monitor name is drawn under the new one.
  assert _legend(ax) == ["contrast_acc", "probe_acc", "monitor/knn_top1"]


def test_each_loss_has_its_own_axis(tmp_path, figures):
  recs = _full_records()
  for rec in recs:
    if "probe_loss" in rec:
      rec["supervised_loss"] = 1.0
  a = _write_run(tmp_path / "a", recs)
  plots.plot_run(a)
  fig = figures["loss.png"]
  keys = ["contrastive_loss", "probe_loss", "supervised_loss"]
  assert [ax.get_ylabel() for ax in fig.axes] == keys
  for ax, key in zip(fig.axes, keys):
    (line,) = ax.get_lines()
    assert line.get_label() == key
  # The step axis is shared; only the bottom axis is labelled.
  assert fig.axes[0].get_shared_x_axes().joined(fig.axes[0], fig.axes[2])
  assert [ax.get_xlabel() for ax in fig.axes] == ["", "", "step"]

  # Several runs: each loss axis overlays the runs, named in its legend.
  b = _write_run(tmp_path / "b", _full_records(scale=0.5))
  plots.plot_run([a, b], out_dir=str(tmp_path / "cmp"))
  axes = figures["loss.png"].axes
  assert len(axes) == 3
  assert _legend(axes[0]) == ["a", "b"] and _legend(axes[2]) == ["a"]

  # A downstream run logs plain `loss`.
  c = _write_run(tmp_path / "c", [{"step": 1, "loss": 2.0, "top1": 0.1}])
  assert plots.plot_run(c) == [
    os.path.join(c, "plots", n) for n in ("loss.png", "accuracy.png")
  ]
  assert [ax.get_ylabel() for ax in figures["loss.png"].axes] == ["loss"]


def test_comparison_from_results_json(tmp_path, figures, capsys):
  run = _write_run(tmp_path / "run", _full_records())  # also eval/ scalars
  _write_results(
    run,
    {
      "trained": {
        "knn_k200_top1": 0.6,
        "knn_k20_top1": 0.62,
        "linear_top1": 0.7,
        "online_head_top1": 0.55,
        "online_head_top5": 0.9,
      },
      "random_init": {"knn_k20_top1": 0.2, "knn_k200_top1": 0.19},
      "raw_pixels": {"knn_k20_top1": 0.3, "knn_k200_top1": 0.31},
    },
  )
  assert plots.main([run]) == 0
  (ax,) = figures["comparison.png"].axes
  assert [t.get_text() for t in ax.get_xticklabels()] == [
    "knn_k20_top1",
    "knn_k200_top1",
    "linear_top1",
    "online_head_top1",
    "online_head_top5",
  ]
  bars = _bars(ax)
  assert list(bars) == ["trained", "random_init", "raw_pixels"]
  assert bars["trained"] == pytest.approx(
    {
      "knn_k20_top1": 62,
      "knn_k200_top1": 60,
      "linear_top1": 70,
      "online_head_top1": 55,
      "online_head_top5": 90,
    }
  )
  assert bars["random_init"] == pytest.approx(
    {"knn_k20_top1": 20, "knn_k200_top1": 19}
  )
  texts = {t.get_text() for t in ax.texts}
  assert {"62.0%", "20.0%", "31.0%", "90.0%"} <= texts
  assert _legend(ax) == ["trained", "random_init", "raw_pixels"]
  out = capsys.readouterr().out
  table = out.split("\n\n")[0].splitlines()
  assert table[0] == "run: end-of-run evaluation, % (from results.json)"
  assert table[1].split() == ["metric", "trained", "random_init", "raw_pixels"]
  assert table[2].split() == ["knn_k20_top1", "62.00", "20.00", "30.00"]
  assert table[-1].split() == ["online_head_top5", "90.00", "-", "-"]


def test_comparison_from_old_eval_scalars(tmp_path, figures, capsys):
  run = _write_run(
    tmp_path / "run",
    [
      {"step": 10, "contrastive_loss": 5.0},
      {
        "step": 10,
        "eval/trained/knn_k20_accuracy": 0.1,
        "eval/trained/online_head_top1": 0.4,  # not evaluated again
      },
      # Resumed and evaluated again: the last evaluation wins.
      {"step": 20, "contrastive_loss": 4.0},
      {
        "step": 20,
        "eval/trained/knn_k20_accuracy": 0.5,
        "eval/trained/linear_accuracy": 0.6,
      },
      {"step": 20, "eval/random_init/knn_k20_accuracy": 0.2},
      {"step": 20, "eval/raw_pixels/linear_accuracy": 0.3},
    ],
  )
  _write_results(run, {"top1": 0.9}, mode="linear")  # not a pretraining run
  assert plots.main([run]) == 0
  assert _printed_paths(capsys.readouterr().out) == [
    os.path.join(run, "plots", n) for n in ("loss.png", "comparison.png")
  ]
  (ax,) = figures["comparison.png"].axes
  assert _bars(ax) == {
    "trained": {"knn_k20_top1": 50, "linear_top1": 60},
    "random_init": {"knn_k20_top1": 20},
    "raw_pixels": {"linear_top1": 30},
  }


def test_no_comparison_without_results(tmp_path, figures, capsys):
  records = [r for r in _full_records() if "eval/trained/knn_accuracy" not in r]
  a = _write_run(tmp_path / "a", records)
  _write_results(a, {"top1": 0.5, "top5": 0.9}, mode="finetune")
  assert plots.main([a]) == 0
  out = capsys.readouterr().out
  assert out.split() == [os.path.join(a, "plots", n) for n in ALL_FIGURES[:-1]]
  assert "comparison.png" not in figures
  assert not os.path.exists(os.path.join(a, "plots", "comparison.png"))
  # Several runs: only those with results get a subplot.
  b = _write_run(tmp_path / "b", _full_records())
  c = _write_run(tmp_path / "c", _full_records())
  assert plots.main([a, b, c]) == 0
  assert [ax.get_title() for ax in figures["comparison.png"].axes] == [
    "End-of-run evaluation - b",
    "End-of-run evaluation - c",
  ]
  tables = capsys.readouterr().out.split("\n\n")[:-1]
  assert [t.split(":")[0] for t in tables] == ["b", "c"]


def test_old_and_new_metric_names_overlay(tmp_path, figures):
  old = _write_run(tmp_path / "old", _full_records())
  renamed = {
    "monitor/knn_accuracy": "monitor/knn_top1",
    "eval/trained/knn_accuracy": "eval/trained/knn_k20_top1",
    "eval/random_init/knn_accuracy": "eval/random_init/knn_k20_top1",
  }
  new = _write_run(
    tmp_path / "new",
    [{renamed.get(k, k): v for k, v in r.items()} for r in _full_records()],
  )
  plots.plot_run([old, new])
  (ax,) = figures["accuracy.png"].axes
  assert _legend(ax) == [
    f"{run}: {key}"
    for run in ("old", "new")
    for key in ("contrast_acc", "probe_acc", "monitor/knn_top1")
  ]
  old_bars, new_bars = map(_bars, figures["comparison.png"].axes)
  assert old_bars == {
    "trained": {"knn_top1": 70},
    "random_init": {"knn_top1": 20},
  }
  assert new_bars == {
    "trained": {"knn_k20_top1": 70},
    "random_init": {"knn_k20_top1": 20},
  }


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
  # The end-of-run scalar makes the comparison, not an accuracy curve.
  assert [os.path.basename(p) for p in plots.plot_run(str(run))] == [
    "loss.png",
    "learning_rate.png",
    "throughput.png",
    "comparison.png",
  ]


def test_cli_exit_codes(tmp_path, capsys):
  run = _write_run(tmp_path / "run", _full_records())
  assert plots.main([run]) == 0
  out = _printed_paths(capsys.readouterr().out)
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
  assert _printed_paths(capsys.readouterr().out) == [
    os.path.join(run, "plots", n) for n in ALL_FIGURES
  ]
  for name in ALL_FIGURES:
    _assert_png(os.path.join(run, "plots", name))

  monkeypatch.setenv("HOME", str(tmp_path))
  assert plots.main(["./a", "~/runs/a", "--out", "~/cmp"]) == 0
  assert _printed_paths(capsys.readouterr().out) == [
    str(tmp_path / "cmp" / n) for n in ALL_FIGURES
  ]
  # A run dir given as "." is labelled with its name, not ".".
  monkeypatch.chdir(run)
  assert plots._run_labels(["."]) == ["a"]
