"""A profiler trace of a few training steps (`config.profile_steps`).

`run_steps` starts the trace after its first log window, so compilation and
the input pipeline's warm-up stay out of it, traces `num_steps` steps (each
annotated with its number, for TensorBoard's step view), waits for the last
one to finish on the device and writes the trace with `jax.profiler`. Only
process 0 traces: the steps are the same collective program on every
process. The trace is stopped however the loop ends, an error included.
"""

from __future__ import annotations

import contextlib
import glob
import os
from typing import Any

import jax

from simclr_jax.reporting import print_main

PROFILE_DIR = "profile"  # under the workdir


class StepTrace:
  """Traces steps `start(step) + 1 .. start(step) + num_steps` into
  `log_dir` (TensorBoard's layout: `plugins/profile/<time>/*.xplane.pb`,
  with a `*.trace.json.gz` Perfetto opens)."""

  def __init__(self, log_dir: str, num_steps: int):
    if num_steps < 1:
      raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    self.log_dir = log_dir
    self.num_steps = num_steps
    self._last: int | None = None  # last step to trace, once started
    self._active = False

  def start(self, step: int) -> None:
    """Starts tracing with the step after `step`; only the first call
    counts."""
    if self._last is not None:
      return
    self._last = step + self.num_steps
    jax.profiler.start_trace(self.log_dir)
    self._active = True

  def annotate(self, step: int) -> contextlib.AbstractContextManager:
    """Marks `step` in the trace while tracing."""
    if not self._active:
      return contextlib.nullcontext()
    return jax.profiler.StepTraceAnnotation("train", step_num=step)

  def step_done(self, step: int, outputs: Any) -> None:
    """After each step: stops once `outputs` of the last traced step are
    ready."""
    if self._active and step >= self._last:
      jax.block_until_ready(outputs)
      self._stop(step)

  def close(self, step: int, finished: bool = True) -> None:
    """Stops a trace still running (the loop ended early or raised); says
    so when a finished loop had no step to trace."""
    if self._active:
      self._stop(step)
    elif self._last is None and finished:
      print_main(
        "No profiler trace: no steps ran after the first report; set "
        "config.log_every_steps below the run's length to trace "
        f"{self.num_steps} step(s)."
      )

  def _stop(self, step: int) -> None:
    self._active = False
    jax.profiler.stop_trace()
    runs = sorted(
      glob.glob(os.path.join(self.log_dir, "plugins", "profile", "*"))
    )
    where = runs[-1] if runs else self.log_dir
    first = self._last - self.num_steps + 1
    print_main(
      f"Profiler trace of steps {first}-{step} written to {where}; view it "
      f"with `tensorboard --logdir {self.log_dir}` (Profile tab, needs the "
      "tensorboard-plugin-profile package) or open its .trace.json.gz in "
      "https://ui.perfetto.dev."
    )


def for_run(workdir: str, num_steps: int) -> StepTrace | None:
  """The trace `config.profile_steps=num_steps` asks for in `workdir`, on
  process 0; None when off (0) or on another process."""
  if num_steps < 1 or jax.process_index() != 0:
    return None
  return StepTrace(os.path.join(workdir, PROFILE_DIR), num_steps)
