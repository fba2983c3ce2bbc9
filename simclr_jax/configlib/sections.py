"""The config as typed, frozen sections, built once at the top of a job.

`build(config, device_count, process_count)` validates the `ConfigDict`
(`checks.validate`) and converts it into a `RunConfig`; from there each part
of the code receives only its section, as a dataclass, never the whole
config. The sections have no defaults of their own: `defaults.base_config`
is the one list of defaults, so a section is always built from a config.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from simclr_jax import augment
from simclr_jax import data as data_lib
from simclr_jax.configlib import checks
from simclr_jax.configlib import convert


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """`config.model`: the encoder, the heads and their BatchNorm."""

  depth: int
  width_multiplier: float
  sk_ratio: float
  se_ratio: float
  cifar_stem: bool
  proj_head_layers: int
  proj_out_dim: int
  bn_momentum: float
  bn_epsilon: float
  half_precision: bool
  global_bn: bool
  conv_impl: str
  remat: bool


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """`config.loss`: NT-Xent."""

  temperature: float
  hidden_norm: bool
  chunk_size: int


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  """`config.optim`: LARS and the pretraining learning-rate schedule."""

  base_learning_rate: float
  lr_scaling: str
  warmup_epochs: float
  weight_decay: float
  momentum: float
  trust_coefficient: float
  decay_supervised_head: bool


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """The top-level keys of the pretraining loop."""

  batch_size: int
  epochs: float
  train_steps: int
  log_every_steps: int
  checkpoint_every_steps: int
  keep_checkpoints: int
  reevaluate: bool  # a finished run evaluates again instead of reporting
  profile_steps: int  # > 0: a profiler trace of that many steps


@dataclasses.dataclass(frozen=True)
class KnnSettings:
  """What the kNN evaluator needs from `config.eval`."""

  ks: tuple[int, ...]
  temperature: float
  max_train_examples: int  # > 0: cap on the bank (first examples)


@dataclasses.dataclass(frozen=True)
class LogisticSettings:
  """What the logistic-regression evaluator needs from the config."""

  val_fraction: float  # held out to choose the L2 strength
  max_iters: int  # L-BFGS iterations per fit
  max_train_examples: int  # > 0: cap on the training features
  seed: int  # of the validation split


@dataclasses.dataclass(frozen=True)
class SupervisedRecipe:
  """What a supervised protocol on labels shares: length, batch, learning
  rate (`optim.scaled_learning_rate`), momentum and weight decay."""

  epochs: float
  batch_size: int
  base_learning_rate: float
  lr_scaling: str
  momentum: float
  weight_decay: float


@dataclasses.dataclass(frozen=True)
class LinearSettings(SupervisedRecipe):
  """What SGD linear evaluation needs from `config.linear_eval`."""

  decay_bias: bool
  zero_init_head: bool


@dataclasses.dataclass(frozen=True)
class FinetuneSettings(SupervisedRecipe):
  """What fine-tuning needs from `config.finetune` (and the model's BN)."""

  label_fraction: float
  head_layers: int
  warmup_epochs: float
  zero_init_head: bool
  global_bn: bool


@dataclasses.dataclass(frozen=True)
class FrozenSettings:
  """Which rows and judges the end-of-pretraining evaluation has."""

  linear_probe: bool
  compare_random_init: bool
  compare_raw_pixels: bool
  max_train_examples: int


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """`config.eval`: the frozen-encoder evaluation and the kNN monitor."""

  enabled: bool
  batch_size: int
  knn: KnnSettings
  logistic: LogisticSettings
  frozen: FrozenSettings
  monitor_every_epochs: float
  monitor_train_examples: int


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Everything a job reads from its config, checked and typed."""

  mode: str
  init_checkpoint: str
  seed: int
  data: data_lib.DataConfig
  views: tuple[augment.AugmentConfig, augment.AugmentConfig]
  model: ModelConfig
  loss: LossConfig
  optim: OptimConfig
  train: TrainConfig
  eval: EvalConfig
  linear_method: str  # config.linear_eval.method: "sgd" | "logistic"
  linear: LinearSettings
  finetune: FinetuneSettings
  source: ml_collections.ConfigDict  # as given, for run_config / results

  @property
  def signature(self) -> dict[str, Any]:
    """What a checkpoint must match to be restored into this config."""
    return convert.signature(self.model, self.data.image_size)


def _fields(cls: type, section: Any, **given: Any) -> Any:
  """`cls` from the same-named keys of `section`, plus `given`."""
  names = [f.name for f in dataclasses.fields(cls) if f.name not in given]
  return cls(**{n: section[n] for n in names}, **given)


def model_config(config: ml_collections.ConfigDict) -> ModelConfig:
  return _fields(ModelConfig, config.model)


def optim_config(config: ml_collections.ConfigDict) -> OptimConfig:
  return _fields(OptimConfig, config.optim)


def _eval_config(config: ml_collections.ConfigDict) -> EvalConfig:
  e = config.eval
  return EvalConfig(
    enabled=e.enabled,
    batch_size=e.batch_size,
    knn=KnnSettings(
      ks=tuple(int(k) for k in e.knn_ks),
      temperature=e.knn_temperature,
      max_train_examples=e.max_train_examples,
    ),
    logistic=LogisticSettings(
      val_fraction=config.linear_eval.val_fraction,
      max_iters=e.probe_max_iters,
      max_train_examples=e.max_train_examples,
      seed=config.seed,
    ),
    frozen=_fields(FrozenSettings, e),
    monitor_every_epochs=e.monitor_every_epochs,
    monitor_train_examples=e.monitor_train_examples,
  )


def build(
  config: ml_collections.ConfigDict, device_count: int, process_count: int = 1
) -> RunConfig:
  """Checks `config` (UserError for the first bad value) and returns it
  typed."""
  checks.validate(config, device_count, process_count)
  return RunConfig(
    mode=config.mode,
    init_checkpoint=config.init_checkpoint,
    seed=config.seed,
    data=convert.data_config(config),
    views=convert.view_configs(config),
    model=model_config(config),
    loss=_fields(LossConfig, config.loss),
    optim=optim_config(config),
    train=_fields(TrainConfig, config),
    eval=_eval_config(config),
    linear_method=config.linear_eval.method,
    linear=_fields(LinearSettings, config.linear_eval),
    finetune=_fields(
      FinetuneSettings, config.finetune, global_bn=config.model.global_bn
    ),
    source=config,
  )
