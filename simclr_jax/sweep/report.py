"""`python -m simclr_jax.sweep report SWEEPDIR [--out OUT]`.

Collects every point of SWEEPDIR/sweep.json (layout.py) into one row, from
the point's results.json (results.py) and metrics.jsonl (reporting.py):

  point, status    the point's name; done / unfinished / missing
  overrides        its dotted config overrides
  steps            checkpoint.step; unfinished: the last logged step
  wall_time_s      total_time_s; unfinished: first to last metrics record
  images_per_sec   median of the logged rates; benchmark points: measured
  knn_k<k>_top1    the end-of-run kNN top-1 of the largest k every point
                   has (pretraining: the trained row; mode=knn: flat)
  linear_top1      the linear probe (pretraining) or linear evaluation
  final_loss       the last contrastive_loss logged
  devices, processes, backbone_params   results.json details (empty for
                   runs older than these fields)
  scaling, scaling_efficiency           benchmarks/device_scaling.py points

Writes OUT/report.csv (every column, raw values: fractions, seconds, JSON
overrides), OUT/report.md (the table: accuracies in %, columns without any
value left out, the overrides every point shares named once below it) and
the figures of figures.py the sweep has data for; OUT defaults to
SWEEPDIR/report. Prints the table, the points not finished, each figure
skipped (and why) or drawn without some points (and why), then the written
paths. Unfinished and missing points are rows too: nothing is dropped
silently.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
from typing import Any, Sequence

import numpy as np

from simclr_jax import results as results_lib
from simclr_jax.errors import UserError
from simclr_jax.metrics_log import new_name
from simclr_jax.reporting import METRICS_FILE
from simclr_jax.reporting import format_duration
from simclr_jax.sweep import layout

KNN = "knn_top1"  # the kNN column; its header names the k (header())
COLUMNS = (
  "point", "status", "mode", "overrides", "steps", "wall_time_s",
  "images_per_sec", KNN, "linear_top1", "final_loss", "devices",
  "processes", "backbone_params", "scaling", "scaling_efficiency", "note",
)  # fmt: skip
_TEXT = COLUMNS[:4]  # the columns every row has
_NOT_IN_MARKDOWN = ("mode", "processes")
# metrics.jsonl cannot say which config a run used: an unfinished point's
# config comes from the run_config.json it wrote (checkpointing.RUN_CONFIG,
# not imported: that module loads orbax).
_RUN_CONFIG = "run_config.json"
_KNN_NAME = re.compile(r"knn_k(\d+)_top1")


@dataclasses.dataclass
class Row:
  """One point of the sweep: its columns (`values`, COLUMNS after _TEXT),
  config and metrics records (for the figures)."""

  point: str
  status: str
  overrides: dict[str, Any]
  mode: str = ""
  config: dict[str, Any] = dataclasses.field(default_factory=dict)
  values: dict[str, Any] = dataclasses.field(default_factory=dict)
  records: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  knn: dict[int, float] = dataclasses.field(default_factory=dict)  # k: top-1
  knn_name: str = ""  # the sweep's kNN metric, e.g. knn_k200_top1

  def setting(self, dotted: str) -> Any:
    """The point's value of a config key: its override, else its stored
    config, else None."""
    if dotted in self.overrides:
      return self.overrides[dotted]
    node: Any = self.config
    for part in dotted.split("."):
      if not isinstance(node, dict) or part not in node:
        return None
      node = node[part]
    return node


def read_records(run_dir: str) -> list[dict[str, Any]]:
  """metrics.jsonl as written, one {"step", "time", metric: value} per
  line, old metric names renamed (metrics_log.new_name). Not
  metrics_log.load_metrics: wall time and the kNN-vs-hours figure need each
  record's time, which it drops."""
  path = os.path.join(run_dir, METRICS_FILE)
  out = []
  try:
    with open(path, encoding="utf-8") as f:
      for line in f:
        try:
          record = json.loads(line)
        except ValueError:
          continue  # a line cut off by a crash
        if isinstance(record, dict):
          out.append({new_name(k): v for k, v in record.items()})
  except OSError:
    return []
  return out


def _logged(records: Sequence[dict[str, Any]], key: str) -> list[float]:
  """Every numeric value of `key` in `records`, in order."""
  return [
    float(r[key])
    for r in records
    if isinstance(r.get(key), (int, float)) and not isinstance(r[key], bool)
  ]


def accuracies(results: dict[str, Any]) -> tuple[dict[int, float], Any]:
  """({k: kNN top-1}, linear top-1 or None) of a results.json: the trained
  row of a pretraining run, the flat metrics of a downstream one (schema 1
  names too: ..._accuracy, a linear run's bare top1)."""
  metrics = results.get("metrics")
  metrics = metrics if isinstance(metrics, dict) else {}
  trained = metrics.get("trained")
  flat = trained if isinstance(trained, dict) else metrics
  flat = {
    new_name(k): float(v)
    for k, v in flat.items()
    if isinstance(v, (int, float)) and not isinstance(v, bool)
  }
  knn = {
    int(m.group(1)): v for k, v in flat.items() if (m := _KNN_NAME.fullmatch(k))
  }
  linear = flat.get("linear_top1")
  if linear is None and results.get("mode") in ("linear", "logistic"):
    linear = flat.get("top1")
  return knn, linear


def _read_json(path: str) -> dict[str, Any] | None:
  try:
    with open(path, encoding="utf-8") as f:
      stored = json.load(f)
  except (OSError, ValueError):
    return None
  return stored if isinstance(stored, dict) else None


def _values(row: Row, results: dict[str, Any]) -> dict[str, Any]:
  """The row's columns from results.json (done) or its records."""
  details = results.get("details") or {}
  metrics = results.get("metrics") or {}
  benchmark = row.mode == "benchmark"
  rates = _logged(row.records, "images_per_sec")
  times = _logged(row.records, "time")
  steps = _logged(row.records, "step")
  losses = _logged(row.records, "contrastive_loss")
  step = (results.get("checkpoint") or {}).get("step")
  wall = results.get("total_time_s")
  if benchmark:
    rate = metrics.get("images_per_sec")
  else:
    rate = float(np.median(rates)) if rates else None
  return {
    "steps": step if step is not None else (int(steps[-1]) if steps else None),
    "wall_time_s": wall
    if wall is not None
    else (round(max(times) - min(times), 1) if len(times) > 1 else None),
    "images_per_sec": rate,
    "linear_top1": accuracies(results)[1],
    "final_loss": losses[-1] if losses else None,
    "devices": details.get("devices"),
    "processes": details.get("processes"),
    "backbone_params": details.get("backbone_params"),
    "scaling": details.get("scaling"),
    "scaling_efficiency": metrics.get("scaling_efficiency")
    if benchmark
    else None,
  }


def collect_row(sweepdir: str, point: dict[str, Any]) -> Row:
  """The row of one manifest point (its kNN column is set by collect)."""
  name = point["name"]
  row = Row(name, layout.status(sweepdir, name), dict(point["overrides"]))
  run_dir = layout.point_dir(sweepdir, name)
  row.records = read_records(run_dir)
  results: dict[str, Any] = {}
  note = ""
  if row.status == layout.DONE:
    results = results_lib.read(run_dir) or {}
    if not results:
      note = f"{results_lib.FILENAME} is unreadable"
  stored = _read_json(os.path.join(run_dir, _RUN_CONFIG)) or {}
  config = results.get("config") or stored.get("config")
  row.config = config if isinstance(config, dict) else {}
  row.mode = str(results.get("mode") or "")
  row.knn = accuracies(results)[0]
  row.values = _values(row, results)
  row.values["note"] = note or None
  return row


def knn_k(rows: Sequence[Row]) -> int | None:
  """The k of the kNN column: the largest k that every point with a kNN
  result has (else the largest any has), so the column compares alike."""
  sets = [set(r.knn) for r in rows if r.knn]
  if not sets:
    return None
  common = set.intersection(*sets)
  return max(common or set.union(*sets))


def collect(sweepdir: str) -> list[Row]:
  """Every point of the sweep, in manifest order; a UserError (saying what
  to pass instead) for a directory that is not a sweep."""
  if not os.path.isdir(sweepdir):
    raise UserError(
      f"sweep directory {sweepdir} does not exist; pass the --sweepdir of "
      "`python -m simclr_jax.sweep run` (or the --out of "
      "benchmarks/device_scaling.py)"
    )
  manifest = layout.read_manifest(sweepdir)
  if manifest is None:
    raise UserError(
      f"{sweepdir} has no {layout.MANIFEST}; pass the --sweepdir of "
      "`python -m simclr_jax.sweep run` (or the --out of "
      "benchmarks/device_scaling.py)"
    )
  rows = [collect_row(sweepdir, p) for p in manifest["points"]]
  k = knn_k(rows)
  for r in rows:
    r.knn_name = f"knn_k{k}_top1" if k is not None else KNN
    r.values[KNN] = r.knn.get(k) if k is not None else None
  return rows


def header(rows: Sequence[Row], column: str) -> str:
  """A column's name in the CSV and the table: the kNN one names its k."""
  return rows[0].knn_name if column == KNN and rows else column


def _cells(row: Row) -> dict[str, Any]:
  """Every column of `row`, raw (None: no value)."""
  fixed = [row.point, row.status, row.mode or None, row.overrides]
  return {**dict(zip(_TEXT, fixed)), **row.values}


def write_csv(rows: Sequence[Row], path: str) -> str:
  """report.csv: every column, raw values (overrides as JSON)."""
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow([header(rows, c) for c in COLUMNS])
    for r in rows:
      cells = _cells(r)
      cells["overrides"] = json.dumps(r.overrides, sort_keys=True)
      writer.writerow(["" if cells[c] is None else cells[c] for c in COLUMNS])
  return path


def _format(column: str, value: Any) -> str:
  """A markdown cell."""
  if value is None:
    return ""
  if column in (KNN, "linear_top1"):
    return f"{100 * value:.2f}%"
  if column == "scaling_efficiency":
    return f"{100 * value:.1f}%"
  if column == "overrides":
    return " ".join(f"{k}={v}" for k, v in value.items())
  if column == "wall_time_s":
    return format_duration(value)
  if column == "images_per_sec":
    return f"{value:.1f}"
  if column == "final_loss":
    return f"{value:.4f}"
  if column == "backbone_params":
    return f"{value / 1e6:.2f}M"
  return str(value).replace("|", "\\|")


def shared_overrides(rows: Sequence[Row]) -> dict[str, Any]:
  """The overrides every point sets alike (a sweep file's derive() often
  adds some): the table names them once, under it."""
  if len(rows) < 2:
    return {}
  same = lambda k: len({json.dumps(r.overrides.get(k)) for r in rows}) == 1
  return {k: v for k, v in rows[0].overrides.items() if same(k)}


def markdown(rows: Sequence[Row]) -> str:
  """report.md's table: every row; columns without any value left out, the
  overrides all points share named once below it."""
  shared = shared_overrides(rows)
  cells = [_cells(r) for r in rows]
  for row in cells:
    row["overrides"] = {
      k: v for k, v in row["overrides"].items() if k not in shared
    }
  used = [
    c
    for c in COLUMNS
    if c not in _NOT_IN_MARKDOWN
    and (c in _TEXT or any(row[c] is not None for row in cells))
  ]
  names = {"wall_time_s": "wall time"}
  head = [names.get(c, header(rows, c)) for c in used]
  lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
  for row in cells:
    lines.append("| " + " | ".join(_format(c, row[c]) for c in used) + " |")
  if shared:
    lines += ["", f"Every point also sets {_format('overrides', shared)}."]
  return "\n".join(lines) + "\n"


def run(sweepdir: str, out: str | None = None) -> list[str]:
  """Writes report.md, report.csv and the figures into `out` (default
  SWEEPDIR/report); prints the table, what is left out of what, and the
  paths written, which it returns."""
  from simclr_jax.sweep import figures  # pylint: disable=g-import-not-at-top

  rows = collect(sweepdir)
  out = out or os.path.join(sweepdir, "report")
  os.makedirs(out, exist_ok=True)
  table = markdown(rows)
  paths = [os.path.join(out, "report.md")]
  with open(paths[0], "w", encoding="utf-8") as f:
    f.write(table)
  paths.append(write_csv(rows, os.path.join(out, "report.csv")))
  print(table)
  absent = [f"{r.point} ({r.status})" for r in rows if r.status != layout.DONE]
  if absent:
    print(f"not finished: {', '.join(absent)}")
  for r in rows:
    if r.values.get("note"):
      print(f"{r.point}: {r.values['note']}")
  for plot in figures.draw_all(rows):
    if plot.figure is None:
      print(f"skipped {plot.name}.png: {plot.why}")
      continue
    paths.append(figures.save(plot, out))
    if plot.left_out:
      print(f"{plot.name}.png leaves out: {', '.join(plot.left_out)}")
  print(*(os.path.abspath(p) for p in paths), sep="\n")
  return paths
