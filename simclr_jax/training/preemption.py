"""Stop requests: SIGTERM (a preemption, `scancel`, `docker stop`) or SIGINT
(Ctrl-C) during a training loop finish the current step, save it, and end
the run with a one-line message instead of losing the steps since the last
checkpoint.

One process: our own handlers record the first signal and restore the
default action, so a second signal ends the process at once (no save).

Several processes (`jax.distributed`): JAX's preemption service owns SIGTERM
(its notifier is installed by `jax.distributed.initialize`); it tells every
process and agrees on one step to stop at, which
`multihost_utils.reached_preemption_sync_point` reports on all of them, so
every process saves the same step together. SIGINT is forwarded to that
service as a SIGTERM of this process. A second SIGINT ends the process at
once; a second SIGTERM is absorbed by JAX's notifier (the scheduler's SIGKILL
after its grace period ends the job).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType
from typing import Callable

import jax
from jax.experimental import multihost_utils

# Conventional exit statuses of a process ended by SIGINT / SIGTERM.
EXIT_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Interrupted(KeyboardInterrupt):
  """The run stopped on request after saving what it had; `str()` is the
  one line for the user. A KeyboardInterrupt, so `except Exception` in a
  caller's code does not swallow it."""

  def __init__(self, message: str, signum: int = signal.SIGINT):
    super().__init__(message)
    self.signum = signum

  @property
  def exit_status(self) -> int:
    return EXIT_STATUS.get(self.signum, 130)


def _print(message: str) -> None:
  if jax.process_index() == 0:
    print(message, file=sys.stderr, flush=True)


class StopRequest:
  """Context manager that turns the first SIGTERM/SIGINT into a request to
  stop after the current step; `should_stop(step)` is called once per step
  by the loop (on every process: it is the multi-process sync point).

  `what` names the loop in the line printed when the signal arrives.
  Handlers are only installed from the main thread (Python's rule); in other
  threads signals keep their default action.
  """

  def __init__(self, what: str = "training"):
    self.what = what
    self.signum: int | None = None
    self._previous: dict[int, Callable | int | None] = {}
    self._multi = False

  def __enter__(self) -> "StopRequest":
    if threading.current_thread() is not threading.main_thread():
      return self
    self._multi = jax.process_count() > 1
    signums = [signal.SIGINT] if self._multi else EXIT_STATUS
    for signum in signums:
      self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for signum, previous in self._previous.items():
      signal.signal(
        signum, previous if previous is not None else signal.SIG_DFL
      )
    self._previous.clear()

  def _handle(self, signum: int, frame: FrameType | None) -> None:
    del frame
    # A second signal of the same kind gets the default action: at once.
    signal.signal(signum, signal.SIG_DFL)
    if self.signum is None:
      self.signum = signum
    name = signal.Signals(signum).name
    _print(
      f"Received {name}: finishing the current {self.what} step, then saving "
      f"a checkpoint (send {name} again to exit at once without saving)."
    )
    if self._multi:  # hand it to JAX's preemption service (owns SIGTERM)
      os.kill(os.getpid(), signal.SIGTERM)

  def should_stop(self, step: int) -> bool:
    """Whether the loop should save `step` and stop (on all processes)."""
    if jax.process_count() == 1:
      return self.signum is not None
    try:
      reached = multihost_utils.reached_preemption_sync_point(step)
    except RuntimeError:  # jax_enable_preemption_service is off
      return False
    if reached and self.signum is None:
      self.signum = signal.SIGTERM
    return reached
