"""The step-running loop shared by pretraining, fine-tuning and linear
evaluation: one place that feeds batches, averages metrics, checks for NaN
before anything is saved, saves, stops cleanly on SIGTERM/SIGINT, measures
how long the device waits for input, and logs.
"""

from __future__ import annotations

import contextlib
import signal
from typing import Any, Callable, Iterable, Iterator


from simclr_jax.data.prefetch import prefetch_to_device
from simclr_jax.errors import UserError
from simclr_jax.reporting import print_main
from simclr_jax.training import preemption
from simclr_jax.training.finite import FiniteGuard as _FiniteGuard
from simclr_jax.training.finite import NonFinite  # noqa: F401 (re-export)
from simclr_jax.training.input_wait import INPUT_ADVICE
from simclr_jax.training.input_wait import INPUT_WAIT_KEY
from simclr_jax.training.input_wait import INPUT_WAIT_LIMIT
from simclr_jax.training.input_wait import InputWaitMeter
from simclr_jax.training.profiling import StepTrace
from simclr_jax.training.resume import Saver, TrainerCheckpoints

LogFn = Callable[[int, dict[str, float]], None]
StepFn = Callable[[Any, dict], tuple[Any, dict]]


def run_steps(
  step_fn: StepFn,
  state: Any,
  batches: Iterator[dict],
  *,
  first_step: int,
  last_step: int,
  log_every: int,
  loss_key: str,
  nan_advice: str,
  what: str = "training",
  log_fn: LogFn | None = None,
  after_step: Callable[[int, Any], None] | None = None,
  batch_size: int | None = None,
  trace: StepTrace | None = None,
  saver: Saver | None = None,
  resume_hint: str = "run the same command again",
) -> tuple[Any, int]:
  """Runs steps `first_step..last_step`; returns (state, last step run).

  Every `log_every` steps and at `last_step`, the metrics since the last log
  are averaged on the host and `log_fn(step, means)` is called, with
  `means[INPUT_WAIT_KEY]` the share of the window the device sat idle
  waiting for input (over INPUT_WAIT_LIMIT after the first window: one
  `warning:` line on stdout per call). `after_step(step, state)` runs after
  every step (monitors). With `batch_size`, every batch must have that many
  rows (the learning rate was scaled for it). `trace` profiles the steps
  after the first window.

  `saver` saves when `saver.due(step)`, at `last_step`, and on a stop
  request: the first SIGTERM/SIGINT (`preemption.StopRequest`) ends the loop
  after the current step with `preemption.Interrupted`, whose message says
  what was saved and how to resume (`resume_hint`). Before any save and at
  every log, the metrics since the last check and the state must be finite,
  or a `NonFinite` UserError reports it (`finite.FiniteGuard`).
  """
  if log_every < 1:
    raise UserError(f"log_every must be >= 1, got {log_every}.")
  guard = _FiniteGuard(loss_key, what, nan_advice, saver)
  meter = InputWaitMeter()
  windows, warned, finished = 0, False, False
  step = first_step - 1
  try:
    with preemption.StopRequest(what) as stop:
      for step in range(first_step, last_step + 1):
        batch = meter.next_batch(batches)
        _check_batch(batch, step, first_step, last_step, what, batch_size)
        with trace.annotate(step) if trace else contextlib.nullcontext():
          state, metrics = step_fn(state, batch)
        meter.dispatched(metrics)
        guard.add(step, metrics)
        if step % log_every == 0 or step == last_step:
          summary = guard.check(state)
          summary[INPUT_WAIT_KEY] = meter.window_fraction()
          windows += 1
          if log_fn is not None:
            log_fn(step, summary)
          if windows > 1 and not warned:  # the first holds the compilation
            warned = _warn_if_input_bound(summary[INPUT_WAIT_KEY], step, what)
          if trace is not None and windows == 1 and step < last_step:
            trace.start(step)
        if trace is not None:
          trace.step_done(step, metrics)
        if after_step is not None:
          after_step(step, state)
        stopping = stop.should_stop(step)
        if saver is not None and (
          stopping or step == last_step or saver.due(step)
        ):
          guard.check(state, window=False)
          saver.save(step, state)
        if stopping and step < last_step:
          raise _interrupted(stop, step, last_step, what, saver, resume_hint)
    finished = True
  finally:
    meter.close()
    if trace is not None:
      trace.close(step, finished)
  return state, step


def start_state(
  init: Callable[[], Any],
  sharding: Any,
  checkpoints: TrainerCheckpoints | None,
) -> tuple[Any, int]:
  """(state, steps done): `checkpoints`' newest intact one, or `init()`
  and 0 (also without checkpoints)."""
  if checkpoints is None:
    return init(), 0
  return checkpoints.start(init, sharding)


def run_labelled(
  step_fn: StepFn,
  state: Any,
  batches: Iterable[dict] | Callable[[int], Iterable[dict]],
  *,
  start: int,
  data_sharding: Any,
  checkpoints: TrainerCheckpoints | None,
  **run_steps_args: Any,
) -> Any:
  """A supervised trainer's `run_steps` from step `start + 1`: the 'image'
  and 'label' of each batch (`batches_from`) prefetched to the devices,
  saving to `checkpoints`; closes both; returns the state."""
  source = batches_from(batches, start, run_steps_args.get("what", "training"))
  device_batches = prefetch_to_device(
    ({"image": b["image"], "label": b["label"]} for b in source),
    data_sharding,
  )
  try:
    state, _ = run_steps(
      step_fn,
      state,
      device_batches,
      first_step=start + 1,
      saver=checkpoints,
      **run_steps_args,
    )
  finally:
    device_batches.close()
    if checkpoints is not None:
      checkpoints.close()
  return state


def batches_from(
  batches: Iterable[dict] | Callable[[int], Iterable[dict]],
  start: int,
  what: str,
) -> Iterator[dict]:
  """The batches from step `start + 1` on: `batches(start)` if it is a
  function, else `batches` itself (which cannot skip what was done)."""
  if callable(batches):
    return iter(batches(start))
  if start:
    raise UserError(
      f"{what} resumes after step {start}, but its batches were given as "
      "an iterator; pass a function of the steps done that returns the "
      "batches from there on."
    )
  return iter(batches)


def _interrupted(
  stop: preemption.StopRequest,
  step: int,
  last_step: int,
  what: str,
  saver: Saver | None,
  resume_hint: str,
) -> preemption.Interrupted:
  """The one line a stopped loop ends with."""
  name = signal.Signals(stop.signum or signal.SIGINT).name
  head = f"{name}: {what} stopped after step {step} of {last_step}"
  if saver is None:
    tail = f"nothing was saved; {resume_hint} to start it again."
  else:
    tail = (
      f"saved a checkpoint of step {step} in {saver.directory}; "
      f"{resume_hint} to resume."
    )
  return preemption.Interrupted(f"{head}; {tail}", stop.signum or 2)


def _check_batch(
  batch: dict | None,
  step: int,
  first_step: int,
  last_step: int,
  what: str,
  batch_size: int | None,
) -> None:
  """UserError for a batch that is missing (ran out) or of the wrong size."""
  if batch is None:
    raise UserError(
      f"the {what} batches ran out after {step - first_step} of "
      f"{last_step - first_step + 1} steps; pass an endless iterator "
      "(e.g. data.train_batches) or fewer steps."
    )
  rows = next(iter(batch.values())).shape[0]
  if batch_size is not None and rows != batch_size:
    raise UserError(
      f"{what} got a global batch of {rows} examples but batch_size="
      f"{batch_size} (which sets the learning rate); make them agree."
    )


def _warn_if_input_bound(fraction: float, step: int, what: str) -> bool:
  """Prints the input-bound warning if `fraction` is over the limit;
  returns whether it did."""
  if fraction <= INPUT_WAIT_LIMIT:
    return False
  print_main(
    f"warning: {INPUT_WAIT_KEY} {fraction:.2f} at step {step}: the "
    f"accelerator sat idle waiting for the next batch {fraction:.0%} of the "
    f"{what} time since the last report (limit {INPUT_WAIT_LIMIT:.2f}); "
    f"{INPUT_ADVICE}"
  )
  return True
