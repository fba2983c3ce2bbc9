"""`results.json`: the one summary every run writes into its workdir.

The schema is the same for pretraining and for every downstream protocol, so
scripts can collect results without knowing how they were made. Metric
names are `<protocol>_top1` / `<protocol>_top5` everywhere: `knn_k<k>_top1`,
`linear_top1`, `finetune_top1`, `online_head_top1` (schema 1 used
`knn_k<k>_accuracy`, `linear_accuracy`, and bare `top1` in the linear and
fine-tuning modes):

  schema_version  2
  mode            "pretrain" | "linear" | "finetune" | "knn"
  metrics         {name: value}; pretraining: {row: {name: value}} for the
                  trained / random_init / raw_pixels rows, each with
                  knn_k<k>_top1 and (eval.linear_probe) linear_top1, the
                  trained row also online_head_top1 / online_head_top5 (the
                  online supervised head); knn: knn_k<k>_top1 and
                  knn_k<k>_top5 for each k; linear, finetune: <mode>_top1
                  and <mode>_top5
  checkpoint      {"dir": absolute run directory, "step": optimiser steps}
  dataset         {"source", "name", "train_split", "eval_split",
                   "num_train", "num_eval", "num_classes"}
  config          the full config of this run
  time_s          wall time of the invocation that wrote the file, seconds
  total_time_s    wall time of every invocation on this workdir (resumes
                  after a preemption included), seconds
  details         mode-specific extras (pretraining: train_time_s, the
                  pretraining time summed over resumes, devices and
                  processes of the run, backbone_params,
                  unreadable_skipped: training images the last invocation
                  skipped as undecodable; the probe's L2)
  created         UTC timestamp, ISO 8601
"""

from __future__ import annotations

import datetime
import json
import os
import time
from typing import Any, Mapping

import jax
import ml_collections

SCHEMA_VERSION = 2
FILENAME = "results.json"
CLOCK_FILE = "time.json"  # seconds spent on a run, across invocations
KEYS = (
  "schema_version",
  "mode",
  "metrics",
  "checkpoint",
  "dataset",
  "config",
  "time_s",
  "total_time_s",
  "details",
  "created",
)


def dataset_summary(data_cfg: Any, info: Any) -> dict[str, Any]:
  """The `dataset` entry from a data.DataConfig and its data.DatasetInfo."""
  return {
    "source": data_cfg.source,
    "name": data_cfg.name,
    "train_split": data_cfg.train_split,
    "eval_split": data_cfg.eval_split,
    "num_train": info.num_train,
    "num_eval": info.num_eval,
    "num_classes": info.num_classes,
  }


def make(
  *,
  mode: str,
  metrics: Mapping[str, Any],
  checkpoint_dir: str,
  step: int,
  dataset: Mapping[str, Any],
  config: ml_collections.ConfigDict,
  time_s: float,
  details: Mapping[str, Any] | None = None,
  total_time_s: float | None = None,
) -> dict[str, Any]:
  """Builds the results dict in the schema above."""
  return {
    "schema_version": SCHEMA_VERSION,
    "mode": mode,
    "metrics": dict(metrics),
    "checkpoint": {"dir": os.path.abspath(checkpoint_dir), "step": int(step)},
    "dataset": dict(dataset),
    "config": json.loads(config.to_json_best_effort()),
    "time_s": round(float(time_s), 1),
    "total_time_s": round(
      float(time_s if total_time_s is None else total_time_s), 1
    ),
    "details": dict(details or {}),
    "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
      timespec="seconds"
    ),
  }


def write(workdir: str, results: Mapping[str, Any]) -> str | None:
  """Writes `workdir/results.json` atomically (process 0 only); returns the
  path on process 0."""
  if jax.process_index() != 0:
    return None
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, FILENAME)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(results, f, indent=2, sort_keys=False)
  os.replace(tmp, path)
  return path


def read(workdir: str) -> dict[str, Any] | None:
  """`workdir/results.json`, or None if it is missing or unreadable."""
  try:
    with open(os.path.join(workdir, FILENAME)) as f:
      stored = json.load(f)
  except (OSError, ValueError):
    return None
  return stored if isinstance(stored, dict) else None


class RunClock:
  """Wall time spent on one workdir over all its invocations.

  `workdir/time.json` holds {"total_time_s", "train_time_s"} as of the last
  `save()`; a new invocation continues from there, so a run preempted and
  resumed reports the time it really took. Time between the last save and
  a crash is lost (saves are cheap: call it at every checkpoint).
  """

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, CLOCK_FILE)
    try:
      with open(self.path) as f:
        stored = json.load(f)
    except (OSError, ValueError):
      stored = {}
    self._total0 = float(stored.get("total_time_s", 0.0))
    self._train0 = float(stored.get("train_time_s", 0.0))
    self.start = time.time()
    self._train_start: float | None = None
    self._trained = 0.0

  def start_training(self) -> None:
    self._train_start = time.time()

  def stop_training(self) -> None:
    if self._train_start is not None:
      self._trained += time.time() - self._train_start
      self._train_start = None

  @property
  def elapsed_s(self) -> float:
    """Seconds of this invocation."""
    return time.time() - self.start

  @property
  def total_time_s(self) -> float:
    return self._total0 + self.elapsed_s

  @property
  def train_time_s(self) -> float:
    running = time.time() - self._train_start if self._train_start else 0.0
    return self._train0 + self._trained + running

  def save(self) -> None:
    """Writes time.json atomically (process 0 only)."""
    if jax.process_index() != 0:
      return
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    tmp = f"{self.path}.tmp"
    with open(tmp, "w") as f:
      json.dump(
        {
          "total_time_s": round(self.total_time_s, 1),
          "train_time_s": round(self.train_time_s, 1),
        },
        f,
      )
    os.replace(tmp, self.path)
