"""What every data source shares: the Shard, the Source interface, the
registry (and, re-exported from `data/config.py`, DataConfig and
DatasetInfo).

A `Source` turns a `DataConfig` into sizes (`info`, `num_examples`), labels
(`labels`) and tf.data pipelines (`shard`, `select`) of one split. Two fixed
orders, both the source's own: the index order, in which `labels` lists a
split and `select` takes positions (label subsets), and the read order, that
`shard` cuts into contiguous process shards (evaluation and training read
it). They are the same except for image folders, whose read order is a fixed
permutation of the sorted file list (classes mixed). Sources register by
name (`register`); `get(cfg.source)` finds the one a config asks for.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import tensorflow as tf

from simclr_jax.data.config import DataConfig
from simclr_jax.data.config import DatasetInfo
from simclr_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Shard:
  """One process's part of a split, plus what every process needs to agree."""

  dataset: tf.data.Dataset  # unbatched, fixed order, not repeated
  num_examples: int  # examples in this process's shard
  max_shard_examples: int  # largest shard over all processes
  files: tuple[str, ...] = ()  # folder: to name a corrupt file
  # seed -> the shard fully shuffled (file names, before decoding); used
  # instead of a shuffle buffer when not cached.
  reshuffled: Callable[[tf.Tensor], tf.data.Dataset] | None = None
  # True (folder): files that cannot be read or decoded are dropped, so a
  # pass may yield fewer than num_examples; the pipeline fills and counts
  # their places in training (`pipeline._full_epoch`).
  skips_unreadable: bool = False


class Source(abc.ABC):
  """One kind of data source. Stateless: every method takes the config.

  Examples are `{'image': uint8 (S, S, 3), 'label': int32}` with S =
  `cfg.host_image_size` and label -1 for an unlabelled example. Methods
  raise `UserError` (with a fix) for a split or dataset that is not there.
  """

  name: ClassVar[str]  # the `DataConfig.source` that selects it
  # True: examples are in memory already, so `cfg.cache` does not apply.
  in_memory: ClassVar[bool] = False

  def check(self, cfg: DataConfig) -> None:
    """Raises UserError when `cfg` lacks a setting this source needs."""
    del cfg

  @abc.abstractmethod
  def info(self, cfg: DataConfig) -> DatasetInfo:
    """Sizes of the train and eval split and the class names."""

  @abc.abstractmethod
  def num_examples(self, cfg: DataConfig, split: str) -> int:
    """Size of `split`; UserError if there is no such split."""

  @abc.abstractmethod
  def labels(self, cfg: DataConfig, split: str) -> np.ndarray:
    """int32 labels of `split` in index order (-1: unlabelled)."""

  @abc.abstractmethod
  def shard(self, cfg: DataConfig, split: str, index: int, count: int) -> Shard:
    """Part `index` of `count` of `split`: a contiguous range of the read
    order (sizes differ by at most one), not cached."""

  @abc.abstractmethod
  def select(self, cfg: DataConfig, split: str, indices: np.ndarray) -> Shard:
    """The examples at `indices` (index-order positions, distinct, valid)
    of `split` as one shard, not cached: in the order of `indices`, or in
    index order for a source that can only stream the split (tfds).
    `max_shard_examples` is `len(indices)`; the caller sets it for a
    subset split over processes."""

  def cached(self, cfg: DataConfig, shard: Shard) -> Shard:
    """`shard` with its decoded examples cached in memory when `cfg.cache`
    is set and the source is not in memory already (no reshuffle then)."""
    if not cfg.cache or self.in_memory:
      return shard
    return dataclasses.replace(
      shard, dataset=shard.dataset.cache(), reshuffled=None
    )


_REGISTRY: dict[str, Source] = {}


def register(source: Source) -> Source:
  """Makes `source` available as `DataConfig(source=source.name)`."""
  if source.name in _REGISTRY:
    raise ValueError(f"data source {source.name!r} is registered already")
  _REGISTRY[source.name] = source
  return source


def names() -> tuple[str, ...]:
  """The registered source names, in registration order."""
  return tuple(_REGISTRY)


def get(name: str) -> Source:
  """The source registered as `name`; UserError naming the known ones."""
  try:
    return _REGISTRY[name]
  except KeyError:
    raise UserError(
      f"unknown data source {name!r}; use one of {', '.join(names())}"
    ) from None


def check_config(cfg: DataConfig) -> Source:
  """Validates `cfg` (sizes, then what its source needs); returns the
  source. Raises UserError."""
  source = get(cfg.source)
  if cfg.image_size < 1:
    raise UserError(f"image_size must be positive, got {cfg.image_size}")
  if cfg.host_size and cfg.host_size < cfg.image_size:
    raise UserError(
      f"host_size={cfg.host_size} is smaller than image_size="
      f"{cfg.image_size}; use 0 (= image_size) or a size of at "
      "least image_size, so that crops downsample"
    )
  source.check(cfg)
  return source


def contiguous(n: int, index: int, count: int) -> tuple[int, int]:
  """Start and end of shard `index` of n examples in `count` shards whose
  sizes differ by at most one (the largest has ceil(n / count))."""
  return n * index // count, n * (index + 1) // count
