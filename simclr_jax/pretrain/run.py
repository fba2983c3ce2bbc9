"""SimCLR pretraining: the whole job, from config to `results.json`.

`train_and_evaluate(config, workdir)` checks everything that can be wrong
with the user's input before the workdir is touched, then trains (resuming
from the workdir's latest checkpoint), runs the configured kNN monitor, and
ends with the frozen-encoder evaluation (`simclr_jax.eval.frozen`).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping

import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np

from simclr_jax import checkpointing
from simclr_jax import configlib
from simclr_jax import data as data_lib
from simclr_jax import results as results_lib
from simclr_jax.eval import features as features_lib
from simclr_jax.eval import frozen
from simclr_jax.eval import monitor as monitor_lib
from simclr_jax.eval.base import EvalContext
from simclr_jax.pretrain import finished as finished_lib
from simclr_jax.pretrain.setup import TrainSetup
from simclr_jax.reporting import METRICS_FILE, UNREADABLE_KEY, Reporter
from simclr_jax.reporting import format_duration
from simclr_jax.reporting import print_main, resume_hint
from simclr_jax.training import loop
from simclr_jax.training import profiling
from simclr_jax.training.state import count_params


def train_and_evaluate(
  config: ml_collections.ConfigDict,
  workdir: str,
  on_report: Callable[[int, Mapping[str, float]], None] | None = None,
) -> dict[str, Any]:
  """Pretrains (resuming from `workdir` if it holds a checkpoint), evaluates,
  and returns the results written to `workdir/results.json` (schema in
  simclr_jax/results.py).

  A run that already finished is reported, not recomputed: its results.json
  is printed and returned, unless `config.reevaluate` is set or the `eval`
  settings changed. `on_report(step, scalars)` is called on process 0 with
  every scalar written to metrics.jsonl (training reports, the kNN monitor,
  the final evaluation), e.g. to draw live curves in a notebook.
  """
  checkpointing.check_workdir(workdir)
  signature = configlib.model_signature(config)
  checkpointing.check_compatible(workdir, signature)
  run = configlib.build(config, jax.device_count(), jax.process_count())
  setup = TrainSetup(run)

  # From here on the workdir is written.
  clock = results_lib.RunClock(workdir)
  ckpt = _open_checkpointer(run, workdir, signature)
  latest = ckpt.latest_step()
  finished = finished_lib.stored_results(
    run, workdir, latest, setup.total_steps
  )
  if finished is not None:
    ckpt.close()
    finished_lib.print_finished(finished, workdir)
    return finished
  state, latest = _initial_state(setup, ckpt, workdir, run.seed)
  start_step = int(state.step)
  reporter = Reporter(
    workdir,
    total_steps=setup.total_steps,
    batch_size=run.train.batch_size,
    start_step=start_step,
    on_report=on_report,
  )
  _print_banner(reporter, run, setup, state, ckpt.directory, latest)

  # Frozen-encoder features for the monitor and the final evaluation; one
  # jitted function, so each shape compiles once.
  ctx = EvalContext.for_run(run, setup.info, setup.mesh, workdir=workdir)
  feature_fn = features_lib.make_feature_fn(
    setup.model, setup.mesh, run.data.image_size
  )
  after_step = _after_step(
    monitor_lib.from_config(run, ctx, feature_fn), reporter
  )

  if start_step < setup.total_steps:
    state, unreadable = _train(
      run, setup, state, ckpt, reporter, after_step, clock, workdir
    )
  else:
    ckpt.close()
    unreadable = 0
    reporter.print(f"Evaluating the finished run again (step {start_step}).")

  metrics = _evaluate(run, setup, ctx, feature_fn, state, reporter)
  reporter.close()
  out = results_lib.make(
    mode="pretrain",
    metrics=metrics,
    checkpoint_dir=workdir,
    step=int(state.step),
    dataset=results_lib.dataset_summary(setup.data_cfg, setup.info),
    config=config,
    time_s=clock.elapsed_s,
    total_time_s=clock.total_time_s,
    details=_details(clock, state, unreadable),
  )
  results_lib.write(workdir, out)
  clock.save()
  return out


def _initial_state(
  setup: TrainSetup,
  ckpt: checkpointing.Checkpointer,
  workdir: str,
  seed: int,
) -> tuple[Any, int | None]:
  """(state, its step) from the newest intact checkpoint (damaged newer
  ones are set aside, said on stdout), or a fresh state and None."""
  restored = ckpt.restore_newest_intact(setup.abstract_state)
  if restored is not None:
    return restored
  if os.path.exists(os.path.join(workdir, METRICS_FILE)):
    print_main(
      f"No complete checkpoint in {ckpt.directory}: the earlier invocation "
      "stopped before its first one; starting again at step 0."
    )
  return setup.init_state(seed), None


def _evaluate(
  run: configlib.RunConfig,
  setup: TrainSetup,
  ctx: EvalContext,
  feature_fn: Callable,
  state: Any,
  reporter: Reporter,
) -> dict[str, Any]:
  """The end-of-run evaluation's rows, or {} (off, or no labelled eval
  split: said on stdout)."""
  if not run.eval.enabled:
    return {}
  if not (setup.info.num_eval and setup.info.num_classes):
    reporter.print(_no_eval_reason(run, setup.info))
    return {}
  evaluation = frozen.from_config(
    run, ctx, setup.model, feature_fn, setup.init_variables
  )
  return evaluation.run(_variables(state), reporter, int(state.step))


def _open_checkpointer(
  run: configlib.RunConfig, workdir: str, signature: dict
) -> checkpointing.Checkpointer:
  """Writes run_config.json (first invocation only) and opens the
  checkpoints."""
  ckpt = checkpointing.Checkpointer(
    workdir,
    keep=run.train.keep_checkpoints,
    every_steps=run.train.checkpoint_every_steps,
  )
  checkpointing.write_run_config(
    workdir, run.source.to_json_best_effort(), signature
  )
  return ckpt


def _details(
  clock: results_lib.RunClock, state: Any, unreadable: int
) -> dict[str, Any]:
  """results.json's pretraining details: time, devices, model size (what a
  sweep report plots against), and the training images this invocation
  skipped as unreadable (all processes)."""
  return {
    "train_time_s": round(clock.train_time_s, 1),
    "devices": jax.device_count(),
    "processes": jax.process_count(),
    "backbone_params": count_params(state.params["backbone"]),
    UNREADABLE_KEY: unreadable,
  }


def _done_line(clock: results_lib.RunClock, start_step: int) -> str:
  line = f"Pretraining done in {format_duration(clock.elapsed_s)}"
  if start_step:
    line += f" ({format_duration(clock.train_time_s)} over all invocations)"
  return line + "."


def _no_eval_reason(run: configlib.RunConfig, info: Any) -> str:
  if not info.num_classes:
    return "No evaluation: the training data has no labels."
  return (
    f"No evaluation: eval split {run.data.eval_split!r} is empty or unset "
    "(set config.data.eval_split)."
  )


def _train(
  run: configlib.RunConfig,
  setup: TrainSetup,
  state: Any,
  ckpt: checkpointing.Checkpointer,
  reporter: Reporter,
  after_step: Any,
  clock: results_lib.RunClock,
  workdir: str,
) -> tuple[Any, int]:
  """Runs the remaining steps, saving every `checkpoint_every_steps`, the
  last step, and the step a SIGTERM/SIGINT stops at; returns the state and
  the number of unreadable images skipped (all processes). Profiles steps
  after the first report if config.profile_steps asks."""
  start_step = int(state.step)
  clock.start_training()
  try:
    state, unreadable = _run_loop(
      run, setup, state, ckpt, reporter, after_step, clock, workdir
    )
  finally:  # also when stopped: keep the curves and the time
    clock.stop_training()
    reporter.flush()
  clock.save()
  reporter.print(_done_line(clock, start_step))
  return state, unreadable


def _run_loop(
  run: configlib.RunConfig,
  setup: TrainSetup,
  state: Any,
  ckpt: checkpointing.Checkpointer,
  reporter: Reporter,
  after_step: Any,
  clock: results_lib.RunClock,
  workdir: str,
) -> tuple[Any, int]:
  """`_train`'s loop over the batches from the state's step on."""
  trace = profiling.for_run(workdir, run.train.profile_steps)
  start_step = int(state.step)
  train_step = setup.make_train_step(run.loss, state.params)
  batches = _train_batches(run, setup, start_step)

  def log_fn(step: int, means: dict[str, float]) -> None:
    if batches.unreadable_skipped:  # this process's count, in its line
      means = {**means, UNREADABLE_KEY: batches.unreadable_skipped}
    reporter.report(step, means)

  try:
    state, _ = loop.run_steps(
      train_step,
      state,
      batches,
      first_step=start_step + 1,
      last_step=setup.total_steps,
      log_every=run.train.log_every_steps,
      loss_key="contrastive_loss",
      what="pretraining",
      nan_advice=(
        "resume with a lower config.optim.base_learning_rate (or "
        "config.model.half_precision=False)."
      ),
      log_fn=log_fn,
      after_step=after_step,
      trace=trace,
      saver=_ClockedSaver(ckpt, clock),
      resume_hint=resume_hint("train_and_evaluate"),
    )
  finally:
    batches.close()
    ckpt.close()
  counts = multihost_utils.process_allgather(
    np.int64(batches.unreadable_skipped)
  )
  return state, int(np.sum(counts))


class _ClockedSaver:
  """The loop's saver: the checkpoint, then the run's clock with it."""

  def __init__(self, ckpt: checkpointing.Checkpointer, clock: Any):
    self.ckpt, self.clock = ckpt, clock
    self.directory = ckpt.directory

  def due(self, step: int) -> bool:
    return step % self.ckpt.every_steps == 0

  def save(self, step: int, state: Any) -> None:
    if self.ckpt.maybe_save(step, state, force=True):
      self.clock.save()

  def latest_step(self) -> int | None:
    return self.ckpt.latest_step()


def _after_step(
  monitor: monitor_lib.KnnMonitor | None, reporter: Reporter
) -> Any:
  """What runs after every step: the kNN monitor when due."""

  def after_step(step: int, state: Any) -> None:
    if monitor is not None and monitor.due(step):
      scores = monitor.run(_variables(state)).metrics
      reporter.write_scalars(step, scores)
      reporter.print(
        f"step {step}: kNN top-1 "
        f"{100 * scores[monitor_lib.METRIC]:.2f}% (monitor)"
      )

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
  directory: str,
  latest: int | None,
) -> None:
  if latest is not None:
    reporter.print(f"Resumed from {directory} at step {latest}.")
  n_params = count_params(state.params["backbone"])
  reporter.print(
    f"SimCLR: ResNet-{run.model.depth} x{run.model.width_multiplier} "
    f"({n_params:,} backbone params) on {jax.device_count()} "
    f"{jax.devices()[0].platform} device(s), {jax.process_count()} "
    f"process(es); {setup.info.num_train:,} training images, batch "
    f"{run.train.batch_size}, {setup.total_steps:,} steps."
  )
