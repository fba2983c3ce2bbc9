"""Downstream protocols on a pretraining run, through the same config system:

  python -m simclr_jax.main --config configs/cifar10.py \
      --config.mode=linear --config.init_checkpoint=RUN_DIR --workdir OUT

`config.mode` names an evaluator of `registry.EVALUATORS` ("knn", "linear",
"logistic", "finetune"); the data, model and protocol sections of the config
say how. The encoder comes from the latest checkpoint in `init_checkpoint`,
whose architecture must match `config.model` (a mismatch is an error that
names every differing key). The model and data settings (`config.model`,
`config.data`) are the pretraining run's, read from its `run_config.json`:
the config file's values for them are ignored unless a key is named as an
override (on the command line, `--config.data.eval_split=test`; from
Python, `run(config, workdir, overrides=["data.eval_split"])`), so a run
made with command-line overrides is evaluated without typing them again.
An override of an architecture key that differs from the checkpoint stays
an error. Each run writes `OUT/results.json` (schema in
`simclr_jax/results.py`), progress lines, TensorBoard events and
`metrics.jsonl`; fine-tuning and SGD linear evaluation also keep
checkpoints there and resume from them (`training/resume.py`); the
pretraining run directory is only read.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from typing import Any, Iterable

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


# Key prefixes of the config sections a downstream run takes from the run.
INHERITED = ("model.", "data.")


def _leaves(node: ml_collections.ConfigDict, prefix: str) -> Iterable[str]:
  for key, value in node.items():
    if isinstance(value, ml_collections.ConfigDict):
      yield from _leaves(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}"


def _get(config: ml_collections.ConfigDict, key: str) -> Any:
  for part in key.split("."):
    config = config[part]
  return config


def _set(config: ml_collections.ConfigDict, key: str, value: Any) -> None:
  *path, last = key.split(".")
  for part in path:
    config = config[part]
  config[last] = value


def settings_from_run(
  config: ml_collections.ConfigDict,
  run_dir: str,
  overrides: Iterable[str] = (),
) -> tuple[ml_collections.ConfigDict, list[str]]:
  """A copy of `config` whose `model.*` and `data.*` are those of the
  pretraining run in `run_dir`, except the dotted keys in `overrides` (or
  below them: "data" keeps the whole section); also returns the keys whose
  value changed, as "key=run value (config had given value)"."""
  stored = pretrained_lib.load_run_config(run_dir)
  names = tuple(overrides)
  kept = lambda key: any(  # noqa: E731
    key == n or key.startswith(n + ".") for n in names
  )
  out = copy.deepcopy(config)
  changed = []
  for prefix in INHERITED:
    for key in _leaves(stored[prefix[:-1]], prefix):
      value, given = _get(stored, key), _get(config, key)
      if kept(key) or value == given:
        continue
      _set(out, key, value)
      changed.append(f"{key}={value!r} (config had {given!r})")
  return out, changed


def _inherited_message(
  mode: str, changed: list[str], overrides: tuple[str, ...]
) -> str:
  """Says where the model and data settings came from."""
  kept = [k for k in overrides if k.startswith(INHERITED)]
  shown = "; ".join(changed[:4]) + (
    f"; and {len(changed) - 4} more" if len(changed) > 4 else ""
  )
  return (
    f"{mode}: model and data settings from the run's "
    f"{checkpointing.RUN_CONFIG}"
    + (f" (replacing {shown})" if changed else "")
    + (f"; yours: {', '.join(kept)}" if kept else "")
    + "."
  )


def run(
  config: ml_collections.ConfigDict,
  workdir: str,
  overrides: Iterable[str] = (),
) -> dict[str, Any]:
  """Runs `config.mode` on `config.init_checkpoint` with the run's model
  and data settings except the keys in `overrides` (see the module
  docstring); returns (and writes to `workdir/results.json`) the results."""
  start = time.time()
  overrides = tuple(overrides)
  registry.check_mode(config.mode)
  if config.mode == "pretrain":
    raise UserError(
      "config.mode='pretrain' is not a downstream protocol; use one of "
      f"{', '.join(registry.NAMES)}, or run simclr_jax.pretrain."
    )
  # A relative or `~` run directory works from Python too (orbax needs it
  # absolute); the caller's config is left as it was.
  init_checkpoint = checkpointing.resolve_path(config.init_checkpoint)
  if init_checkpoint != config.init_checkpoint:
    config = copy.deepcopy(config)
    config.init_checkpoint = init_checkpoint
  changed: list[str] = []
  if init_checkpoint:
    config, changed = settings_from_run(config, init_checkpoint, overrides)
  run = configlib.build(config, jax.device_count(), jax.process_count())
  mode = run.mode
  if checkpointing.resolve_path(workdir) == run.init_checkpoint:
    raise UserError(
      "--workdir is the pretraining run itself; give the "
      f"{mode} run its own --workdir so the run's results.json "
      "is kept."
    )
  checkpointing.check_workdir(workdir)
  # Only an override can differ from the run's architecture.
  pretrained_lib.check_architecture(
    pretrained_lib.run_signature(run.init_checkpoint),
    run.signature,
    "leave those keys out: the run's own values are used by default",
  )
  ctx = _labelled_context(run, workdir)
  pretrained = pretrained_lib.load_pretrained(
    run.init_checkpoint, mesh=ctx.mesh, expect=run.signature
  )
  ctx = dataclasses.replace(
    ctx, encoder=f"{run.init_checkpoint} step {pretrained.step}"
  )
  ctx.print(_inherited_message(mode, changed, overrides))
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
