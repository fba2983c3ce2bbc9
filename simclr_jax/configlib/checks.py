"""Config checks: `validate` catches bad values up front, before anything
touches the workdir, and raises `UserError` with one sentence saying what is
wrong and what to do. Where a lower layer owns a rule (the data sources, the
reader shards, AugmentConfig), the check is that layer's, reworded here with
the config key."""

from __future__ import annotations

import math

import ml_collections

from simclr_jax.configlib import convert
from simclr_jax.errors import UserError
from simclr_jax.models import conv_impl
from simclr_jax.models.resnet import STAGE_SIZES

_DEPTHS = tuple(sorted(STAGE_SIZES))  # the ResNet's own list
# Image sides in pixels: below 8 the ResNet's strides leave nothing; above
# MAX_IMAGE_SIZE a batch of uint8 images alone needs gigabytes (SimCLR uses
# 224 on ImageNet, 32 on CIFAR), so a larger value is a typo.
MIN_IMAGE_SIZE = 8
MAX_IMAGE_SIZE = 2048


def _check(cond: bool, msg: str) -> None:
  if not cond:
    raise UserError(msg)


def _positive(value: float, key: str, allow_zero: bool = False) -> None:
  ok = value >= 0 if allow_zero else value > 0
  bound = ">= 0" if allow_zero else "> 0"
  _check(
    ok and math.isfinite(value),
    f"config.{key}={value!r} must be a finite number {bound}; fix it in "
    f"the config or with --config.{key}=VALUE.",
  )


def _image_side(value: int, key: str) -> None:
  """An image side in pixels (0 allowed for data.host_size: image_size)."""
  _check(
    value >= MIN_IMAGE_SIZE or (key == "data.host_size" and value == 0),
    f"config.{key}={value} is too small; use at least {MIN_IMAGE_SIZE} pixels.",
  )
  _check(
    value <= MAX_IMAGE_SIZE,
    f"config.{key}={value} is too large; use at most {MAX_IMAGE_SIZE} "
    "pixels (SimCLR uses 224 on ImageNet, 32 on CIFAR).",
  )


def validate(
  config: ml_collections.ConfigDict, device_count: int, process_count: int = 1
) -> None:
  """Raises UserError for the first invalid value in `config`."""
  _validate_data(config)
  convert.view_configs(config)  # AugmentConfig validates its own fields.
  _validate_model(config)
  _validate_loss_and_optim(config)
  _validate_batches(config, device_count, process_count)
  _validate_eval(config, device_count)
  _validate_downstream(config, device_count)
  _validate_distributed(config)


def _validate_data(config: ml_collections.ConfigDict) -> None:
  """The data section: the data layer's checks (`sources.check_config`),
  then what pretraining adds."""
  d = config.data
  from simclr_jax.data import sources  # noqa: PLC0415  (imports TensorFlow)

  # Before the data layer, which allocates images of these sizes.
  _image_side(d.image_size, "data.image_size")
  _image_side(d.host_size, "data.host_size")
  try:  # the data layer's own checks: source name, what it needs, sizes
    sources.check_config(convert.data_config(config))
  except UserError as e:
    raise UserError(f"config.data: {e}") from None
  _positive(d.builtin_train_examples, "data.builtin_train_examples")
  _positive(
    d.builtin_eval_examples, "data.builtin_eval_examples", allow_zero=True
  )


def _validate_model(config: ml_collections.ConfigDict) -> None:
  """The model section."""
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
  impls = ("auto",) + conv_impl.IMPLS
  _check(
    m.conv_impl in impls,
    f"config.model.conv_impl={m.conv_impl!r} is not one of "
    f"{', '.join(impls)} ('auto': the fast CPU formulation on CPUs, XLA's "
    "convolution elsewhere).",
  )


def _validate_loss_and_optim(config: ml_collections.ConfigDict) -> None:
  """The loss and optimiser sections."""
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


def _validate_batches(
  config: ml_collections.ConfigDict, device_count: int, process_count: int
) -> None:
  """Batch size, reader shards (`data.pipeline.num_reader_shards`), step
  counts, checkpointing and profiling."""
  d = config.data
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
  from simclr_jax.data import pipeline  # noqa: PLC0415  (imports TensorFlow)

  try:  # the pipeline's own rule; 0 means one reader shard per device here
    pipeline.num_reader_shards(
      d.num_shards or device_count, config.batch_size, process_count
    )
  except UserError as e:
    raise UserError(f"config.data: {e}") from None
  _check(
    config.epochs > 0 or config.train_steps > 0,
    "set config.epochs or config.train_steps to a positive number.",
  )
  _positive(config.train_steps, "train_steps", allow_zero=True)
  _positive(config.log_every_steps, "log_every_steps")
  _positive(config.checkpoint_every_steps, "checkpoint_every_steps")
  _positive(config.keep_checkpoints, "keep_checkpoints")
  steps = config.profile_steps
  _check(
    isinstance(steps, int) and not isinstance(steps, bool) and steps >= 0,
    f"config.profile_steps={steps!r} must be a whole number >= 0: 0 for no "
    "profiler trace, or how many steps to trace (e.g. 10).",
  )


def _validate_eval(
  config: ml_collections.ConfigDict, device_count: int
) -> None:
  """The frozen-encoder evaluation section."""
  e = config.eval
  _positive(e.batch_size, "eval.batch_size")
  _check(
    e.batch_size % device_count == 0,
    f"config.eval.batch_size={e.batch_size} is not divisible by the "
    f"{device_count} devices; use a multiple of {device_count}.",
  )
  whole = lambda k: (  # noqa: E731  (a tuple override may hold strings)
    isinstance(k, (int, float)) and not isinstance(k, bool) and int(k) == k
  )
  _check(
    len(e.knn_ks) > 0 and all(whole(k) and k > 0 for k in e.knn_ks),
    f"config.eval.knn_ks={tuple(e.knn_ks)!r} must be positive integers, "
    "e.g. --config.eval.knn_ks='(200, 20)'.",
  )
  _positive(e.knn_temperature, "eval.knn_temperature")
  _positive(e.max_train_examples, "eval.max_train_examples", allow_zero=True)
  _positive(e.probe_max_iters, "eval.probe_max_iters")
  _positive(
    e.monitor_every_epochs, "eval.monitor_every_epochs", allow_zero=True
  )
  _positive(e.monitor_train_examples, "eval.monitor_train_examples")


def _validate_downstream(
  config: ml_collections.ConfigDict, device_count: int
) -> None:
  """The mode and the linear-eval / fine-tuning sections."""
  _check(
    config.mode == "pretrain" or bool(config.init_checkpoint),
    f"config.mode={config.mode!r} evaluates a pretrained encoder; pass "
    "--config.init_checkpoint=RUN_DIR (the --workdir of a pretraining "
    "run).",
  )
  _check(  # rather than pretrain from scratch when a warm start was meant
    config.mode != "pretrain" or not config.init_checkpoint,
    f"config.init_checkpoint={config.init_checkpoint!r} is only read by "
    "the downstream modes; pretraining starts from scratch (or resumes its "
    "--workdir). Leave init_checkpoint empty, or set config.mode to knn, "
    "linear, logistic or finetune.",
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


def _validate_distributed(config: ml_collections.ConfigDict) -> None:
  """The multi-process section (0 and -1: from the environment)."""
  dist = config.distributed
  _check(
    dist.num_processes >= 0,
    f"config.distributed.num_processes={dist.num_processes} must be >= 0 "
    "(0: from SIMCLR_NUM_PROCESSES or the cluster).",
  )
  _check(
    dist.process_id >= -1,
    f"config.distributed.process_id={dist.process_id} must be >= -1 "
    "(-1: from SIMCLR_PROCESS_ID or the cluster).",
  )
  _positive(dist.timeout_s, "distributed.timeout_s")
