"""`results.json`: the one summary every run writes into its workdir.

The schema is the same for pretraining and for every downstream protocol, so
scripts can collect results without knowing how they were made:

  schema_version  1
  mode            "pretrain" | "linear" | "finetune" | "knn"
  metrics         {name: value} (pretraining: {encoder: {name: value}} for
                  the trained / random_init / raw_pixels rows, each with
                  knn_k<k>_accuracy and (eval.linear_probe)
                  linear_accuracy; the trained row
                  also has online_head_top1 / online_head_top5, the online
                  supervised head on the eval split)
  checkpoint      {"dir": absolute run directory, "step": optimiser steps}
  dataset         {"source", "name", "train_split", "eval_split",
                   "num_train", "num_eval", "num_classes"}
  config          the full config of this run
  time_s          wall time of this invocation, seconds
  details         mode-specific extras (e.g. the probe's chosen L2)
  created         UTC timestamp, ISO 8601
"""

from __future__ import annotations

import datetime
import json
import os
from typing import Any, Mapping

import jax
import ml_collections

SCHEMA_VERSION = 1
FILENAME = "results.json"
KEYS = (
  "schema_version",
  "mode",
  "metrics",
  "checkpoint",
  "dataset",
  "config",
  "time_s",
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
