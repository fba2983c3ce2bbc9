"""Unreadable image files: the up-front check and the reason for one file.

Training skips a file that cannot be read or decoded (see `pipeline.py`),
but a folder that is mostly unreadable is refused before anything starts:
`check_sample` decodes a fixed sample of a split's files (all of them up to
`SAMPLE_SIZE`) through the decode the pipeline uses, so it catches exactly
the failures training would meet, not just those a header check sees.
"""

from __future__ import annotations

import re

import numpy as np
import tensorflow as tf

from simclr_jax.data.sources import images
from simclr_jax.errors import UserError

# Files decoded by the up-front check per split: all of a split this small,
# else a fixed sample of this many (1-2 s for ImageNet JPEGs on 2 cores).
SAMPLE_SIZE = 256
# Bad paths named in the error message.
_NAMED = 3


def sample(paths: tuple[str, ...]) -> tuple[str, ...]:
  """All of `paths` up to SAMPLE_SIZE, else a fixed sample (in their order)
  that depends on the list only: the same folder checks the same files."""
  if len(paths) <= SAMPLE_SIZE:
    return paths
  rng = np.random.default_rng(0)
  picked = np.sort(rng.choice(len(paths), SAMPLE_SIZE, replace=False))
  return tuple(paths[i] for i in picked)


# Samples found all readable in this process: not decoded again. (A
# sample with bad files is, so that replacing them in place is seen.)
_CLEAN: set[tuple[str, ...]] = set()


def unreadable(paths: tuple[str, ...]) -> tuple[int, ...]:
  """Positions in `paths` of the files that fail to read or decode.

  Decodes them in parallel in tf.data, as the pipeline does, and keeps the
  positions that come out of `ignore_errors`.
  """
  if not paths or paths in _CLEAN:
    return ()
  ds = tf.data.Dataset.from_tensor_slices(
    (tf.range(len(paths), dtype=tf.int64), tf.constant(paths, tf.string))
  )

  @tf.autograph.experimental.do_not_convert
  def decode(i, path):
    # The (tiny) image is returned so the decode cannot be pruned.
    return i, images.decode_file(path, 8)

  ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
  good = {int(i) for i, _ in ds.as_numpy_iterator()}
  bad = tuple(i for i in range(len(paths)) if i not in good)
  if not bad:
    _CLEAN.add(paths)
  return bad


def why_unreadable(path: str) -> str | None:
  """Why `path` cannot be read or decoded (one line), or None if it can."""
  try:
    images.decode_file(tf.constant(path), 8)
  except (tf.errors.OpError, ValueError) as e:
    # TF wraps the reason: "{{function_node ...}} REASON [Op:DecodeImage]".
    message = getattr(e, "message", str(e))
    reason = re.sub(r"\{\{.*?\}\}", "", message).split("[Op:")[0]
    return " ".join(reason.split())[:200] or type(e).__name__
  return None


def check_sample(
  paths: tuple[str, ...], where: str, max_fraction: float
) -> None:
  """Raises UserError if more than `max_fraction` of a sample of `paths`
  (the image files of a split, `where` says which) cannot be decoded, or
  if none of the sample can (there would be nothing to train on)."""
  checked = sample(paths)
  bad = unreadable(checked)
  everything = len(bad) == len(checked)
  if not bad or (not everything and len(bad) <= max_fraction * len(checked)):
    return
  named = []
  for i in bad[:_NAMED]:
    reason = why_unreadable(checked[i]) or "failed to decode in tf.data"
    named.append(f"{checked[i]} ({reason})")
  more = f" and {len(bad) - _NAMED} more" if len(bad) > _NAMED else ""
  scope = (
    "all of them"
    if len(checked) == len(paths)
    else f"a fixed sample of its {len(paths):,} files"
  )
  limit = (
    "none is readable"
    if everything
    else f"more than data.max_unreadable_fraction={max_fraction:g} allows"
  )
  fix = (
    " (and check that data_dir is the image folder you meant)"
    if everything
    else ", or raise data.max_unreadable_fraction (training skips the "
    "unreadable files it meets and counts them)"
  )
  raise UserError(
    f"{len(bad)} of {len(checked)} image files checked in {where} ({scope}) "
    f"could not be decoded, {limit}: {'; '.join(named)}{more}. Delete or "
    f"replace the unreadable files{fix}"
  )
