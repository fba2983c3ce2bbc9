"""A finished pretraining run is reported, not recomputed: its stored
results.json stands while the eval settings it was made with are unchanged.
"""

from __future__ import annotations

import json
from typing import Any

import jax
import ml_collections

from simclr_jax import configlib
from simclr_jax import results as results_lib
from simclr_jax.eval import frozen


def _eval_settings(config: Any) -> Any:
  """What the end-of-run evaluation depends on, as plain JSON values."""
  as_json = lambda c: json.loads(c.to_json_best_effort())  # noqa: E731
  return {"eval": as_json(config.eval), "split": config.data.eval_split}


def stored_results(
  run: configlib.RunConfig,
  workdir: str,
  latest: int | None,
  total_steps: int,
) -> dict[str, Any] | None:
  """The stored results of a finished run that need not be recomputed."""
  stored = results_lib.read(workdir)
  if run.train.reevaluate or latest != total_steps or stored is None:
    return None
  if stored.get("mode") != "pretrain":
    return None
  if (stored.get("checkpoint") or {}).get("step") != total_steps:
    return None
  try:
    before = _eval_settings(ml_collections.ConfigDict(stored["config"]))
  except (KeyError, TypeError, AttributeError):
    return None
  return stored if before == _eval_settings(run.source) else None


def print_finished(results: dict[str, Any], workdir: str) -> None:
  if jax.process_index() != 0:
    return
  step = results["checkpoint"]["step"]
  print(
    f"{workdir} holds a finished run (step {step}/{step}); results from "
    f"its {results_lib.FILENAME} ({results.get('created', '?')}):",
    flush=True,
  )
  metrics = results.get("metrics") or {}
  if metrics and all(isinstance(v, dict) for v in metrics.values()):
    print(frozen.results_table(metrics), flush=True)
  else:
    print("(no evaluation was configured)", flush=True)
  print(
    "Nothing was recomputed; pass --config.reevaluate=True to evaluate the "
    "encoder again.",
    flush=True,
  )
