"""The step-running loop shared by pretraining, fine-tuning and linear
evaluation: one place that feeds batches, averages metrics, checks for NaN
and logs.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator

import jax
import numpy as np

from simclr_jax.errors import UserError

LogFn = Callable[[int, dict[str, float]], None]
StepFn = Callable[[Any, dict], tuple[Any, dict]]


def mean_metrics(history: list[dict]) -> dict[str, float]:
  """Host means of a list of metric dicts (one device transfer)."""
  host = jax.device_get(history)
  return {k: float(np.mean([h[k] for h in host])) for k in host[0]}


def run_steps(
  step_fn: StepFn,
  state: Any,
  batches: Iterator[dict],
  *,
  first_step: int,
  last_step: int,
  log_every: int,
  loss_key: str,
  nan_advice: str,
  what: str = "training",
  log_fn: LogFn | None = None,
  after_step: Callable[[int, Any], None] | None = None,
  batch_size: int | None = None,
) -> tuple[Any, int]:
  """Runs steps `first_step..last_step`; returns (state, last step run).

  Every `log_every` steps and at `last_step`, the metrics since the last log
  are averaged on the host, `metrics[loss_key]` is checked to be finite
  (a UserError `"the {what} loss became nan by step N; {nan_advice}"`), and
  `log_fn(step, means)` is called. `after_step(step, state)` runs after
  every step (monitors, checkpoints). With `batch_size`, every batch must
  have that many rows (the learning rate was scaled for it).
  """
  if log_every < 1:
    raise UserError(f"log_every must be >= 1, got {log_every}.")
  history: list[dict] = []
  step = first_step - 1
  for step in range(first_step, last_step + 1):
    batch = next(batches, None)
    if batch is None:
      raise UserError(
        f"the {what} batches ran out after {step - first_step} of "
        f"{last_step - first_step + 1} steps; pass an endless iterator "
        "(e.g. data.train_batches) or fewer steps."
      )
    rows = next(iter(batch.values())).shape[0]
    if batch_size is not None and rows != batch_size:
      raise UserError(
        f"{what} got a global batch of {rows} examples but batch_size="
        f"{batch_size} (which sets the learning rate); make them agree."
      )
    state, metrics = step_fn(state, batch)
    history.append(metrics)
    if step % log_every == 0 or step == last_step:
      summary = mean_metrics(history)
      history.clear()
      if not math.isfinite(summary[loss_key]):
        raise UserError(
          f"the {what} loss became {summary[loss_key]} by step {step}; "
          f"{nan_advice}"
        )
      if log_fn is not None:
        log_fn(step, summary)
    if after_step is not None:
      after_step(step, state)
  return state, step
