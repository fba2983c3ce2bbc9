"""Downstream protocols on a pretraining run, through the same config system:

  python -m simclr_jax.main --config configs/cifar10.py \
      --config.mode=linear --config.init_checkpoint=RUN_DIR --workdir OUT

`config.mode` names an evaluator of `registry.EVALUATORS` ("knn", "linear",
"logistic", "finetune"); the data, model and protocol sections of the config
say how. The encoder comes from the latest checkpoint in `init_checkpoint`,
whose architecture must match `config.model` (a mismatch is an error that
names every differing key). Each run writes `OUT/results.json` (schema in
`simclr_jax/results.py`), progress lines, TensorBoard events and
`metrics.jsonl`; the pretraining run directory is only read.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import jax
import ml_collections

from simclr_jax import checkpointing
from simclr_jax import configlib
from simclr_jax import data as data_lib
from simclr_jax import pretrained as pretrained_lib
from simclr_jax import results as results_lib
from simclr_jax import sharding
from simclr_jax.errors import UserError
from simclr_jax.eval import registry
from simclr_jax.eval.base import EvalContext


def _labelled_context(run: configlib.RunConfig, workdir: str) -> EvalContext:
  """The context of a downstream run; the data must be labelled and have an
  eval split, since every protocol reports accuracy on it."""
  data_cfg = run.data
  info = data_lib.dataset_info(data_cfg)
  if not info.num_classes:
    raise UserError(
      f"config.mode={run.mode!r} needs labelled data, but "
      f"{data_cfg.source} data {data_cfg.name or data_cfg.data_dir!r}"
      " has no labels; point config.data at a labelled dataset."
    )
  if not data_cfg.eval_split or not info.num_eval:
    raise UserError(
      f"config.mode={run.mode!r} reports accuracy on "
      "config.data.eval_split, which is empty or unset; set it (e.g. "
      "--config.data.eval_split=test)."
    )
  return EvalContext.for_run(run, info, sharding.make_mesh(), workdir=workdir)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs `config.mode` on `config.init_checkpoint`; returns (and writes to
  `workdir/results.json`) the results."""
  start = time.time()
  registry.check_mode(config.mode)
  # A relative or `~` run directory works from Python too (orbax needs it
  # absolute); the caller's config is left as it was.
  init_checkpoint = checkpointing.resolve_path(config.init_checkpoint)
  if init_checkpoint != config.init_checkpoint:
    config = copy.deepcopy(config)
    config.init_checkpoint = init_checkpoint
  run = configlib.build(config, jax.device_count(), jax.process_count())
  mode = run.mode
  if mode == "pretrain":
    raise UserError(
      "config.mode='pretrain' is not a downstream protocol; use one of "
      f"{', '.join(registry.NAMES)}, or run simclr_jax.pretrain."
    )
  if checkpointing.resolve_path(workdir) == run.init_checkpoint:
    raise UserError(
      "--workdir is the pretraining run itself; give the "
      f"{mode} run its own --workdir so the run's results.json "
      "is kept."
    )
  checkpointing.check_workdir(workdir)
  ctx = _labelled_context(run, workdir)
  pretrained = pretrained_lib.load_pretrained(
    run.init_checkpoint, mesh=ctx.mesh, expect=run.signature
  )
  ctx.print(
    f"{mode}: encoder from {run.init_checkpoint} (step "
    f"{pretrained.step}); {ctx.info.num_train:,} training and "
    f"{ctx.info.num_eval:,} eval images, {ctx.num_classes} classes."
  )
  build = registry.EVALUATORS[registry.evaluator_name(run)]
  result = build(run, ctx, pretrained.model).run(pretrained.variables)
  out = results_lib.make(
    mode=mode,
    metrics=result.metrics,
    checkpoint_dir=run.init_checkpoint,
    step=pretrained.step,
    dataset=results_lib.dataset_summary(ctx.data_cfg, ctx.info),
    config=run.source,
    time_s=time.time() - start,
    details=result.details,
  )
  path = results_lib.write(workdir, out)
  ctx.print(
    f"{mode}: "
    + ", ".join(f"{k} {100 * v:.2f}%" for k, v in result.metrics.items())
    + (f"; wrote {path}" if path else "")
  )
  return out
