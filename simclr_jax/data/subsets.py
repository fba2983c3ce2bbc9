"""Stratified label subsets for semi-supervised fine-tuning (1%, 10%, ...).

`stratified_subset` picks a seed-fixed fraction of every class. Within a
class the examples are ranked by one seeded random permutation that does not
depend on the fraction, and the first `round(fraction * n_class)` (at least
one) are taken, so for the same seed a smaller fraction's subset is
contained in a larger one's (1% is inside 10%).

`load_subset_shard` turns that into a `sources.Shard` of the training split
for any source: builtin and folder sources select the examples before
decoding; other tfds datasets read the labels once (images not decoded) and
filter the split; ImageNet's 1% and 10% use the official tfds subsets
(`imagenet2012_subset/1pct`, `/10pct`) the SimCLR papers report on.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from simclr_jax.data import builtin
from simclr_jax.data import sources
from simclr_jax.errors import UserError

# (tfds dataset, fraction) -> the official subset, for the reported numbers.
OFFICIAL_SUBSETS = {
  ("imagenet2012", 0.01): "imagenet2012_subset/1pct",
  ("imagenet2012", 0.1): "imagenet2012_subset/10pct",
}


def stratified_subset(
  labels: np.ndarray, fraction: float, seed: int
) -> np.ndarray:
  """Sorted indices of `fraction` of each class (rounded half up, >= 1).

  Deterministic in (labels, fraction, seed); nested in `fraction` for a
  fixed seed. Raises UserError for a fraction outside (0, 1] and for
  unlabelled examples (label < 0).
  """
  if not (isinstance(fraction, (int, float)) and 0.0 < fraction <= 1.0):
    raise UserError(
      f"the label fraction must be in (0, 1] (e.g. 0.01 for "
      f"1%, 0.1 for 10%), got {fraction!r}"
    )
  labels = np.asarray(labels)
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise UserError(
      f"labels must be a 1-D integer array, got shape "
      f"{labels.shape} and dtype {labels.dtype}"
    )
  if labels.size == 0:
    raise UserError("cannot take a labelled subset of an empty split")
  unlabelled = int((labels < 0).sum())
  if unlabelled:
    raise UserError(
      f"{unlabelled} of {labels.size} examples have no label (-1); a "
      "labelled subset needs every training image in a class folder or a "
      "labelled dataset"
    )
  rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
  perm = rng.permutation(labels.size)
  # Examples grouped by class, each class in its permuted order.
  grouped = perm[np.argsort(labels[perm], kind="stable")]
  _, starts, counts = np.unique(
    labels[grouped], return_index=True, return_counts=True
  )
  take = np.maximum(1, np.floor(fraction * counts + 0.5)).astype(int)
  rank = np.arange(labels.size) - np.repeat(starts, counts)
  keep = rank < np.repeat(take, counts)
  return np.sort(grouped[keep])


def official_subset_name(name: str, fraction: float) -> str | None:
  """The tfds name of an official subset for (dataset, fraction), or None.

  `name` may carry a version or config ("imagenet2012:5.1.0"); the subset is
  then taken at its own default version.
  """
  base = name.split(":")[0].split("/")[0]
  for (dataset, frac), subset in OFFICIAL_SUBSETS.items():
    if base == dataset and math.isclose(fraction, frac, rel_tol=1e-9):
      return subset
  return None


def split_labels(cfg: sources.DataConfig, split: str) -> np.ndarray:
  """Labels of a split in the order `subset_shard` indexes it (-1 = none)."""
  sources._check_config(cfg)
  if cfg.source == "builtin":
    return _builtin_arrays(cfg, split)[1]
  if cfg.source == "folder":
    return np.array([l for _, l in sources._folder_files(cfg, split)], np.int32)
  builder = sources._tfds_builder(cfg)
  sources._tfds_num_examples(builder, split)  # validates the split
  image_key, label_key = sources._tfds_keys(builder)
  if label_key is None:
    raise UserError(
      f"tfds dataset {cfg.name!r} has no labels; fine-tuning "
      "needs a labelled dataset"
    )
  ds = builder.as_dataset(
    split=split,
    shuffle_files=False,
    read_config=tfds.ReadConfig(try_autocache=False),
    decoders={image_key: tfds.decode.SkipDecoding()},
  )
  ds = ds.map(lambda ex: tf.cast(ex[label_key], tf.int32)).batch(4096)
  parts = list(ds.as_numpy_iterator())
  return np.concatenate(parts) if parts else np.zeros((0,), np.int32)


def subset_shard(
  cfg: sources.DataConfig,
  split: str,
  indices: np.ndarray,
  *,
  process_index: int = 0,
  process_count: int = 1,
) -> sources.Shard:
  """The examples `indices` (into `split_labels` order) as this process's
  Shard.

  The subset is put in a fixed pseudo-random order (so classes mix, as in
  `sources`) and split contiguously over processes; decoded images are
  cached when `cfg.cache` is set.
  """
  sources._check_config(cfg)
  indices = np.asarray(indices, np.int64)
  if not 0 <= process_index < process_count:
    raise UserError(
      f"process_index {process_index} is not in [0, {process_count})"
    )
  _check_indices(indices, _split_size(cfg, split), split)
  order = indices[np.random.default_rng(0).permutation(indices.size)]
  start, end = sources._contiguous(order.size, process_index, process_count)
  mine = order[start:end]
  max_shard = -(-order.size // process_count)
  if cfg.source == "builtin":
    images, labels = _builtin_arrays(cfg, split)
    ds = tf.data.Dataset.from_tensor_slices(
      {"image": images[mine], "label": labels[mine]}
    )
    return sources.Shard(ds, mine.size, max_shard)
  if cfg.source == "folder":
    shard = _folder_subset(cfg, split, mine, max_shard)
  else:
    shard = _tfds_subset(cfg, split, mine, max_shard)
  if cfg.cache:
    shard = dataclasses.replace(
      shard, dataset=shard.dataset.cache(), reshuffled=None
    )
  return shard


def load_subset_shard(
  cfg: sources.DataConfig,
  fraction: float,
  seed: int,
  *,
  process_index: int = 0,
  process_count: int = 1,
) -> sources.Shard:
  """This process's Shard of a stratified `fraction` of the train split.

  Fraction 1 is the whole split; ImageNet 1% / 10% on tfds are the official
  subsets (`official_subset_name`), whatever the seed.
  """
  official = (
    official_subset_name(cfg.name, fraction) if cfg.source == "tfds" else None
  )
  if official is not None:
    return sources.load_shard(
      dataclasses.replace(cfg, name=official),
      cfg.train_split,
      process_index=process_index,
      process_count=process_count,
    )
  indices = stratified_subset(
    split_labels(cfg, cfg.train_split), fraction, seed
  )
  return subset_shard(
    cfg,
    cfg.train_split,
    indices,
    process_index=process_index,
    process_count=process_count,
  )


def _check_indices(indices: np.ndarray, n: int, split: str) -> None:
  if (
    indices.size == 0
    or np.unique(indices).size != indices.size
    or (indices.min() < 0 or indices.max() >= n)
  ):
    raise UserError(
      f"subset indices must be distinct and in [0, {n}) for "
      f"split {split!r}; build them with stratified_subset("
      "split_labels(...), fraction, seed)"
    )


def _split_size(cfg: sources.DataConfig, split: str) -> int:
  if cfg.source == "builtin":
    return sources._builtin_split(cfg, split)[0]
  if cfg.source == "folder":
    return len(sources._folder_files(cfg, split))
  return sources._tfds_num_examples(sources._tfds_builder(cfg), split)


def _builtin_arrays(
  cfg: sources.DataConfig, split: str
) -> tuple[np.ndarray, np.ndarray]:
  n, seed = sources._builtin_split(cfg, split)
  return builtin.generate(n, cfg.host_image_size, seed)


def _folder_subset(cfg, split, mine, max_shard) -> sources.Shard:
  items = sources._folder_files(cfg, split)
  paths = [items[i][0] for i in mine]
  files = tf.data.Dataset.from_tensor_slices(
    {
      "path": tf.constant(paths, tf.string, shape=[len(paths)]),
      "label": tf.constant(
        [items[i][1] for i in mine], tf.int32, shape=[len(paths)]
      ),
    }
  )
  size = cfg.host_image_size

  def decode(ds):
    return sources.decode_paths(ds, size)

  def reshuffled(seed):
    return decode(
      files.shuffle(
        max(1, len(paths)), seed=seed, reshuffle_each_iteration=False
      )
    )

  return sources.Shard(
    decode(files), len(paths), max_shard, tuple(paths), reshuffled
  )


def _tfds_subset(cfg, split, mine, max_shard) -> sources.Shard:
  """Reads the split in order and keeps the selected examples.

  Every process reads the whole split once (then the cache serves later
  epochs); fine for CIFAR-sized data, and ImageNet has official subsets.
  """
  builder = sources._tfds_builder(cfg)
  n = sources._tfds_num_examples(builder, split)
  image_key, label_key = sources._tfds_keys(builder)
  selected = np.zeros(n, bool)
  selected[mine] = True
  keep = tf.constant(selected)
  ds = sources._tfds_dataset(builder, split).enumerate()
  ds = ds.filter(lambda i, ex: tf.gather(keep, i))
  ds = ds.map(
    lambda i, ex: {
      "image": sources.to_fixed_size(ex[image_key], cfg.host_image_size),
      "label": (
        tf.cast(ex[label_key], tf.int32)
        if label_key
        else tf.constant(-1, tf.int32)
      ),
    },
    num_parallel_calls=tf.data.AUTOTUNE,
  )
  return sources.Shard(ds, mine.size, max_shard)
