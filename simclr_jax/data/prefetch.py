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

  The result's `unreadable_skipped` (int) is the wrapped iterator's
  attribute of that name (`pipeline.train_batches`: unreadable images
  skipped), as it stood when the batch last returned was read, so it counts
  the batches handed out, not those queued ahead; 0 for an iterator
  without one.
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
    self._skipped = 0
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
    kind, item, skipped = self._queue.get()
    if kind == "ok":
      self._skipped = skipped
      return item
    self.close()
    if kind == "end":
      raise StopIteration
    raise item

  @property
  def unreadable_skipped(self) -> int:
    """The wrapped iterator's count as of the last batch returned."""
    return self._skipped

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
      skipped = int(getattr(iterator, "unreadable_skipped", 0))
      if not put(("ok", transform(batch), skipped)):
        return
    put(("end", None, 0))
  except BaseException as e:  # pylint: disable=broad-except
    put(("error", e, 0))
  finally:
    close = getattr(iterator, "close", None)
    if close is not None:
      close()
