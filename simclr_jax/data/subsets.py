"""Stratified label subsets for semi-supervised fine-tuning (1%, 10%, ...).

`stratified_subset` picks a seed-fixed fraction of every class. Within a
class the examples are ranked by one seeded random permutation that does not
depend on the fraction, and the first `round(fraction * n_class)` (at least
one) are taken, so for the same seed a smaller fraction's subset is
contained in a larger one's (1% is inside 10%).

`load_subset_shard` turns that into a `sources.Shard` of the training split
for any source, through the `sources.Source` interface (`labels`, then
`select`): builtin and folder sources select the examples before decoding;
other tfds datasets read the labels once (images not decoded) and filter
the split; ImageNet's 1% and 10% use the official tfds subsets
(`imagenet2012_subset/1pct`, `/10pct`) the SimCLR papers report on.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

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
  return sources.check_config(cfg).labels(cfg, split)


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
  source = sources.check_config(cfg)
  indices = np.asarray(indices, np.int64)
  if not 0 <= process_index < process_count:
    raise UserError(
      f"process_index {process_index} is not in [0, {process_count})"
    )
  _check_indices(indices, source.num_examples(cfg, split), split)
  order = indices[np.random.default_rng(0).permutation(indices.size)]
  start, end = sources.contiguous(order.size, process_index, process_count)
  shard = source.select(cfg, split, order[start:end])
  shard = dataclasses.replace(
    shard, max_shard_examples=-(-order.size // process_count)
  )
  return source.cached(cfg, shard)


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
