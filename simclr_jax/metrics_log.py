"""Reading a run's logged scalars: `RUN_DIR/metrics.jsonl` (written by
`reporting.Reporter`), or the TensorBoard event files of runs made before
that file existed. TensorFlow is imported only for the latter.
"""

from __future__ import annotations

import collections
import glob
import json
import os
import re
from typing import Sequence

import numpy as np

from simclr_jax.errors import UserError
from simclr_jax.reporting import METRICS_FILE

Metrics = dict[str, tuple[np.ndarray, np.ndarray]]
_NOT_METRICS = ("step", "time")


def new_name(key: str) -> str:
  """This release's name: `..._accuracy` is now `..._top1`."""
  return re.sub(r"_accuracy$", "_top1", key)


def _read_jsonl(path: str) -> dict[str, dict[int, float]]:
  """{metric: {step: value}}; later lines overwrite earlier ones."""
  series: dict[str, dict[int, float]] = collections.defaultdict(dict)
  with open(path, encoding="utf-8") as f:
    for line in f:
      try:
        record = json.loads(line)
        step = int(record["step"])
      except (ValueError, KeyError, TypeError):
        continue  # blank, or cut off by a crash mid-write
      for key, value in record.items():
        if key in _NOT_METRICS or isinstance(value, bool):
          continue
        if isinstance(value, (int, float)):
          series[key][step] = float(value)
  return series


def _read_event_files(paths: Sequence[str]) -> dict[str, dict[int, float]]:
  """Scalar summaries from TensorBoard event files, in write-time order.

  clu writes scalars as tensor summaries of the "scalars" plugin; older
  writers used `simple_value`. Both are read.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  points = []  # (wall_time, order, tag, step, value)
  for path in paths:
    try:
      for record in tf.data.TFRecordDataset(path):
        event = tf.compat.v1.Event.FromString(record.numpy())
        for v in event.summary.value:
          if v.HasField("simple_value"):
            value = float(v.simple_value)
          elif (
            v.HasField("tensor")
            and v.metadata.plugin_data.plugin_name == "scalars"
          ):
            value = float(tf.make_ndarray(v.tensor).reshape(()))
          else:
            continue
          points.append(
            (event.wall_time, len(points), v.tag, event.step, value)
          )
    except tf.errors.DataLossError:
      pass  # a file cut off by a crash: keep what was read
  series: dict[str, dict[int, float]] = collections.defaultdict(dict)
  for _, _, tag, step, value in sorted(points):
    series[tag][int(step)] = value
  return series


def load_metrics(run_dir: str) -> Metrics:
  """{metric: (steps, values)} from a run dir, steps ascending and unique."""
  if not os.path.isdir(run_dir):
    raise UserError(
      f"run directory {run_dir} does not exist; pass the "
      "--workdir of a training run."
    )
  path = os.path.join(run_dir, METRICS_FILE)
  if os.path.exists(path):
    series, source = _read_jsonl(path), path
  else:
    events = sorted(glob.glob(os.path.join(run_dir, "*tfevents*")))
    if not events:
      raise UserError(
        f"no {METRICS_FILE} (or TensorBoard event files) in "
        f"{run_dir}; pass the --workdir of a training run that "
        "has logged at least one step."
      )
    series, source = _read_event_files(events), f"the event files in {run_dir}"
  if not series:
    raise UserError(
      f"{source} holds no metrics yet; plot again once the run "
      "has logged a step."
    )
  out = {}
  for key, by_step in series.items():
    steps = np.array(sorted(by_step), dtype=np.int64)
    out[key] = (steps, np.array([by_step[s] for s in steps], dtype=np.float64))
  return out
