"""Downstream protocols on a pretraining run: kNN, linear evaluation and
semi-supervised fine-tuning, run through the same config system.

  python -m simclr_jax.main --config configs/cifar10.py \
      --config.mode=linear --config.init_checkpoint=RUN_DIR --workdir OUT

`config.mode` picks the protocol ("knn", "linear", "finetune"); the data,
model and protocol sections of the config say how. The encoder comes from
the latest checkpoint in `init_checkpoint`, whose architecture must match
`config.model` (a mismatch is an error that names every differing key).
Each run writes `OUT/results.json` (schema in `simclr_jax/results.py`),
progress lines, TensorBoard events and `metrics.jsonl`; the pretraining run
directory is only read.
"""

from __future__ import annotations

import copy
import time
from typing import Any, Callable

import jax
import ml_collections

from simclr_jax import checkpointing
from simclr_jax import configlib
from simclr_jax import data as data_lib
from simclr_jax import evaluation
from simclr_jax import finetune as finetune_lib
from simclr_jax import knn
from simclr_jax import linear_eval
from simclr_jax import models
from simclr_jax import optim
from simclr_jax import pretrained as pretrained_lib
from simclr_jax import probe
from simclr_jax import results as results_lib
from simclr_jax import train
from simclr_jax.data import subsets
from simclr_jax.errors import UserError
from simclr_jax.reporting import Reporter

MODES = ("knn", "linear", "finetune")


class _Context:
  """What every protocol needs: mesh, data, the restored encoder, output."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    self.config = config
    self.mesh = train.make_mesh()
    self.data_cfg = train.data_config(config)
    self.info = data_lib.dataset_info(self.data_cfg)
    if not self.info.num_classes:
      raise UserError(
        f"config.mode={config.mode!r} needs labelled data, but "
        f"{self.data_cfg.source} data {self.data_cfg.name or self.data_cfg.data_dir!r}"
        " has no labels; point config.data at a labelled dataset."
      )
    if not self.data_cfg.eval_split or not self.info.num_eval:
      raise UserError(
        f"config.mode={config.mode!r} reports accuracy on "
        "config.data.eval_split, which is empty or unset; set it (e.g. "
        "--config.data.eval_split=test)."
      )
    self.pretrained = pretrained_lib.load_pretrained(
      config.init_checkpoint,
      mesh=self.mesh,
      expect=configlib.model_signature(config),
    )
    self.workdir = workdir
    self.sharding = train.NamedSharding(self.mesh, train.P("data"))
    self.feature_fn = evaluation.make_feature_fn(
      self.pretrained.model, self.mesh, self.data_cfg.image_size
    )

  def eval_batches(self, split: str, batch_size: int):
    return data_lib.eval_batches(
      self.data_cfg,
      split,
      global_batch_size=batch_size,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
    )

  def features(self, split: str, max_examples: int = 0):
    return evaluation.extract_features(
      self.feature_fn,
      self.pretrained.variables,
      self.eval_batches(split, self.config.eval.batch_size),
      self.sharding,
      max_examples=max_examples,
    )

  def print(self, message: str) -> None:
    if jax.process_index() == 0:
      print(message, flush=True)

  def reporter(self, total_steps: int, batch_size: int) -> Reporter:
    return Reporter(
      self.workdir, total_steps=total_steps, batch_size=batch_size
    )


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs `config.mode` on `config.init_checkpoint`; returns (and writes to
  `workdir/results.json`) the results."""
  start = time.time()
  configlib.validate(config, jax.device_count(), jax.process_count())
  mode = config.mode
  if mode not in MODES:
    raise UserError(
      f"config.mode={mode!r} is not a downstream protocol; use "
      f"one of {', '.join(MODES)}."
    )
  # A relative or `~` run directory works from Python too (orbax needs it
  # absolute); the caller's config is left as it was.
  init_checkpoint = checkpointing.resolve_path(config.init_checkpoint)
  if init_checkpoint != config.init_checkpoint:
    config = copy.deepcopy(config)
    config.init_checkpoint = init_checkpoint
  if checkpointing.resolve_path(workdir) == config.init_checkpoint:
    raise UserError(
      "--workdir is the pretraining run itself; give the "
      f"{mode} run its own --workdir so the run's results.json "
      "is kept."
    )
  checkpointing.check_workdir(workdir)
  ctx = _Context(config, workdir)
  ctx.print(
    f"{mode}: encoder from {config.init_checkpoint} (step "
    f"{ctx.pretrained.step}); {ctx.info.num_train:,} training and "
    f"{ctx.info.num_eval:,} eval images, {ctx.info.num_classes} classes."
  )
  protocol: Callable[[_Context], tuple[dict, dict]] = {
    "knn": _knn,
    "linear": _linear,
    "finetune": _finetune,
  }[mode]
  metrics, details = protocol(ctx)
  out = results_lib.make(
    mode=mode,
    metrics=metrics,
    checkpoint_dir=config.init_checkpoint,
    step=ctx.pretrained.step,
    dataset=results_lib.dataset_summary(ctx.data_cfg, ctx.info),
    config=config,
    time_s=time.time() - start,
    details=details,
  )
  path = results_lib.write(workdir, out)
  ctx.print(
    f"{mode}: "
    + ", ".join(f"{k} {100 * v:.2f}%" for k, v in metrics.items())
    + (f"; wrote {path}" if path else "")
  )
  return out


def _knn(ctx: _Context) -> tuple[dict, dict]:
  e = ctx.config.eval
  tr_x, tr_y = ctx.features(ctx.data_cfg.train_split, e.max_train_examples)
  te_x, te_y = ctx.features(ctx.data_cfg.eval_split)
  metrics = knn.knn_classify(
    tr_x,
    tr_y,
    te_x,
    te_y,
    num_classes=ctx.info.num_classes,
    ks=tuple(e.knn_ks),
    temperature=e.knn_temperature,
    mesh=ctx.mesh,
  )
  return metrics, {"bank_size": len(tr_x), "temperature": e.knn_temperature}


def _linear(ctx: _Context) -> tuple[dict, dict]:
  le, cfg = ctx.config.linear_eval, ctx.config
  if le.method == "logistic":
    tr_x, tr_y = ctx.features(
      ctx.data_cfg.train_split, cfg.eval.max_train_examples
    )
    te_x, te_y = ctx.features(ctx.data_cfg.eval_split)
    out = probe.linear_probe(
      tr_x,
      tr_y,
      te_x,
      te_y,
      num_classes=ctx.info.num_classes,
      val_fraction=le.val_fraction,
      seed=cfg.seed,
      max_iters=cfg.eval.probe_max_iters,
      mesh=ctx.mesh,
    )
    return (
      {"top1": out["top1"], "top5": out["top5"]},
      {
        "method": "logistic",
        "l2": out["l2"],
        "val_top1": out["val_top1"],
        "val_top1_by_l2": {str(k): v for k, v in out["val_top1_by_l2"].items()},
      },
    )
  steps = optim.total_steps(
    batch_size=le.batch_size, num_examples=ctx.info.num_train, epochs=le.epochs
  )
  reporter = ctx.reporter(steps, le.batch_size)
  batches = train_batches(ctx, global_batch_size=le.batch_size)
  head = linear_eval.train_linear(
    ctx.pretrained.model,
    ctx.pretrained.variables,
    batches,
    mesh=ctx.mesh,
    num_classes=ctx.info.num_classes,
    steps=steps,
    batch_size=le.batch_size,
    image_size=ctx.data_cfg.image_size,
    base_learning_rate=le.base_learning_rate,
    lr_scaling=le.lr_scaling,
    weight_decay=le.weight_decay,
    momentum=le.momentum,
    seed=cfg.seed,
    zero_init_head=le.zero_init_head,
    decay_bias=le.decay_bias,
    log_fn=reporter.report,
    log_every=cfg.log_every_steps,
  )
  metrics = linear_eval.evaluate_linear(
    ctx.pretrained.model,
    ctx.pretrained.variables,
    head,
    ctx.eval_batches(ctx.data_cfg.eval_split, cfg.eval.batch_size),
    mesh=ctx.mesh,
    num_classes=ctx.info.num_classes,
    image_size=ctx.data_cfg.image_size,
  )
  reporter.close()
  return (
    {"top1": metrics["top1"], "top5": metrics["top5"]},
    {"method": "sgd", "steps": steps},
  )


def _finetune(ctx: _Context) -> tuple[dict, dict]:
  ft, cfg = ctx.config.finetune, ctx.config
  shard = subsets.load_subset_shard(
    ctx.data_cfg,
    ft.label_fraction,
    cfg.seed,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
  )
  num_labelled = shard.num_examples * jax.process_count()
  batch_size = min(ft.batch_size, _round_down(num_labelled, jax.device_count()))
  steps = optim.total_steps(
    batch_size=batch_size, num_examples=num_labelled, epochs=ft.epochs
  )
  model = models.finetune_model(
    ctx.pretrained.model,
    num_classes=ctx.info.num_classes,
    head_layers=ft.head_layers,
  )
  variables = finetune_lib.init_variables(
    model,
    ctx.pretrained.variables,
    image_size=ctx.data_cfg.image_size,
    seed=cfg.seed,
    zero_init_head=ft.zero_init_head,
  )
  reporter = ctx.reporter(steps, batch_size)
  ctx.print(
    f"fine-tuning on {num_labelled:,} labelled images "
    f"({ft.label_fraction:g} of the labels), batch {batch_size}, "
    f"{steps:,} steps, from "
    f"{'head layer %d' % ft.head_layers if ft.head_layers else 'the encoder output'}."
  )
  batches = data_lib.shard_batches(
    [shard],
    first_index=jax.process_index(),
    num_shards=jax.process_count(),
    global_batch_size=batch_size,
    seed=cfg.seed,
    shuffle_buffer=ctx.data_cfg.shuffle_buffer,
  )
  tuned = finetune_lib.finetune(
    model,
    variables,
    batches,
    mesh=ctx.mesh,
    steps=steps,
    batch_size=batch_size,
    image_size=ctx.data_cfg.image_size,
    base_learning_rate=ft.base_learning_rate,
    lr_scaling=ft.lr_scaling,
    weight_decay=ft.weight_decay,
    momentum=ft.momentum,
    warmup_steps=optim.warmup_steps(
      batch_size=batch_size,
      num_examples=num_labelled,
      warmup_epochs=ft.warmup_epochs,
    ),
    seed=cfg.seed,
    global_bn=cfg.model.global_bn,
    log_fn=reporter.report,
    log_every=cfg.log_every_steps,
  )
  metrics = finetune_lib.evaluate(
    model,
    tuned,
    ctx.eval_batches(ctx.data_cfg.eval_split, cfg.eval.batch_size),
    ctx.mesh,
    ctx.data_cfg.image_size,
  )
  reporter.close()
  return (
    {"top1": metrics["top1"], "top5": metrics["top5"]},
    {
      "label_fraction": ft.label_fraction,
      "num_labelled": num_labelled,
      "batch_size": batch_size,
      "steps": steps,
      "head_layers": ft.head_layers,
    },
  )


def _round_down(n: int, multiple: int) -> int:
  return max(multiple, n // multiple * multiple)


def train_batches(ctx: _Context, *, global_batch_size: int):
  """Endless shuffled training batches of the whole train split."""
  return data_lib.train_batches(
    ctx.data_cfg,
    global_batch_size=global_batch_size,
    seed=ctx.config.seed,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
  )
