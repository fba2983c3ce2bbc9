"""`python -m simclr_jax.sweep report`: rows, CSV, table and figures from
hand-written sweep directories (no training)."""

import csv
import json

import numpy as np
import pytest
from PIL import Image

from simclr_jax.errors import UserError
from simclr_jax.sweep import figures
from simclr_jax.sweep import layout
from simclr_jax.sweep import report

B256_E2 = "batch_size=256,epochs=2"
UNFINISHED = "batch_size=1024,epochs=2"
MISSING = "batch_size=2048,epochs=1"


def _point(sweepdir, name, overrides, results=None, records=(), config=None):
  """A manifest entry, with its run dir when it has results or records."""
  run = sweepdir / name
  if results is not None or records or config is not None:
    run.mkdir(parents=True)
  if records:
    lines = [json.dumps(r) for r in records]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
  if results is not None:
    (run / "results.json").write_text(json.dumps(results))
  if config is not None:
    (run / "run_config.json").write_text(json.dumps({"config": config}))
  return {"name": name, "overrides": overrides, "command": []}


def _pretrain(knn, linear, steps, params=700_464, devices=1, ks=(200, 20)):
  trained = {f"knn_k{k}_top1": knn - 0.01 * i for i, k in enumerate(ks)}
  if linear is not None:
    trained["linear_top1"] = linear
  details = {"devices": devices, "processes": 1}
  if params is not None:
    details["backbone_params"] = params
  return {
    "mode": "pretrain",
    "metrics": {"trained": trained, "random_init": {"knn_k200_top1": 0.1}},
    "checkpoint": {"step": steps},
    "config": {
      "batch_size": 999,
      "model": {"depth": 18, "width_multiplier": 0.25},
    },
    "total_time_s": 600.0,
    "details": details,
  }


def _records(steps, rate, t0=1000.0, monitor="monitor/knn_top1"):
  """A report per step, half an hour apart, the kNN monitor in each."""
  out = []
  for i, step in enumerate(steps):
    out.append(
      {"step": step, "time": t0 + 1800 * i, "images_per_sec": rate + i * i,
       "contrastive_loss": 5.0 - i, monitor: 0.2 + 0.1 * i}
    )  # fmt: skip
  return out


@pytest.fixture
def batch_epochs(tmp_path):
  """Batch x epochs: three points done, one interrupted, one not started.
  Batch 1024 sorts before 256 as text, after it as a number."""
  sweepdir = tmp_path / "sw"
  points = [
    _point(sweepdir, "batch_size=256,epochs=1", {"batch_size": 256, "epochs": 1},
           _pretrain(0.40, 0.42, 100), _records([50, 100], 300.0)),
    _point(sweepdir, B256_E2, {"batch_size": 256, "epochs": 2},
           _pretrain(0.45, 0.47, 200), _records([100, 200], 310.0)),
    _point(sweepdir, "batch_size=1024,epochs=1", {"batch_size": 1024, "epochs": 1},
           _pretrain(0.38, 0.41, 50), _records([25, 50], 320.0,
                                                monitor="monitor/knn_accuracy")),
    _point(sweepdir, UNFINISHED, {"batch_size": 1024, "epochs": 2},
           None, _records([25, 50, 75, 60], 330.0),
           config={"batch_size": 1024, "model": {"depth": 18}}),
    _point(sweepdir, MISSING, {"batch_size": 2048, "epochs": 1}),
  ]  # fmt: skip
  for p in points:  # as a sweep file's derive() adds
    p["overrides"]["eval.max_train_examples"] = 10000
  layout.write_manifest(str(sweepdir), "s.py", "base.py", points)
  return sweepdir


def _nontrivial_png(path):
  with Image.open(path) as image:
    assert image.format == "PNG" and image.size[0] > 300
    colours = len(np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), 0))
  assert colours > 20, f"{path} is nearly blank"


def _lines(ax):
  """{legend label: (xs, ys)} of an axis' lines."""
  return {
    l.get_label(): (list(l.get_xdata()), list(l.get_ydata()))
    for l in ax.get_lines()
  }


def test_rows_keep_unfinished_and_missing_points(batch_epochs):
  rows = {r.point: r for r in report.collect(str(batch_epochs))}
  assert [r.status for r in rows.values()] == [
    "done", "done", "done", "unfinished", "missing"
  ]  # fmt: skip
  done = rows[B256_E2]
  assert done.knn_name == "knn_k200_top1"
  values = done.values
  assert values["steps"] == 200 and values["knn_top1"] == 0.45  # largest k
  assert values["linear_top1"] == 0.47 and values["final_loss"] == 4.0
  assert values["images_per_sec"] == 310.5  # median of the reports
  assert values["wall_time_s"] == 600.0 and values["backbone_params"] == 700_464
  assert values["devices"] == 1 and values["processes"] == 1
  partial = rows[UNFINISHED]
  # The last step logged (a resume re-logged 60), first to last record.
  assert partial.values["steps"] == 60
  assert partial.values["wall_time_s"] == 3 * 1800.0
  assert partial.values["knn_top1"] is None
  assert partial.values["images_per_sec"] == 332.5  # the median, not the mean
  assert partial.values["final_loss"] == 2.0
  assert partial.setting("batch_size") == 1024  # the override
  assert partial.setting("model.depth") == 18  # its run_config.json
  missing = rows[MISSING].values
  assert {k: v for k, v in missing.items() if v is not None} == {}


def test_run_writes_csv_table_and_figures(batch_epochs, capsys):
  paths = report.run(str(batch_epochs))
  out = capsys.readouterr().out
  where = batch_epochs / "report"
  table = (where / "report.md").read_text()
  head = table.splitlines()[0]
  assert head.startswith("| point | status | overrides | steps | wall time |")
  assert "| knn_k200_top1 | linear_top1 |" in head
  assert (
    f"| {B256_E2} | done | batch_size=256 epochs=2 | 200 | 10m00s | 310.5 "
    "| 45.00% | 47.00% | 4.0000 | 1 | 0.70M |" in table
  )
  assert (
    f"| {UNFINISHED} | unfinished | batch_size=1024 epochs=2 | 60 |" in table
  )
  assert f"| {MISSING} | missing | batch_size=2048 epochs=1 |" in table
  # Overrides every point shares: once, under the table.
  assert table.endswith(
    "\n\nEvery point also sets eval.max_train_examples=10000.\n"
  )
  assert table.count("eval.max_train_examples") == 1
  assert table in out  # printed too
  with open(where / "report.csv") as f:
    rows = list(csv.DictReader(f))
  assert [r["status"] for r in rows] == [
    "done", "done", "done", "unfinished", "missing"
  ]  # fmt: skip
  assert json.loads(rows[0]["overrides"]) == {
    "batch_size": 256, "epochs": 1, "eval.max_train_examples": 10000
  }  # fmt: skip
  assert float(rows[1]["knn_k200_top1"]) == 0.45  # raw fraction
  assert float(rows[1]["wall_time_s"]) == 600.0
  assert rows[3]["steps"] == "60" and rows[4]["steps"] == ""
  assert rows[1]["mode"] == "pretrain" and rows[1]["processes"] == "1"
  assert f"not finished: {UNFINISHED} (unfinished), {MISSING} (missing)" in out
  assert (
    "skipped accuracy_vs_params.png: the points do not vary model.depth" in out
  )
  assert "skipped throughput_vs_devices.png: the finished points do not" in out
  assert f"accuracy_vs_epochs.png leaves out: {UNFINISHED} (unfinished)" in out
  drawn = sorted(p.split("/")[-1] for p in paths if p.endswith(".png"))
  assert drawn == ["accuracy_vs_epochs.png", "knn_vs_hours.png"]
  assert sorted(p.name for p in where.iterdir()) == sorted(
    drawn + ["report.csv", "report.md"]
  )
  for name in drawn:
    _nontrivial_png(where / name)
    assert str(where / name) in out


def test_epochs_figure_has_a_line_per_batch_and_names_absent_points(
  batch_epochs,
):
  rows = report.collect(str(batch_epochs))
  plot = figures.accuracy_vs_epochs(rows)
  knn_ax, linear_ax = plot.figure.axes
  assert knn_ax.get_ylabel() == "kNN (k=200) top-1 (%)"
  assert linear_ax.get_ylabel() == "linear top-1 (%)"
  lines = _lines(knn_ax)
  assert list(lines) == ["batch 256", "batch 1024"]  # numeric order
  assert lines["batch 256"] == ([1, 2], pytest.approx([40.0, 45.0]))
  assert lines["batch 1024"] == ([1], pytest.approx([38.0]))
  assert _lines(linear_ax)["batch 256"][1] == pytest.approx([42.0, 47.0])
  note = " ".join(t.get_text() for t in plot.figure.texts)
  assert f"{UNFINISHED} (unfinished)" in note and f"{MISSING} (missing)" in note
  assert plot.left_out == [f"{UNFINISHED} (unfinished)", f"{MISSING} (missing)"]


def test_knn_vs_hours_draws_every_point_that_logged_the_monitor(batch_epochs):
  rows = report.collect(str(batch_epochs))
  plot = figures.knn_vs_hours(rows)
  ax = plot.figure.axes[0]
  lines = _lines(ax)
  first = lines["batch_size=256,epochs=1"]
  assert first == ([0.0, 0.5], pytest.approx([20.0, 30.0]))  # hours, %
  # The old monitor name is read as the new one.
  assert lines["batch_size=1024,epochs=1"][1] == pytest.approx([20.0, 30.0])
  # Unfinished: drawn, dotted, and said so.
  partial = [l for l in ax.get_lines() if "unfinished" in l.get_label()]
  assert len(partial) == 1 and partial[0].get_linestyle() == ":"
  # The end-of-run kNN: a star at the last record of each done point.
  stars = [l for l in ax.get_lines() if l.get_marker() == "*"]
  assert len(stars) == 3
  assert (list(stars[1].get_xdata()), list(stars[1].get_ydata())) == (
    [0.5],
    pytest.approx([45.0]),
  )
  assert stars[0].get_label() == "end of run: knn_k200_top1"
  assert plot.left_out == [f"{MISSING} (missing)"]
  assert f"{MISSING} (missing)" in plot.figure.texts[0].get_text()


def _depth_width(tmp_path, with_knn=True):
  sweepdir = tmp_path / "dw"
  points = []
  for depth, width, params, acc in [
    (50, 1, 23e6, 0.6),
    (50, 2, 94e6, 0.65),
    (101, 1, 42e6, 0.62),
    (101, 2, None, 0.7),  # run before results.json had backbone_params
  ]:
    name = f"depth={depth},width_multiplier={width}"
    ov = {"model.depth": depth, "model.width_multiplier": width}
    results = _pretrain(acc, acc + 0.01, 10, params and int(params))
    if not with_knn:
      results["metrics"]["trained"] = {"linear_top1": acc}
    points.append(_point(sweepdir, name, ov, results))
  layout.write_manifest(str(sweepdir), "s.py", "base.py", points)
  return sweepdir


def test_params_figure_for_depth_width_sweeps(tmp_path, capsys):
  sweepdir = _depth_width(tmp_path)
  rows = report.collect(str(sweepdir))
  plot = figures.accuracy_vs_params(rows)
  assert plot.why == "" and len(plot.figure.axes) == 2
  ax = plot.figure.axes[0]
  assert ax.get_xscale() == "log"
  lines = _lines(ax)
  assert list(lines) == ["ResNet-50", "ResNet-101"]
  assert lines["ResNet-50"] == ([23e6, 94e6], pytest.approx([60.0, 65.0]))
  assert lines["ResNet-101"] == ([42e6], pytest.approx([62.0]))
  assert sorted(t.get_text() for t in ax.texts) == ["1x", "1x", "2x"]
  assert plot.left_out == [
    "depth=101,width_multiplier=2 (no backbone parameters)"
  ]
  assert figures.accuracy_vs_epochs(rows).figure is None
  report.run(str(sweepdir))
  out = capsys.readouterr().out
  assert "skipped accuracy_vs_epochs.png: the points do not vary epochs" in out
  assert "skipped knn_vs_hours.png: no point logged monitor/knn_top1" in out
  _nontrivial_png(sweepdir / "report" / "accuracy_vs_params.png")


def test_params_figure_labels_the_linear_axis_when_there_is_no_knn(tmp_path):
  rows = report.collect(str(_depth_width(tmp_path, with_knn=False)))
  plot = figures.accuracy_vs_params(rows)
  (ax,) = plot.figure.axes
  assert ax.get_ylabel() == "linear top-1 (%)"
  assert sorted(t.get_text() for t in ax.texts) == ["1x", "1x", "2x"]


@pytest.fixture
def devices(tmp_path):
  """benchmarks/device_scaling.py's sweep dir: results, no metrics.jsonl."""
  sweepdir = tmp_path / "dev"
  points = []
  for kind, counts in (("weak", (1, 2, 4)), ("strong", (2, 4, 8))):
    for n, rate in zip(counts, (100.0, 150.0, 200.0)):
      results = {
        "schema_version": 2,
        "mode": "benchmark",
        "metrics": {
          "images_per_sec": rate,
          "views_per_sec": 2 * rate,
          "step_time_s": 0.5,
          "scaling_efficiency": rate / (100 * n / counts[0]),
        },
        "checkpoint": {"dir": "x", "step": 5},
        "config": {"batch_size": 32 * n},
        "total_time_s": 12.0,
        "details": {"devices": n, "processes": 1, "scaling": kind},
      }
      name = f"{kind}-devices={n}"
      points.append(_point(sweepdir, name, {"devices": n}, results))
  points.append(_point(sweepdir, "weak-devices=8", {"devices": 8}))
  layout.write_manifest(str(sweepdir), "b.py", "base.py", points)
  return sweepdir


def test_throughput_figure_draws_ideal_scaling(devices):
  rows = report.collect(str(devices))
  plot = figures.throughput_vs_devices(rows)
  ax = plot.figure.axes[0]
  lines = _lines(ax)
  assert lines["weak scaling"] == ([1, 2, 4], [100.0, 150.0, 200.0])
  # Ideal: linear from the smallest device count measured, dashed.
  assert lines["weak: ideal"] == ([1, 2, 4], [100.0, 200.0, 400.0])
  assert lines["strong: ideal"] == ([2, 4, 8], [100.0, 200.0, 400.0])
  ideal = [l for l in ax.get_lines() if l.get_label().endswith("ideal")]
  assert {l.get_linestyle() for l in ideal} == {"--"}
  efficiencies = sorted(t.get_text() for t in ax.texts)
  assert efficiencies == sorted(["100%", "75%", "50%"] * 2)
  assert plot.left_out == ["weak-devices=8 (missing)"]
  assert "weak-devices=8 (missing)" in plot.figure.texts[0].get_text()


def test_benchmark_rows_have_rate_and_efficiency(devices, capsys):
  report.run(str(devices))
  out = capsys.readouterr().out
  table = (devices / "report" / "report.md").read_text()
  assert "| scaling | scaling_efficiency |" in table.splitlines()[0]
  assert "| weak-devices=2 | done | devices=2 | 5 | 0m12s | 150.0 |" in table
  assert "| 150.0 | 2 | weak | 75.0% |" in table
  assert "| weak-devices=8 | missing | devices=8 |" in table
  with open(devices / "report" / "report.csv") as f:
    rows = list(csv.DictReader(f))
  assert float(rows[1]["scaling_efficiency"]) == 0.75
  assert rows[1]["mode"] == "benchmark" and rows[1]["images_per_sec"] == "150.0"
  assert "skipped accuracy_vs_epochs.png" in out
  assert "throughput_vs_devices.png leaves out: weak-devices=8 (missing)" in out
  _nontrivial_png(devices / "report" / "throughput_vs_devices.png")


def test_knn_column_and_old_or_downstream_results(tmp_path):
  sweepdir = tmp_path / "mixed"
  schema1 = {
    "mode": "pretrain",
    "metrics": {"trained": {"knn_k20_accuracy": 0.3, "linear_accuracy": 0.4}},
  }
  knn = {"mode": "knn", "metrics": {"knn_k20_top1": 0.5, "knn_k20_top5": 0.9}}
  linear = {"mode": "linear", "metrics": {"top1": 0.6, "top5": 0.95}}
  points = [
    _point(sweepdir, "new", {"a": 1}, _pretrain(0.7, 0.8, 10)),  # k 200, 20
    _point(sweepdir, "schema1", {"a": 2}, schema1),
    _point(sweepdir, "knn", {"a": 3}, knn),
    _point(sweepdir, "linear", {"a": 4}, linear),
  ]
  layout.write_manifest(str(sweepdir), "s.py", "base.py", points)
  rows = report.collect(str(sweepdir))
  # The largest k every point has: k=200 would leave the others empty.
  assert {r.knn_name for r in rows} == {"knn_k20_top1"}
  assert [r.values["knn_top1"] for r in rows] == [0.69, 0.3, 0.5, None]
  assert [r.values["linear_top1"] for r in rows] == [0.8, 0.4, None, 0.6]


def test_an_unreadable_results_json_is_a_note_not_a_crash(tmp_path, capsys):
  sweepdir = tmp_path / "bad"
  points = [_point(sweepdir, "p", {"epochs": 1}, {})]
  (sweepdir / "p" / "results.json").write_text('{"mode": "pre')
  layout.write_manifest(str(sweepdir), "s.py", "base.py", points)
  report.run(str(sweepdir))
  out = capsys.readouterr().out
  assert "p: results.json is unreadable" in out
  assert "| p | done | epochs=1 | results.json is unreadable |" in out


def test_bad_sweep_directories_are_clear_errors(tmp_path):
  with pytest.raises(UserError, match="has no sweep.json; pass the --sweepdir"):
    report.run(str(tmp_path))
  with pytest.raises(UserError, match="does not exist; pass the --sweepdir"):
    report.run(str(tmp_path / "nowhere"))
  (tmp_path / "sweep.json").write_text("{")
  with pytest.raises(UserError, match="not a readable sweep manifest"):
    report.run(str(tmp_path))
  assert not (tmp_path / "report").exists()  # nothing written
