"""The kNN monitor: a configured kNN evaluator run every so often during
pretraining (`config.eval.monitor_every_epochs`), with the largest k of
`config.eval.knn_ks` and a bank of the first `monitor_train_examples`
training images."""

from __future__ import annotations

import dataclasses
from typing import Callable


from simclr_jax.eval import knn
from simclr_jax.eval.base import EvalContext, EvalResult

from simclr_jax.configlib.sections import RunConfig

METRIC = "monitor/knn_top1"


class KnnMonitor:
  """`due(step)` says when; `run(variables)` gives {METRIC: top-1}."""

  def __init__(self, every_steps: int, evaluator: knn.KnnEvaluator):
    self.every_steps = every_steps
    self.evaluator = evaluator
    self.evaluator.progress = False  # the monitor prints its own line

  def due(self, step: int) -> bool:
    return step % self.every_steps == 0

  def run(self, variables: dict) -> EvalResult:
    (k,) = self.evaluator.settings.ks
    metrics = self.evaluator.run(variables).metrics
    return EvalResult({METRIC: metrics[f"knn_k{k}_top1"]})


def from_config(
  run: RunConfig, ctx: EvalContext, feature_fn: Callable
) -> KnnMonitor | None:
  """The monitor `config.eval` asks for, or None (off, or no labelled eval
  split)."""
  e = run.eval
  if not (e.monitor_every_epochs > 0 and ctx.info.num_eval and ctx.num_classes):
    return None
  every = max(
    1,
    round(e.monitor_every_epochs * ctx.info.num_train / run.train.batch_size),
  )
  settings = dataclasses.replace(
    e.knn, ks=(max(e.knn.ks),), max_train_examples=e.monitor_train_examples
  )
  return KnnMonitor(every, knn.KnnEvaluator(settings, ctx, feature_fn))
