"""Config checking and conversion into the typed pieces each module takes.

`validate` catches bad values up front, before anything touches the workdir,
and raises `UserError` with one sentence saying what is wrong and what to do.
The converters hand modules only the config section they need.
"""

from __future__ import annotations

import math

import ml_collections

from simclr_jax import augment
from simclr_jax import views
from simclr_jax.errors import UserError

_SOURCES = ("builtin", "tfds", "folder")
_DEPTHS = (18, 34, 50, 101, 152, 200)


def _check(cond: bool, msg: str) -> None:
  if not cond:
    raise UserError(msg)


def _positive(value: float, key: str, allow_zero: bool = False) -> None:
  ok = value >= 0 if allow_zero else value > 0
  bound = ">= 0" if allow_zero else "> 0"
  _check(
    ok and math.isfinite(value), f"config.{key}={value!r} must be {bound}."
  )


def validate(
  config: ml_collections.ConfigDict, device_count: int, process_count: int = 1
) -> None:
  """Raises UserError for the first invalid value in `config`."""
  d = config.data
  _check(
    d.source in _SOURCES,
    f"config.data.source={d.source!r} is not a "
    f"known source; use one of {', '.join(_SOURCES)}.",
  )
  if d.source == "tfds":
    _check(
      bool(d.name),
      "config.data.source='tfds' needs "
      "config.data.name (e.g. --config.data.name=cifar10).",
    )
  if d.source == "folder":
    _check(
      bool(d.data_dir),
      "config.data.source='folder' needs "
      "--config.data.data_dir=/path/to/images.",
    )
  _check(
    d.image_size >= 8,
    f"config.data.image_size={d.image_size} is too "
    "small; use at least 8 pixels.",
  )
  _check(
    d.host_size == 0 or d.host_size >= d.image_size,
    f"config.data.host_size={d.host_size} is smaller than config.data."
    f"image_size={d.image_size}; use 0 (the host then brings images to "
    "image_size) or at least image_size, so that crops downsample.",
  )
  _positive(d.builtin_train_examples, "data.builtin_train_examples")
  _positive(
    d.builtin_eval_examples, "data.builtin_eval_examples", allow_zero=True
  )

  view_configs(config)  # AugmentConfig validates its own fields.

  m = config.model
  _check(
    m.depth in _DEPTHS,
    f"config.model.depth={m.depth} is not "
    f"supported; use one of {', '.join(map(str, _DEPTHS))}.",
  )
  _positive(m.width_multiplier, "model.width_multiplier")
  _check(
    int(64 * m.width_multiplier) >= 1,
    "config.model.width_multiplier "
    f"={m.width_multiplier} leaves no channels; use at least 1/64.",
  )
  _positive(m.sk_ratio, "model.sk_ratio", allow_zero=True)
  _positive(m.se_ratio, "model.se_ratio", allow_zero=True)
  _check(
    m.proj_head_layers >= 1,
    "config.model.proj_head_layers must be >= 1 (SimCLR v1 uses 2, v2 uses 3).",
  )
  _positive(m.proj_out_dim, "model.proj_out_dim")

  _positive(config.loss.temperature, "loss.temperature")
  _positive(config.loss.chunk_size, "loss.chunk_size", allow_zero=True)
  chunk = config.loss.chunk_size
  _check(
    not chunk or config.batch_size % chunk == 0,
    f"config.loss.chunk_size={chunk} must divide config.batch_size="
    f"{config.batch_size} (the candidates are processed in blocks of "
    "chunk_size); use a divisor such as 1024, or 0 to disable chunking.",
  )
  o = config.optim
  _positive(o.base_learning_rate, "optim.base_learning_rate")
  _check(
    o.lr_scaling in ("linear", "sqrt"),
    f"config.optim.lr_scaling={o.lr_scaling!r}; use 'linear' or 'sqrt'.",
  )
  _positive(o.warmup_epochs, "optim.warmup_epochs", allow_zero=True)
  _positive(o.weight_decay, "optim.weight_decay", allow_zero=True)
  _check(
    0 <= o.momentum < 1,
    f"config.optim.momentum={o.momentum} must be in [0, 1).",
  )

  _check(
    config.batch_size >= 2,
    "config.batch_size must be at least 2 (NT-Xent needs negatives).",
  )
  _check(
    config.batch_size % device_count == 0,
    f"config.batch_size={config.batch_size} is not divisible by the "
    f"{device_count} devices; use a multiple of {device_count} "
    f"(e.g. --config.batch_size="
    f"{-(-config.batch_size // device_count) * device_count}).",
  )
  _check(
    config.batch_size % process_count == 0,
    f"config.batch_size={config.batch_size} is not divisible by the "
    f"{process_count} processes.",
  )
  shards = d.num_shards
  _positive(shards, "data.num_shards", allow_zero=True)
  _check(
    not shards or config.batch_size % shards == 0,
    f"config.data.num_shards={shards} must divide config.batch_size="
    f"{config.batch_size} (every batch takes batch_size/num_shards "
    "examples from each reader shard); use a divisor of "
    f"{config.batch_size} that is a multiple of the {process_count} "
    "process(es), or 0 for one shard per device.",
  )
  _check(
    not shards or shards % process_count == 0,
    f"config.data.num_shards={shards} must be a multiple of the "
    f"{process_count} processes (each process reads whole reader "
    "shards); use a multiple that divides config.batch_size="
    f"{config.batch_size}, or 0 for one shard per device.",
  )
  _check(
    config.epochs > 0 or config.train_steps > 0,
    "set config.epochs or config.train_steps to a positive number.",
  )
  _positive(config.train_steps, "train_steps", allow_zero=True)
  _positive(config.log_every_steps, "log_every_steps")
  _positive(config.checkpoint_every_steps, "checkpoint_every_steps")
  _positive(config.keep_checkpoints, "keep_checkpoints")

  e = config.eval
  _positive(e.batch_size, "eval.batch_size")
  _check(
    e.batch_size % device_count == 0,
    f"config.eval.batch_size={e.batch_size} is not divisible by the "
    f"{device_count} devices; use a multiple of {device_count}.",
  )
  _check(
    len(e.knn_ks) > 0 and all(int(k) == k and k > 0 for k in e.knn_ks),
    f"config.eval.knn_ks={tuple(e.knn_ks)!r} must be positive integers, "
    "e.g. (200, 20).",
  )
  _positive(e.knn_temperature, "eval.knn_temperature")
  _positive(e.max_train_examples, "eval.max_train_examples", allow_zero=True)
  _positive(e.probe_max_iters, "eval.probe_max_iters")
  _positive(
    e.monitor_every_epochs, "eval.monitor_every_epochs", allow_zero=True
  )
  _positive(e.monitor_train_examples, "eval.monitor_train_examples")
  _validate_downstream(config, device_count)


_MODES = ("pretrain", "knn", "linear", "finetune")


def _validate_downstream(
  config: ml_collections.ConfigDict, device_count: int
) -> None:
  """The mode and the linear-eval / fine-tuning sections."""
  _check(
    config.mode in _MODES,
    f"config.mode={config.mode!r} is not a "
    f"mode; use one of {', '.join(_MODES)}.",
  )
  _check(
    config.mode == "pretrain" or bool(config.init_checkpoint),
    f"config.mode={config.mode!r} evaluates a pretrained encoder; pass "
    "--config.init_checkpoint=RUN_DIR (the --workdir of a pretraining "
    "run).",
  )
  le = config.linear_eval
  _check(
    le.method in ("sgd", "logistic"),
    f"config.linear_eval.method="
    f"{le.method!r}; use 'sgd' (the paper's protocol) or 'logistic'.",
  )
  for section, name in ((le, "linear_eval"), (config.finetune, "finetune")):
    _positive(section.epochs, f"{name}.epochs")
    _positive(section.batch_size, f"{name}.batch_size")
    _check(
      section.batch_size % device_count == 0,
      f"config.{name}.batch_size={section.batch_size} is not divisible "
      f"by the {device_count} devices; use a multiple of {device_count}.",
    )
    _positive(section.base_learning_rate, f"{name}.base_learning_rate")
    _check(
      section.lr_scaling in ("linear", "sqrt"),
      f"config.{name}."
      f"lr_scaling={section.lr_scaling!r}; use 'linear' or 'sqrt'.",
    )
    _check(
      0 <= section.momentum < 1,
      f"config.{name}.momentum={section.momentum} must be in [0, 1).",
    )
    _positive(section.weight_decay, f"{name}.weight_decay", allow_zero=True)
  _check(
    0 < le.val_fraction < 1,
    f"config.linear_eval.val_fraction={le.val_fraction} must be in (0, 1).",
  )
  ft = config.finetune
  _check(
    0 < ft.label_fraction <= 1,
    f"config.finetune.label_fraction="
    f"{ft.label_fraction} must be in (0, 1] (0.01 = 1% of the labels).",
  )
  _check(
    0 <= ft.head_layers < config.model.proj_head_layers,
    f"config.finetune.head_layers={ft.head_layers} must be in [0, "
    f"{config.model.proj_head_layers}) for a {config.model.proj_head_layers}"
    "-layer projection head (0: encoder output, 1: head layer 1 as in "
    "SimCLR v2).",
  )
  _positive(ft.warmup_epochs, "finetune.warmup_epochs", allow_zero=True)


def model_signature(config: ml_collections.ConfigDict) -> dict:
  """What must match for a checkpoint to be restorable into this config."""
  m = config.model
  return dict(
    depth=m.depth,
    width_multiplier=m.width_multiplier,
    sk_ratio=m.sk_ratio,
    se_ratio=m.se_ratio,
    cifar_stem=m.cifar_stem,
    proj_head_layers=m.proj_head_layers,
    proj_out_dim=m.proj_out_dim,
    image_size=config.data.image_size,
  )


def augment_config(config: ml_collections.ConfigDict) -> augment.AugmentConfig:
  """The on-device augmentation settings; output size = data.image_size."""
  fields = config.augment.to_dict()
  fields.pop("asymmetric")
  try:
    return augment.AugmentConfig(image_size=config.data.image_size, **fields)
  except augment.AugmentConfigError as e:
    detail = str(e).removeprefix("AugmentConfig: ")
    raise UserError(
      f"config.augment.{detail}; fix the value in the config "
      "or its --config.augment override."
    ) from None


def view_configs(
  config: ml_collections.ConfigDict,
) -> tuple[augment.AugmentConfig, augment.AugmentConfig]:
  """Augmentation settings of the two views (equal unless asymmetric)."""
  return views.view_configs(augment_config(config), config.augment.asymmetric)
