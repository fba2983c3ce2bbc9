"""Per-process batching of training and evaluation passes.

Each process reads only its part of a split (see `sources.load_shard`) and
produces batches of `global_batch_size // process_count` examples as numpy
arrays; `sharding.to_global` assembles them into arrays sharded along the
batch axis across all processes, and `prefetch.prefetch_to_device` does that
in a background thread so the next batches are on the device while the
current step runs.

Training order does not depend on the process count. The train split is cut
into S "reader shards" (`num_shards`; contiguous, as `load_shard` with S
parts). Reader shard s is an infinite stream of its own: epoch `e` is the
shard shuffled with a seed derived from (seed, s, e), epochs are concatenated
and cut into blocks of B/S examples (blocks may straddle epochs). Global
batch k is block k of shard 0, then of shard 1, ..., of shard S-1. Process p
of P reads only shards [p*S/P, (p+1)*S/P) and yields their blocks
concatenated; `to_global` puts process 0's rows first, so the global batches
are identical for every P that divides S. Resuming at `start_step` jumps
every stream straight to the right epoch and skips only the examples already
used inside it. The shuffle buffer, `shuffle_buffer` examples in all, is
split evenly between the S shards (a process holds its shards' part).

Unreadable files (folder source) are dropped where they are decoded, and
every epoch of a reader shard is brought back to the shard's full length:
after its readable examples come, one per dropped file, its first readable
examples again, flagged (`_full_epoch`). So an epoch is n examples long
whatever is unreadable, the fast-forward above needs no decoding to find
the right place, and a resumed stream is exactly the uninterrupted one;
`TrainBatches.unreadable_skipped` counts the flagged examples yielded.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from simclr_jax.data import batches as batches_lib
from simclr_jax.data import sources
from simclr_jax.errors import UserError

_MAX_EPOCHS = 2**62


def local_batch_size(global_batch_size: int, process_count: int) -> int:
  """The batch each process produces; the global batch must split evenly."""
  if global_batch_size < 1:
    raise UserError(f"batch size must be positive, got {global_batch_size}")
  if global_batch_size % process_count:
    raise UserError(
      f"global batch size {global_batch_size} is not divisible by the "
      f"number of processes {process_count}; use a multiple of "
      f"{process_count}"
    )
  return global_batch_size // process_count


@functools.lru_cache(maxsize=16)
def _shard(
  cfg: sources.DataConfig, split: str, process_index: int, process_count: int
) -> sources.Shard:
  """One Shard object per (split, part), so its in-memory cache is shared by
  the training pipeline and evaluation passes (e.g. kNN over the train split)
  whenever both cut the split the same way."""
  return sources.load_shard(
    cfg, split, process_index=process_index, process_count=process_count
  )


def num_reader_shards(
  num_shards: int, global_batch_size: int, process_count: int
) -> int:
  """Checks `num_shards` (0: one per process) and returns the shard count.

  Every shard gives B/S rows to each batch and every process reads S/P whole
  shards, so S must divide the global batch and be a multiple of P.
  """
  shards = num_shards or process_count
  if shards < 0:
    raise UserError(
      f"num_shards must be >= 0 (0: the default count), got {num_shards}"
    )
  if global_batch_size % shards:
    raise UserError(
      f"num_shards={shards} does not divide the global batch size "
      f"{global_batch_size} (every batch takes the same number of examples "
      f"from each reader shard); set num_shards (config.data.num_shards) "
      f"to a divisor of {global_batch_size} that is a multiple of the "
      f"{process_count} process(es)"
    )
  if shards % process_count:
    raise UserError(
      f"num_shards={shards} is not a multiple of the {process_count} "
      f"processes (each process reads whole reader shards); set "
      f"num_shards (config.data.num_shards) to a multiple of "
      f"{process_count} that divides {global_batch_size}"
    )
  return shards


def train_batches(
  cfg: sources.DataConfig,
  *,
  global_batch_size: int,
  seed: int,
  process_index: int = 0,
  process_count: int = 1,
  start_step: int = 0,
  num_shards: int | None = None,
) -> batches_lib.TrainBatches:
  """Infinite, shuffled batches {'image': uint8 (B, S, S, 3), 'label': int32}.

  B = global_batch_size // process_count: this process's rows of the global
  batch, read from its reader shards only (see the module docstring).
  `num_shards` (None: `cfg.num_shards`; 0: one per process) fixes the order:
  the same `num_shards` gives the same global batches for any process count
  that divides it. Incomplete batches never occur (the stream is infinite),
  each epoch is reshuffled deterministically from `seed`, and `start_step=k`
  yields exactly what the uninterrupted iterator yields from its k-th batch
  on. A file that cannot be read or decoded is skipped: its place in the
  epoch goes to a repeat of a readable image of the same epoch (see the
  module docstring), and the returned iterator's `unreadable_skipped` (int)
  counts those places in the batches it has yielded (this process only).
  """
  local_batch_size(global_batch_size, process_count)
  if start_step < 0:
    raise UserError(f"start_step must be >= 0, got {start_step}")
  if not 0 <= process_index < process_count:
    raise UserError(
      f"process_index {process_index} is not in "
      f"[0, {process_count}); pass jax.process_index() and "
      "jax.process_count()"
    )
  total = num_reader_shards(
    cfg.num_shards if num_shards is None else num_shards,
    global_batch_size,
    process_count,
  )
  per_process = total // process_count
  mine = range(process_index * per_process, (process_index + 1) * per_process)
  shards = [_shard(cfg, cfg.train_split, s, total) for s in mine]
  return shard_batches(
    shards,
    first_index=mine.start,
    num_shards=total,
    global_batch_size=global_batch_size,
    seed=seed,
    shuffle_buffer=cfg.shuffle_buffer,
    start_step=start_step,
    split=cfg.train_split,
  )


def shard_batches(
  shards: Sequence[sources.Shard],
  *,
  first_index: int,
  num_shards: int,
  global_batch_size: int,
  seed: int,
  shuffle_buffer: int,
  start_step: int = 0,
  split: str = "train",
) -> batches_lib.TrainBatches:
  """This process's rows of endless global batches from given reader shards.

  `shards` are reader shards `first_index`, `first_index + 1`, ... of
  `num_shards` (e.g. a label subset split over processes: one shard per
  process); each gives B/num_shards rows per batch, as `train_batches`
  describes. `shuffle_buffer` is the total over all shards (<= 1: no
  shuffling). The iterator counts skipped unreadable images
  (`unreadable_skipped`), as `train_batches` says.
  """
  if global_batch_size % num_shards:
    raise UserError(
      f"the global batch size {global_batch_size} is not a "
      f"multiple of the {num_shards} reader shards"
    )
  # The buffer is shared out so that it, like the order, does not depend on
  # the process count; 0 or 1 turns shuffling off.
  buffer = -(-shuffle_buffer // num_shards) if shuffle_buffer > 1 else 0
  streams = [
    _reader_stream(
      shard,
      first_index + i,
      num_shards,
      seed=seed,
      buffer=buffer,
      block=global_batch_size // num_shards,
      start_step=start_step,
      split=split,
    )
    for i, shard in enumerate(shards)
  ]
  if len(streams) == 1:
    ds = streams[0]
  else:
    ds = tf.data.Dataset.zip(tuple(streams)).map(
      lambda *blocks: {
        k: tf.concat([b[k] for b in blocks], 0) for k in blocks[0]
      }
    )
  ds = ds.prefetch(tf.data.AUTOTUNE)
  files = tuple(f for shard in shards for f in shard.files)
  return batches_lib.TrainBatches(ds, files)


def _reader_stream(
  shard: sources.Shard,
  index: int,
  count: int,
  *,
  seed: int,
  buffer: int,
  block: int,
  start_step: int,
  split: str,
) -> tf.data.Dataset:
  """Blocks of `block` examples from reader shard `index`, from `start_step`.

  Epoch e is the shard shuffled with a seed from (seed, index, e), through a
  shuffle buffer of `buffer` examples (or the source's full reshuffle); 0:
  every epoch in the shard's fixed order. Epochs of a shard that drops
  unreadable files are filled back to n examples (`_full_epoch`).
  """
  n = shard.num_examples
  if n == 0:
    raise UserError(
      f"reader shard {index} of {count} got no training examples: split "
      f"{split!r} has fewer examples than shards; use more data or set "
      "config.data.num_shards lower"
    )
  first_epoch, skip = divmod(start_step * block, n)
  shuffle = buffer > 0 and n > 1
  buffer = max(1, min(buffer, n))
  base = shard.dataset
  seed_base = int(
    np.random.SeedSequence([seed, index]).generate_state(1)[0]
  ) % (2**31 - 1)

  def shuffled(e):
    epoch_seed = (seed_base + e * 1_000_003) % (2**31 - 1)
    if not shuffle:
      return base
    if shard.reshuffled is not None:
      return shard.reshuffled(epoch_seed)
    return base.shuffle(buffer, seed=epoch_seed, reshuffle_each_iteration=False)

  def epoch(e):
    if shard.skips_unreadable:
      return _full_epoch(lambda: shuffled(e), n)
    return shuffled(e)

  ds = tf.data.Dataset.range(first_epoch, _MAX_EPOCHS).flat_map(epoch)
  # Each stream fills ahead on its own, so a process's shards decode in
  # parallel rather than one after the other.
  return ds.skip(skip).batch(block, drop_remainder=True).prefetch(1)


def _full_epoch(make: Callable[[], tf.data.Dataset], n: int) -> tf.data.Dataset:
  """One epoch of a shard of n files, unreadable ones dropped, filled back
  to exactly n examples, each flagged `batches.UNREADABLE_KEY`.

  `make()` builds the epoch (a fixed order, unreadable files dropped). Its
  readable examples come first (flag 0); then, one per dropped file, its
  readable examples again from the start (flag 1), so the fillers are the
  same in every run. An epoch with no readable example fails
  (assert_cardinality) rather than looping forever. The two passes are
  built apart: with one dataset node shared by both, tf.data's
  shuffle-and-repeat fusion loses the flags.
  """

  @tf.autograph.experimental.do_not_convert
  def real(ex):
    return {**ex, batches_lib.UNREADABLE_KEY: tf.constant(0, tf.int32)}

  @tf.autograph.experimental.do_not_convert
  def filler(ex):
    return {**ex, batches_lib.UNREADABLE_KEY: tf.constant(1, tf.int32)}

  # Nothing of the second part is read when no file was dropped.
  full = make().map(real).concatenate(make().repeat().map(filler)).take(n)
  return full.apply(tf.data.experimental.assert_cardinality(n))


def eval_batches(
  cfg: sources.DataConfig,
  split: str,
  *,
  global_batch_size: int,
  process_index: int = 0,
  process_count: int = 1,
) -> batches_lib.EvalBatches:
  """One ordered pass over `split`, padded to full batches.

  Every batch has 'image', 'label' and 'mask' (True for real examples);
  padding is zeros with label -1. All processes yield the same number of
  batches (enough for the largest shard), so collective steps never hang.
  Unreadable files (folder source) are skipped, not raised: they are not
  in any batch, so masks count only the real images, and the iterator's
  `unreadable_skipped` gives (and a warning logs) how many were left out
  once the pass has read its data.
  """
  local = local_batch_size(global_batch_size, process_count)
  shard = _shard(cfg, split, process_index, process_count)
  return batches_lib.EvalBatches(
    shard.dataset.batch(local).prefetch(tf.data.AUTOTUNE),
    shard.files,
    size=local,
    num_batches=-(-shard.max_shard_examples // local),
    num_examples=shard.num_examples,
    image_size=cfg.host_image_size,
    split=split,
  )
