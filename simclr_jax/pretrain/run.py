"""SimCLR pretraining: the whole job, from config to `results.json`.

`train_and_evaluate(config, workdir)` checks everything that can be wrong
with the user's input before the workdir is touched, then trains (resuming
from the workdir's latest checkpoint), runs the configured kNN monitor, and
ends with the frozen-encoder evaluation (`simclr_jax.eval.frozen`).
"""

from __future__ import annotations

import time
from typing import Any

import jax
import ml_collections

from simclr_jax import checkpointing
from simclr_jax import configlib
from simclr_jax import data as data_lib
from simclr_jax import results as results_lib
from simclr_jax.eval import features as features_lib
from simclr_jax.eval import frozen
from simclr_jax.eval import monitor as monitor_lib
from simclr_jax.eval.base import EvalContext
from simclr_jax.pretrain.setup import TrainSetup
from simclr_jax.reporting import Reporter, format_duration
from simclr_jax.training import loop
from simclr_jax.training.state import count_params


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str
) -> dict[str, Any]:
  """Pretrains (resuming from `workdir` if it holds a checkpoint), evaluates,
  and returns the results written to `workdir/results.json` (schema in
  simclr_jax/results.py)."""
  start_time = time.time()
  checkpointing.check_workdir(workdir)
  signature = configlib.model_signature(config)
  checkpointing.check_compatible(workdir, signature)
  run = configlib.build(config, jax.device_count(), jax.process_count())
  setup = TrainSetup(run)

  # From here on the workdir is written.
  ckpt, state, latest = _open_run(run, workdir, setup, signature)
  start_step = int(state.step)
  reporter = Reporter(
    workdir,
    total_steps=setup.total_steps,
    batch_size=run.train.batch_size,
    start_step=start_step,
  )
  if latest is not None:
    reporter.print(f"Resumed from {ckpt.directory} at step {latest}.")
  _print_banner(reporter, run, setup, state)

  # Frozen-encoder features for the monitor and the final evaluation; one
  # jitted function, so each shape compiles once.
  ctx = EvalContext.for_run(run, setup.info, setup.mesh, workdir=workdir)
  feature_fn = features_lib.make_feature_fn(
    setup.model, setup.mesh, run.data.image_size
  )
  after_step = _after_step(
    monitor_lib.from_config(run, ctx, feature_fn), ckpt, reporter
  )

  state = _train(run, setup, state, ckpt, reporter, after_step)
  train_time = time.time() - start_time
  reporter.print(f"Pretraining done in {format_duration(train_time)}.")

  metrics: dict[str, Any] = {}
  if run.eval.enabled and setup.info.num_eval and setup.info.num_classes:
    evaluation = frozen.from_config(
      run, ctx, setup.model, feature_fn, setup.init_variables
    )
    metrics = evaluation.run(_variables(state), reporter, int(state.step))
  reporter.close()
  out = results_lib.make(
    mode="pretrain",
    metrics=metrics,
    checkpoint_dir=workdir,
    step=int(state.step),
    dataset=results_lib.dataset_summary(setup.data_cfg, setup.info),
    config=config,
    time_s=time.time() - start_time,
    details={"train_time_s": round(train_time, 1)},
  )
  results_lib.write(workdir, out)
  return out


def _open_run(
  run: configlib.RunConfig,
  workdir: str,
  setup: TrainSetup,
  signature: dict,
) -> tuple[checkpointing.Checkpointer, Any, int | None]:
  """Writes run_config.json and returns (checkpointer, state, latest step):
  the latest checkpoint restored, or a fresh state (latest None)."""
  ckpt = checkpointing.Checkpointer(
    workdir,
    keep=run.train.keep_checkpoints,
    every_steps=run.train.checkpoint_every_steps,
  )
  checkpointing.write_run_config(
    workdir, run.source.to_json_best_effort(), signature
  )
  latest = ckpt.latest_step()
  state = (
    setup.init_state(run.seed)
    if latest is None
    else ckpt.restore(setup.abstract_state)
  )
  return ckpt, state, latest


def _train(
  run: configlib.RunConfig,
  setup: TrainSetup,
  state: Any,
  ckpt: checkpointing.Checkpointer,
  reporter: Reporter,
  after_step: Any,
) -> Any:
  """Runs the remaining steps and saves the last one; returns the state."""
  start_step = int(state.step)
  train_step = setup.make_train_step(run.loss, state.params)
  batches = _train_batches(run, setup, start_step)
  try:
    state, step = loop.run_steps(
      train_step,
      state,
      batches,
      first_step=start_step + 1,
      last_step=setup.total_steps,
      log_every=run.train.log_every_steps,
      loss_key="contrastive_loss",
      what="pretraining",
      nan_advice=(
        "lower config.optim.base_learning_rate or turn off "
        "config.model.half_precision, then resume from the last checkpoint "
        f"in {ckpt.directory}."
      ),
      log_fn=reporter.report,
      after_step=after_step,
    )
    ckpt.maybe_save(step, state, force=True)
  finally:
    batches.close()
    ckpt.close()
  return state


def _after_step(
  monitor: monitor_lib.KnnMonitor | None,
  ckpt: checkpointing.Checkpointer,
  reporter: Reporter,
) -> Any:
  """What runs after every step: the kNN monitor when due, and a checkpoint
  every `checkpoint_every_steps`."""

  def after_step(step: int, state: Any) -> None:
    if monitor is not None and monitor.due(step):
      scores = monitor.run(_variables(state)).metrics
      reporter.write_scalars(step, scores)
      reporter.print(
        f"step {step}: kNN top-1 "
        f"{100 * scores[monitor_lib.METRIC]:.2f}% (monitor)"
      )
    ckpt.maybe_save(step, state)

  return after_step


def _train_batches(
  run: configlib.RunConfig, setup: TrainSetup, start_step: int
) -> Any:
  """Device batches from `start_step` on, prefetched in the background."""
  return data_lib.prefetch_to_device(
    data_lib.train_batches(
      setup.data_cfg,
      global_batch_size=run.train.batch_size,
      seed=run.seed,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
      start_step=start_step,
      # 0: one reader shard per device, so the order depends on the
      # device count but never on the process count.
      num_shards=run.data.num_shards or jax.device_count(),
    ),
    setup.data_sharding,
  )


def _variables(state: Any) -> dict:
  return {"params": state.params, "batch_stats": state.batch_stats}


def _print_banner(
  reporter: Reporter,
  run: configlib.RunConfig,
  setup: TrainSetup,
  state: Any,
) -> None:
  n_params = count_params(state.params["backbone"])
  reporter.print(
    f"SimCLR: ResNet-{run.model.depth} x{run.model.width_multiplier} "
    f"({n_params:,} backbone params) on {jax.device_count()} "
    f"{jax.devices()[0].platform} device(s), {jax.process_count()} "
    f"process(es); {setup.info.num_train:,} training images, batch "
    f"{run.train.batch_size}, {setup.total_steps:,} steps."
  )
