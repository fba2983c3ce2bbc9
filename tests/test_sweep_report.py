"""`python -m simclr_jax.sweep report`: rows, CSV, table and figures from
hand-written sweep directories (no training)."""

import csv
import json

import pytest
from PIL import Image

from simclr_jax.errors import UserError
from simclr_jax.sweep import figures
from simclr_jax.sweep import layout
from simclr_jax.sweep import report


def _point(sweepdir, name, overrides, results=None, records=()):
  """A manifest entry, with its run dir when it has results or records."""
  run = sweepdir / name
  if results is not None or records:
    run.mkdir(parents=True)
  if records:
    lines = [json.dumps(r) for r in records]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
  if results is not None:
    (run / "results.json").write_text(json.dumps(results))
  return {"name": name, "overrides": overrides, "command": []}


def _pretrain(knn, linear, steps, params=700_464, devices=1):
  return {
    "mode": "pretrain",
    "metrics": {
      "trained": {
        "knn_k200_top1": knn,
        "knn_k20_top1": 0.0,
        "linear_top1": linear,
      }
    },
    "checkpoint": {"step": steps},
    "config": {
      "batch_size": 999,
      "model": {"depth": 18, "width_multiplier": 0.25},
    },
    "total_time_s": 600.0,
    "details": {"devices": devices, "backbone_params": params},
  }


def _records(steps, rate, t0=1000.0):
  out = []
  for i, step in enumerate(steps):
    out.append(
      {"step": step, "time": t0 + 1800 * i, "images_per_sec": rate + i * i,
       "contrastive_loss": 5.0 - i, "monitor/knn_top1": 0.2 + 0.1 * i}
    )  # fmt: skip
  return out


@pytest.fixture
def batch_epochs(tmp_path):
  sweepdir = tmp_path / "sw"
  points = [
    _point(sweepdir, "batch_size=128,epochs=1", {"batch_size": 128, "epochs": 1},
           _pretrain(0.40, 0.42, 100), _records([50, 100], 300.0)),
    _point(sweepdir, "batch_size=128,epochs=2", {"batch_size": 128, "epochs": 2},
           _pretrain(0.45, 0.47, 200), _records([100, 200], 310.0)),
    _point(sweepdir, "batch_size=256,epochs=1", {"batch_size": 256, "epochs": 1},
           _pretrain(0.38, 0.41, 50), _records([25, 50], 320.0)),
    # Interrupted: records but no results; and one never started.
    _point(sweepdir, "batch_size=256,epochs=2", {"batch_size": 256, "epochs": 2},
           None, _records([25, 50, 75], 330.0)),
    _point(sweepdir, "batch_size=512,epochs=1", {"batch_size": 512, "epochs": 1}),
  ]  # fmt: skip
  layout.write_manifest(str(sweepdir), "s.py", "base.py", points)
  return sweepdir


def test_rows_keep_unfinished_and_missing_points(batch_epochs):
  rows = {r.point: r for r in report.collect(str(batch_epochs))}
  assert [r.status for r in rows.values()] == [
    "done", "done", "done", "unfinished", "missing"
  ]  # fmt: skip
  done = rows["batch_size=128,epochs=2"].values
  assert done["steps"] == 200 and done["knn_top1"] == 0.45  # largest k
  assert done["linear_top1"] == 0.47 and done["final_loss"] == 4.0
  assert done["images_per_sec"] == 310.5  # median of the reports
  assert done["wall_time_s"] == 600.0 and done["backbone_params"] == 700_464
  partial = rows["batch_size=256,epochs=2"].values
  assert partial["steps"] == 75 and partial["wall_time_s"] == 3600.0
  assert partial["knn_top1"] is None
  assert partial["images_per_sec"] == 331.0  # the median, not the mean
  assert rows["batch_size=512,epochs=1"].values["steps"] is None


def test_run_writes_csv_table_and_figures(batch_epochs, capsys):
  paths = report.run(str(batch_epochs))
  out = capsys.readouterr().out
  where = batch_epochs / "report"
  table = (where / "report.md").read_text()
  assert (
    "| batch_size=128,epochs=2 | done | batch_size=128 epochs=2 | 200 |"
    in table
  )
  assert "| knn_k200_top1 |" in table.splitlines()[0] + "|"
  assert "45.00%" in table and "47.00%" in table and "10.0 min" in table
  assert "| batch_size=512,epochs=1 | missing |" in table
  with open(where / "report.csv") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 5 and rows[3]["status"] == "unfinished"
  assert json.loads(rows[0]["overrides"]) == {"batch_size": 128, "epochs": 1}
  assert float(rows[1]["knn_top1"]) == 0.45
  assert "not finished: batch_size=256,epochs=2 (unfinished)" in out
  assert "batch_size=512,epochs=1 (missing)" in out
  assert "skipped accuracy_vs_params: the points do not vary model.depth" in out
  assert "skipped throughput_vs_devices: the points do not differ" in out
  drawn = {p.split("/")[-1] for p in paths if p.endswith(".png")}
  assert drawn == {"accuracy_vs_epochs.png", "knn_vs_hours.png"}
  for name in drawn:
    with Image.open(where / name) as image:
      assert image.format == "PNG" and image.size[0] > 300


def test_epochs_figure_has_a_line_per_batch_and_names_absent_points(
  batch_epochs,
):
  rows = report.collect(str(batch_epochs))
  fig, _ = figures.accuracy_vs_epochs(rows)
  knn_ax = fig.axes[0]
  lines = {l.get_label(): list(l.get_xdata()) for l in knn_ax.get_lines()}
  assert lines == {"batch 128": [1, 2], "batch 256": [1]}
  ys = [list(l.get_ydata()) for l in knn_ax.get_lines()]
  assert ys[0] == pytest.approx([40.0, 45.0])
  note = " ".join(t.get_text() for t in fig.texts)
  assert "batch_size=256,epochs=2 (unfinished)" in note
  assert "batch_size=512,epochs=1 (missing)" in note
  fig, _ = figures.knn_vs_hours(rows)
  first = fig.axes[0].get_lines()[0]
  assert list(first.get_xdata()) == [0.0, 0.5]  # hours since its first report
  assert list(first.get_ydata()) == pytest.approx([20.0, 30.0])


def test_params_figure_for_depth_width_sweeps(tmp_path):
  sweepdir = tmp_path / "dw"
  points = []
  for depth, width, params, knn in [
    (18, 1, 11e6, 0.5),
    (18, 2, 44e6, 0.55),
    (50, 1, 23e6, 0.6),
  ]:
    name = f"depth={depth},width_multiplier={width}"
    ov = {"model.depth": depth, "model.width_multiplier": width}
    points.append(
      _point(sweepdir, name, ov, _pretrain(knn, knn, 10, int(params)))
    )
  layout.write_manifest(str(sweepdir), "s.py", "base.py", points)
  rows = report.collect(str(sweepdir))
  fig, why = figures.accuracy_vs_params(rows)
  assert why == "" and fig.axes[0].get_xscale() == "log"
  lines = {l.get_label(): list(l.get_xdata()) for l in fig.axes[0].get_lines()}
  assert lines == {"ResNet-18": [11e6, 44e6], "ResNet-50": [23e6]}
  labels = {t.get_text() for t in fig.axes[0].texts}
  assert labels == {"1x", "2x"}
  assert figures.accuracy_vs_epochs(rows)[0] is None


def test_throughput_figure_draws_ideal_scaling(tmp_path):
  sweepdir = tmp_path / "dev"
  points = []
  for kind, counts in (("weak", (1, 2, 4)), ("strong", (2, 4, 8))):
    for n, rate in zip(counts, (100.0, 150.0, 200.0)):
      results = {
        "mode": "benchmark",
        "metrics": {
          "images_per_sec": rate,
          "scaling_efficiency": rate / (100 * n),
        },
        "checkpoint": {"step": 5},
        "details": {"devices": n, "scaling": kind},
      }
      name = f"{kind}-devices={n}"
      points.append(_point(sweepdir, name, {"devices": n}, results))
  points.append(_point(sweepdir, "weak-devices=8", {"devices": 8}))
  layout.write_manifest(str(sweepdir), "b.py", "base.py", points)
  rows = report.collect(str(sweepdir))
  fig, why = figures.throughput_vs_devices(rows)
  lines = {l.get_label(): list(l.get_ydata()) for l in fig.axes[0].get_lines()}
  assert lines["weak scaling"] == [100.0, 150.0, 200.0]
  assert lines["weak: ideal"] == [100.0, 200.0, 400.0]
  # Ideal: linear from the smallest device count measured.
  assert lines["strong: ideal"] == [100.0, 200.0, 400.0]
  assert "weak-devices=8 (missing)" in fig.texts[0].get_text()
  table = report.markdown(rows)
  assert "scaling_efficiency" in table and "| 0.75 |" in table


def test_a_directory_without_manifest_is_a_clear_error(tmp_path):
  with pytest.raises(UserError, match="has no sweep.json; pass the --sweepdir"):
    report.run(str(tmp_path))
