"""`python -m simclr_jax.sweep report SWEEPDIR [--out DIR]`.

Collects every point of SWEEPDIR/sweep.json (layout.py) into one row: its
status, overrides, steps, wall time, images/s, kNN and linear accuracy,
final contrastive loss, devices and backbone parameters, from the point's
results.json and metrics.jsonl. Writes report.csv (raw values) and
report.md (a table) into DIR (default SWEEPDIR/report), then the figures of
figures.py that the sweep has data for. Unfinished and missing points are
rows too, and are named on every figure: nothing is dropped silently.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from typing import Any

import numpy as np

from simclr_jax.errors import UserError
from simclr_jax.reporting import METRICS_FILE
from simclr_jax.results import FILENAME as RESULTS_FILE
from simclr_jax.sweep import layout

COLUMNS = (
  "point", "status", "overrides", "steps", "wall_time_s", "images_per_sec",
  "knn_top1", "linear_top1", "final_loss", "devices", "backbone_params",
  "scaling", "scaling_efficiency",
)  # fmt: skip


@dataclasses.dataclass
class Row:
  """One point of the sweep, as the report shows it."""

  point: str
  status: str
  overrides: dict[str, Any]
  config: dict[str, Any] = dataclasses.field(default_factory=dict)
  values: dict[str, Any] = dataclasses.field(default_factory=dict)
  records: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  knn_name: str = ""

  def setting(self, dotted: str) -> Any:
    """The point's value of a config key: its override, else results.json's
    config, else None."""
    if dotted in self.overrides:
      return self.overrides[dotted]
    node: Any = self.config
    for part in dotted.split("."):
      if not isinstance(node, dict) or part not in node:
        return None
      node = node[part]
    return node


def _records(run_dir: str) -> list[dict[str, Any]]:
  """metrics.jsonl as a list of {"step", "time", metric: value}."""
  path = os.path.join(run_dir, METRICS_FILE)
  if not os.path.isfile(path):
    return []
  out = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      try:
        out.append(json.loads(line))
      except ValueError:
        continue  # a line cut by a crash
  return out


def _last(records: list[dict], key: str) -> float | None:
  values = [r[key] for r in records if key in r]
  return values[-1] if values else None


def _accuracies(results: dict[str, Any]) -> tuple[str, Any, Any]:
  """(kNN metric name, kNN top-1, linear top-1) of a results.json; the kNN
  of the largest k."""
  metrics = results.get("metrics") or {}
  flat = metrics.get("trained", metrics)
  if not isinstance(flat, dict):
    return "", None, None
  knn = sorted(
    (int(k.split("_")[1][1:]), k)
    for k in flat
    if k.startswith("knn_k") and k.endswith("_top1")
  )
  name = knn[-1][1] if knn else ""
  return name, flat.get(name), flat.get("linear_top1")


def collect_row(sweepdir: str, point: dict[str, Any]) -> Row:
  """The row of one manifest point."""
  name = point["name"]
  row = Row(name, layout.status(sweepdir, name), dict(point["overrides"]))
  run_dir = layout.point_dir(sweepdir, name)
  row.records = _records(run_dir)
  results: dict[str, Any] = {}
  if row.status == layout.DONE:
    with open(os.path.join(run_dir, RESULTS_FILE), encoding="utf-8") as f:
      results = json.load(f)
  row.config = results.get("config") or {}
  details = results.get("details") or {}
  metrics = results.get("metrics") or {}
  rates = [r["images_per_sec"] for r in row.records if "images_per_sec" in r]
  times = [r["time"] for r in row.records if "time" in r]
  row.knn_name, knn, linear = _accuracies(results)
  benchmark = results.get("mode") == "benchmark"
  row.values = {
    "steps": (results.get("checkpoint") or {}).get("step")
    or _last(row.records, "step"),
    "wall_time_s": results.get("total_time_s")
    or (round(times[-1] - times[0], 1) if len(times) > 1 else None),
    "images_per_sec": metrics.get("images_per_sec")
    if benchmark
    else (float(np.median(rates)) if rates else None),
    "knn_top1": knn,
    "linear_top1": linear,
    "final_loss": _last(row.records, "contrastive_loss"),
    "devices": details.get("devices"),
    "backbone_params": details.get("backbone_params"),
    "scaling": details.get("scaling"),
    "scaling_efficiency": metrics.get("scaling_efficiency")
    if benchmark
    else None,
  }
  return row


def collect(sweepdir: str) -> list[Row]:
  """Every point of the sweep, in manifest order."""
  manifest = layout.read_manifest(sweepdir)
  if manifest is None:
    raise UserError(
      f"{sweepdir} has no {layout.MANIFEST}; pass the --sweepdir of "
      "`python -m simclr_jax.sweep run` (or of benchmarks/device_scaling.py)"
    )
  return [collect_row(sweepdir, p) for p in manifest["points"]]


def _overrides_text(overrides: dict[str, Any]) -> str:
  return " ".join(f"{k}={v}" for k, v in overrides.items())


def _cell(key: str, value: Any) -> str:
  if value is None:
    return ""
  if key in ("knn_top1", "linear_top1"):
    return f"{100 * value:.2f}%"
  if key == "wall_time_s":
    return f"{value / 60:.1f} min"
  if key in ("images_per_sec", "final_loss", "scaling_efficiency"):
    return f"{value:.3g}" if key != "images_per_sec" else f"{value:.0f}"
  if key == "backbone_params":
    return f"{value:,}"
  return str(value)


def markdown(rows: list[Row]) -> str:
  """The table of report.md; columns no row has a value for are left out."""
  used = [
    c for c in COLUMNS[3:] if any(r.values.get(c) is not None for r in rows)
  ]
  knn = next((r.knn_name for r in rows if r.knn_name), "")
  names = {"knn_top1": knn or "knn_top1", "wall_time_s": "wall time"}
  head = ["point", "status", "overrides"] + [names.get(c, c) for c in used]
  lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
  for r in rows:
    cells = [r.point, r.status, _overrides_text(r.overrides)]
    cells += [_cell(c, r.values.get(c)) for c in used]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def write_csv(rows: list[Row], path: str) -> str:
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(COLUMNS)
    for r in rows:
      writer.writerow(
        [r.point, r.status, json.dumps(r.overrides)]
        + ["" if r.values.get(c) is None else r.values[c] for c in COLUMNS[3:]]
      )
  return path


def run(sweepdir: str, out: str | None = None) -> list[str]:
  """Writes the CSV, the markdown table and the figures; prints the table,
  the skipped figures with the reason, and the paths."""
  from simclr_jax.sweep import figures  # pylint: disable=g-import-not-at-top

  rows = collect(sweepdir)
  out = out or os.path.join(sweepdir, "report")
  os.makedirs(out, exist_ok=True)
  table = markdown(rows)
  with open(os.path.join(out, "report.md"), "w", encoding="utf-8") as f:
    f.write(table)
  paths = [write_csv(rows, os.path.join(out, "report.csv"))]
  paths.insert(0, os.path.join(out, "report.md"))
  print(table, end="")
  absent = [f"{r.point} ({r.status})" for r in rows if r.status != layout.DONE]
  if absent:
    print(f"not finished: {', '.join(absent)}")
  drawn, skipped = figures.draw_all(rows, out)
  for name, why in skipped:
    print(f"skipped {name}: {why}")
  paths += drawn
  print(*(os.path.abspath(p) for p in paths), sep="\n")
  return paths
