"""Background device prefetch: the next batches go to the devices while the
current step runs."""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Iterator
from typing import Any

import jax

from simclr_jax import sharding as sharding_lib


def prefetch_to_device(
  iterator: Iterator[dict[str, Any]],
  sharding: jax.sharding.NamedSharding,
  size: int = 2,
) -> Iterator[dict[str, jax.Array]]:
  """Moves batches to the devices `size` steps ahead in a background thread.

  An exception raised by `iterator` (or by the transfer) is re-raised in the
  consumer after the batches that preceded it. `close()` on the result (or
  garbage collection, or exhausting it) stops the thread and closes
  `iterator`.
  """
  return _Prefetcher(
    iterator, functools.partial(sharding_lib.to_global, sharding=sharding), size
  )


class _Prefetcher(Iterator[dict[str, Any]]):
  """A bounded queue filled by a daemon thread.

  The thread holds no reference to this object, so dropping the last
  reference stops it via __del__.
  """

  def __init__(self, iterator, transform, size: int):
    if size < 1:
      raise ValueError(f"prefetch size must be >= 1, got {size}")
    self._queue: queue.Queue = queue.Queue(maxsize=size)
    self._stop = threading.Event()
    self._done = False
    self._thread = threading.Thread(
      target=_produce,
      args=(iterator, transform, self._queue, self._stop),
      name="prefetch_to_device",
      daemon=True,
    )
    self._thread.start()

  def __next__(self) -> dict[str, Any]:
    if self._done:
      raise StopIteration
    kind, item = self._queue.get()
    if kind == "ok":
      return item
    self.close()
    if kind == "end":
      raise StopIteration
    raise item

  def close(self) -> None:
    """Stops the producer thread and waits for it (briefly); idempotent."""
    self._done = True
    self._stop.set()
    self._thread.join(timeout=10)

  def __del__(self):
    self._stop.set()


def _produce(
  iterator, transform, out: queue.Queue, stop: threading.Event
) -> None:
  """Producer thread: transforms items into `out` until done or stopped."""

  def put(item) -> bool:
    while not stop.is_set():
      try:
        out.put(item, timeout=0.05)
        return True
      except queue.Full:
        pass
    return False

  try:
    for batch in iterator:
      if not put(("ok", transform(batch))):
        return
    put(("end", None))
  except BaseException as e:  # pylint: disable=broad-except
    put(("error", e))
  finally:
    close = getattr(iterator, "close", None)
    if close is not None:
      close()
