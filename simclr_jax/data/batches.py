"""The numpy iterators `pipeline.py` returns, and what they count.

`TrainBatches` turns the batched tf.data training stream into numpy batches
and keeps `unreadable_skipped`: the examples of the yielded batches that
stand in for files that could not be read or decoded (the pipeline marks
them, see `pipeline._full_epoch`). `EvalBatches` pads one ordered pass to
full batches with a mask; unreadable files are left out of it (not padded
in as examples) and counted once the pass has read its data.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import tensorflow as tf
from absl import logging

from simclr_jax.data.sources import readable
from simclr_jax.errors import UserError

# Per-example flag the training stream carries: 1 = this example fills the
# place of an unreadable file (a repeat of a readable one).
UNREADABLE_KEY = "unreadable"


class TrainBatches(Iterator[dict[str, np.ndarray]]):
  """{'image', 'label'} numpy batches of a tf.data stream.

  `unreadable_skipped` (int): unreadable images skipped so far by this
  process, i.e. the places of unreadable files in the batches yielded so far
  (a resumed stream counts from its first batch on). A tf.data error becomes
  a UserError naming a bad file where one of `files` is to blame.
  """

  def __init__(self, ds: tf.data.Dataset, files: tuple[str, ...]):
    self._it = ds.as_numpy_iterator()
    self._files = files
    self._skipped = 0

  @property
  def unreadable_skipped(self) -> int:
    """Unreadable images skipped in the batches yielded so far."""
    return self._skipped

  def __next__(self) -> dict[str, np.ndarray]:
    if self._it is None:
      raise StopIteration
    try:
      batch = next(self._it)
    except StopIteration:
      self._it = None
      raise
    except tf.errors.OpError as e:
      self._it = None
      error = _user_error(e, self._files)
      if error is None:
        raise
      raise error from None
    flags = batch.get(UNREADABLE_KEY)
    if flags is not None:
      self._skipped += int(np.sum(flags))
    return {
      "image": batch["image"],
      "label": np.asarray(batch["label"], np.int32),
    }

  def close(self) -> None:
    """Drops the tf.data iterator (and its buffers); idempotent."""
    self._it = None


class EvalBatches(Iterator[dict[str, np.ndarray]]):
  """Padded batches {'image', 'label', 'mask'} of one ordered pass.

  Yields exactly `num_batches` batches of `size` rows; rows past the data
  are zeros with label -1 and mask False. Unreadable files are left out:
  `unreadable_skipped` is `num_examples` minus the real rows, known (and
  logged) once the data is exhausted, 0 before.
  """

  def __init__(
    self,
    ds: tf.data.Dataset,
    files: tuple[str, ...],
    *,
    size: int,
    num_batches: int,
    num_examples: int,
    image_size: int,
    split: str,
  ):
    self._data = TrainBatches(ds, files)
    self._size, self._left = size, num_batches
    self._num_examples, self._real = num_examples, 0
    self._image_size, self._split = image_size, split
    self._skipped = 0

  @property
  def unreadable_skipped(self) -> int:
    """Files of the pass left out as unreadable (once the data is read)."""
    return self._skipped

  def __next__(self) -> dict[str, np.ndarray]:
    if self._left <= 0:
      self._finish()
      raise StopIteration
    batch = next(self._data, None) if self._data is not None else None
    if batch is None:
      self._finish()
      s = self._image_size
      batch = {
        "image": np.zeros((0, s, s, 3), np.uint8),
        "label": np.zeros((0,), np.int32),
      }
    self._left -= 1
    self._real += len(batch["label"])
    return pad(batch, self._size)

  def _finish(self) -> None:
    """Once the data runs out: counts (and logs) the files left out."""
    if self._data is None:
      return
    self._data.close()
    self._data = None
    self._skipped = max(0, self._num_examples - self._real)
    if self._skipped:
      logging.warning(
        "evaluation pass over split %r: %d unreadable image file(s) of "
        "this process's %d left out",
        self._split,
        self._skipped,
        self._num_examples,
      )

  def close(self) -> None:
    """Stops reading; idempotent."""
    if self._data is not None:
      self._data.close()
    self._data, self._left = None, 0


def pad(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
  """`batch` with 'mask' (True: real row), padded to `size` rows."""
  n = len(batch["label"])
  mask = np.arange(size) < n
  if n == size:
    return {**batch, "mask": mask}
  image = np.zeros((size,) + batch["image"].shape[1:], np.uint8)
  image[:n] = batch["image"]
  label = np.full((size,), -1, np.int32)
  label[:n] = batch["label"]
  return {"image": image, "label": label, "mask": mask}


def _user_error(
  error: tf.errors.OpError, files: tuple[str, ...]
) -> UserError | None:
  """The UserError for a tf.data failure of a folder stream, or None.

  Unreadable files are dropped in tf.data, so what reaches here is a
  reader shard in which no file is readable (its epoch comes out empty), or
  a failure of its own (None: re-raised as it is).
  """
  if not files or "expected to contain" not in (error.message or ""):
    return None
  for path in files:
    reason = readable.why_unreadable(path)
    if reason is not None:
      return UserError(
        f"a reader shard has no readable image file, so it cannot fill its "
        f"part of a batch; e.g. {path} ({reason}). Delete or replace the "
        "unreadable files (or use fewer reader shards, "
        "config.data.num_shards)"
      )
  return None
