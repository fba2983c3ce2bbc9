"""The evaluator protocol and the context every evaluator shares.

An evaluator is built once from its config section and a context
(`EvalContext`: mesh, data, seed, where to log), then judges an encoder with
`run(variables) -> EvalResult`, where `variables` are a `SimCLRModel`'s
{'params', 'batch_stats'}. Evaluators of frozen features (kNN, logistic
regression) also expose `score(train, test)` on features already extracted,
so several of them can share one extraction (`frozen.py`).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Iterator, Protocol

import jax
import numpy as np

from simclr_jax import data as data_lib
from simclr_jax import sharding
from simclr_jax.eval import features as features_lib
from simclr_jax.reporting import Reporter, format_duration
from simclr_jax.training.resume import TrainerCheckpoints

from simclr_jax.configlib.sections import RunConfig

Features = tuple[np.ndarray, np.ndarray]  # host (features, labels)

# Data settings a trainer may resume with changed: they change neither the
# training examples nor their order.
_RESUME_INDIFFERENT = ("eval_split", "cache", "max_unreadable_fraction")


@dataclasses.dataclass(frozen=True)
class EvalResult:
  """Named metrics (fractions) and details for results.json."""

  metrics: dict[str, float]
  details: dict[str, Any] = dataclasses.field(default_factory=dict)


class Evaluator(Protocol):
  """Judges an encoder given its variables."""

  def run(self, variables: dict) -> EvalResult: ...


@dataclasses.dataclass(frozen=True)
class EvalContext:
  """What every evaluator needs: the mesh, the dataset, the eval batch size,
  the seed, the logging cadence and the run directory for progress logs
  ('' for none). Trainers (fine-tuning, SGD linear evaluation) keep
  checkpoints there every `checkpoint_every` steps (0: none); `encoder`
  names the encoder they start from (a resume must start from the same).
  """

  data_cfg: data_lib.DataConfig
  info: data_lib.DatasetInfo
  mesh: jax.sharding.Mesh
  batch_size: int
  seed: int
  log_every: int
  workdir: str = ""
  checkpoint_every: int = 0
  keep_checkpoints: int = 1
  encoder: str = ""

  @classmethod
  def for_run(
    cls,
    run: RunConfig,
    info: data_lib.DatasetInfo,
    mesh: jax.sharding.Mesh,
    workdir: str = "",
  ) -> "EvalContext":
    """The context of a job driven by `run` on a dataset of `info`."""
    return cls(
      data_cfg=run.data,
      info=info,
      mesh=mesh,
      batch_size=run.eval.batch_size,
      seed=run.seed,
      log_every=run.train.log_every_steps,
      workdir=workdir,
      checkpoint_every=run.train.checkpoint_every_steps if workdir else 0,
      keep_checkpoints=run.train.keep_checkpoints,
    )

  @property
  def num_classes(self) -> int:
    return self.info.num_classes

  def eval_batches(self, split: str, batch_size: int = 0) -> Iterator[dict]:
    """Padded batches of `split` in order, each example once ('mask')."""
    return data_lib.eval_batches(
      self.data_cfg,
      split,
      global_batch_size=batch_size or self.batch_size,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
    )

  def train_batches(
    self, batch_size: int, start_step: int = 0
  ) -> Iterator[dict]:
    """Endless shuffled training batches of the whole train split, from
    the `start_step`-th on (a resume)."""
    return data_lib.train_batches(
      self.data_cfg,
      global_batch_size=batch_size,
      seed=self.seed,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
      start_step=start_step,
    )

  def trainer_checkpoints(
    self, what: str, settings: Any, **setup: Any
  ) -> TrainerCheckpoints | None:
    """The checkpoints of a trainer that runs `settings` (a protocol's
    settings dataclass) with `setup` (batch size, steps...) in the
    workdir; None without a workdir or with checkpoint_every 0. A workdir
    holding another run is refused here, before anything is written."""
    if not self.workdir or self.checkpoint_every < 1:
      return None
    data = dataclasses.asdict(self.data_cfg)
    for key in _RESUME_INDIFFERENT:
      data.pop(key, None)
    return TrainerCheckpoints(
      self.workdir,
      what=what,
      setup={
        "settings": dataclasses.asdict(settings),
        "encoder": self.encoder,
        "dataset": data,
        "seed": self.seed,
        **setup,
      },
      keep=self.keep_checkpoints,
      every_steps=self.checkpoint_every,
    )

  def features(
    self,
    feature_fn: Callable,
    variables: Any,
    split: str,
    max_examples: int = 0,
  ) -> Features:
    """Host (features, labels) of `split`, the first `max_examples` if > 0."""
    return features_lib.extract_features(
      feature_fn,
      variables,
      self.eval_batches(split),
      sharding.batch_sharding(self.mesh),
      max_examples=max_examples,
    )

  def split_features(
    self, feature_fn: Callable, variables: Any, max_train_examples: int = 0
  ) -> tuple[Features, Features]:
    """(train, eval) features: the train split (its first
    `max_train_examples` if > 0) and the whole eval split."""
    train = self.features(
      feature_fn, variables, self.data_cfg.train_split, max_train_examples
    )
    return train, self.features(feature_fn, variables, self.data_cfg.eval_split)

  def reporter(self, total_steps: int, batch_size: int) -> Reporter | None:
    if not self.workdir:
      return None
    return Reporter(
      self.workdir, total_steps=total_steps, batch_size=batch_size
    )

  def print(self, message: str) -> None:
    if jax.process_index() == 0:
      print(message, flush=True)


def restartable(
  make: Callable[[int], Iterator[dict]], reporter: Reporter | None
) -> Callable[[int], Iterator[dict]]:
  """A trainer's batches as a function of the steps done, `make(done)`,
  that also starts the reporter's clock there (a resumed trainer's first
  throughput and ETA then count from its real start)."""

  def batches(done: int) -> Iterator[dict]:
    if reporter is not None:
      reporter.start_at(done)
    return make(done)

  return batches


class FeatureEvaluator:
  """Base of the evaluators that judge frozen features: `run` extracts the
  train split (up to `max_train_examples`) and the eval split with
  `feature_fn`, then calls `score`. With `progress` (the default) it says
  how long the extraction took before scoring starts."""

  progress: bool = True

  def __init__(
    self, ctx: EvalContext, feature_fn: Callable, max_train_examples: int = 0
  ):
    self.ctx = ctx
    self.feature_fn = feature_fn
    self.max_train_examples = max_train_examples

  def run(self, variables: dict) -> EvalResult:
    start = time.time()
    train, test = self.ctx.split_features(
      self.feature_fn, variables, self.max_train_examples
    )
    if self.progress:
      self.ctx.print(
        f"Features of {len(train[0]):,} training and {len(test[0]):,} eval "
        f"images in {format_duration(time.time() - start)}; scoring..."
      )
    return self.score(train, test)

  def score(self, train: Features, test: Features) -> EvalResult:
    raise NotImplementedError
