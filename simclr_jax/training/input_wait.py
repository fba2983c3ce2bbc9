"""How long a training loop's accelerator sits idle waiting for input.

JAX dispatches a step asynchronously, so the host's `next(batches)` usually
overlaps the device computing the previous step; only the part of that wait
after the previous step has finished is time the device was idle. A daemon
thread blocks on each step's outputs and records when they are ready;
`window_fraction` then sums, for each fetch, the part of it after the step
before had finished, as a share of the window's wall time.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable, Iterator

import jax

INPUT_WAIT_KEY = "input_wait_fraction"
INPUT_WAIT_LIMIT = 0.10  # above this, the loop warns once per run_steps
INPUT_ADVICE = (
  "to speed up the input, set config.data.cache=True (decoded images stay "
  "in host memory after the first epoch, if they fit), bring "
  "config.data.host_size down towards data.image_size (0 means equal; fewer "
  "pixels to resize and copy, coarser crops) or raise config.data.num_shards "
  "(more reader shards decode in parallel; this changes the data order)."
)
_STOP = object()


class InputWaitMeter:
  """Measures the device-idle part of `next(batches)` per log window.

  Per step: `batch = meter.next_batch(batches)`, run the step, then
  `meter.dispatched(outputs)`; at the end of a window, `window_fraction()`.
  `close()` stops the thread (it is a daemon, so it never keeps the process
  alive); an error raised while blocking on outputs is re-raised by the next
  `window_fraction()`.
  """

  def __init__(self, clock: Callable[[], float] = time.perf_counter):
    self._clock = clock
    self._window_start = clock()
    self._fetches: list[tuple[int, float, float]] = []  # (step before, t0, t1)
    self._steps = 0  # steps dispatched so far
    self._finished: dict[int, float] = {}  # step index -> when it was ready
    self._error: Exception | None = None
    self._outputs: queue.Queue = queue.Queue()
    self._thread = threading.Thread(
      target=self._watch, name="input_wait_meter", daemon=True
    )
    self._thread.start()

  def next_batch(self, batches: Iterator[dict]) -> dict | None:
    """`next(batches, None)`, timed."""
    start = self._clock()
    batch = next(batches, None)
    self._fetches.append((self._steps - 1, start, self._clock()))
    return batch

  def dispatched(self, outputs: Any) -> None:
    """Hands a step's outputs (not donated later) to the watcher thread."""
    self._outputs.put((self._steps, outputs))
    self._steps += 1

  def window_fraction(self) -> float:
    """The idle wait since the last call, as a share of the wall time."""
    self._outputs.join()  # cheap once the window's metrics are on the host
    if self._error is not None:
      error, self._error = self._error, None
      raise error
    now = self._clock()
    waited = 0.0
    for before, start, end in self._fetches:
      ready = self._finished.get(before, float("-inf"))
      waited += max(0.0, end - max(start, ready))
    wall = max(now - self._window_start, 1e-9)
    self._window_start = now
    self._fetches.clear()
    last = self._steps - 1
    self._finished = {last: self._finished[last]} if last >= 0 else {}
    return min(waited / wall, 1.0)

  def close(self) -> None:
    """Stops the watcher thread (waiting at most briefly); idempotent."""
    self._outputs.put((None, _STOP))
    self._thread.join(timeout=10)

  def _watch(self) -> None:
    while True:
      index, outputs = self._outputs.get()
      try:
        if outputs is _STOP:
          return
        jax.block_until_ready(outputs)
      except Exception as e:  # re-raised by the next window_fraction()
        self._error = e
      finally:
        if outputs is not _STOP:
          self._finished[index] = self._clock()
        self._outputs.task_done()
