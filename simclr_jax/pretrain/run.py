"""SimCLR pretraining: the whole job, from config to `results.json`.

`train_and_evaluate(config, workdir)` checks everything that can be wrong
with the user's input before the workdir is touched, then trains (resuming
from the workdir's latest checkpoint), runs the configured kNN monitor, and
ends with the frozen-encoder evaluation (`simclr_jax.eval.frozen`).
"""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping

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
  finished = _finished_results(run, workdir, latest, setup.total_steps)
  if finished is not None:
    ckpt.close()
    _print_finished(finished, workdir)
    return finished
  state = _initial_state(setup, ckpt, latest, run.seed)
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
    monitor_lib.from_config(run, ctx, feature_fn), ckpt, reporter, clock
  )

  if start_step < setup.total_steps:
    clock.start_training()
    trace = profiling.for_run(workdir, run.train.profile_steps)
    state = _train(run, setup, state, ckpt, reporter, after_step, trace)
    clock.stop_training()
    clock.save()
    reporter.print(_done_line(clock, start_step))
  else:
    ckpt.close()
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
    details=_details(clock, state),
  )
  results_lib.write(workdir, out)
  clock.save()
  return out


def _initial_state(
  setup: TrainSetup,
  ckpt: checkpointing.Checkpointer,
  latest: int | None,
  seed: int,
) -> Any:
  """The latest checkpoint restored, or a fresh state (`latest` None)."""
  if latest is None:
    return setup.init_state(seed)
  return ckpt.restore(setup.abstract_state)


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


def _details(clock: results_lib.RunClock, state: Any) -> dict[str, Any]:
  """results.json's pretraining details: time, devices, model size (what a
  sweep report plots against)."""
  return {
    "train_time_s": round(clock.train_time_s, 1),
    "devices": jax.device_count(),
    "processes": jax.process_count(),
    "backbone_params": count_params(state.params["backbone"]),
  }


def _eval_settings(config: Any) -> Any:
  """What the end-of-run evaluation depends on, as plain JSON values."""
  as_json = lambda c: json.loads(c.to_json_best_effort())  # noqa: E731
  return {"eval": as_json(config.eval), "split": config.data.eval_split}


def _finished_results(
  run: configlib.RunConfig,
  workdir: str,
  latest: int | None,
  total_steps: int,
) -> dict[str, Any] | None:
  """The stored results of a finished run that need not be recomputed."""
  stored = results_lib.read(workdir)
  if run.train.reevaluate or latest != total_steps or stored is None:
    return None
  if stored.get("mode") != "pretrain":
    return None
  if (stored.get("checkpoint") or {}).get("step") != total_steps:
    return None
  try:
    before = _eval_settings(ml_collections.ConfigDict(stored["config"]))
  except (KeyError, TypeError, AttributeError):
    return None
  return stored if before == _eval_settings(run.source) else None


def _print_finished(results: dict[str, Any], workdir: str) -> None:
  if jax.process_index() != 0:
    return
  step = results["checkpoint"]["step"]
  print(
    f"{workdir} holds a finished run (step {step}/{step}); results from "
    f"its {results_lib.FILENAME} ({results.get('created', '?')}):",
    flush=True,
  )
  metrics = results.get("metrics") or {}
  if metrics and all(isinstance(v, dict) for v in metrics.values()):
    print(frozen.results_table(metrics), flush=True)
  else:
    print("(no evaluation was configured)", flush=True)
  print(
    "Nothing was recomputed; pass --config.reevaluate=True to evaluate the "
    "encoder again.",
    flush=True,
  )


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
  trace: profiling.StepTrace | None,
) -> Any:
  """Runs the remaining steps and saves the last one; returns the state.
  `trace` (config.profile_steps) profiles steps after the first report."""
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
      trace=trace,
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
  clock: results_lib.RunClock,
) -> Any:
  """What runs after every step: the kNN monitor when due, and a checkpoint
  (with the run's clock) every `checkpoint_every_steps`."""

  def after_step(step: int, state: Any) -> None:
    if monitor is not None and monitor.due(step):
      scores = monitor.run(_variables(state)).metrics
      reporter.write_scalars(step, scores)
      reporter.print(
        f"step {step}: kNN top-1 "
        f"{100 * scores[monitor_lib.METRIC]:.2f}% (monitor)"
      )
    if ckpt.maybe_save(step, state):
      clock.save()

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
