"""The builtin source: the procedural dataset of `simclr_jax.data.builtin`.

Its splits are 'train' (`builtin_train_examples`) and 'test'
(`builtin_eval_examples`), generated in memory at the host size; the
index and read order are the generator's.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from simclr_jax.data import builtin as generator
from simclr_jax.data.sources import base
from simclr_jax.errors import UserError


def _split(cfg: base.DataConfig, split: str) -> tuple[int, int]:
  """Number of examples and generator seed of a builtin split."""
  sizes = {
    "train": cfg.builtin_train_examples,
    "test": cfg.builtin_eval_examples,
  }
  if split not in sizes:
    raise UserError(
      f"the builtin dataset has no split {split!r}; its splits "
      "are 'train' and 'test' (set train_split/eval_split, or "
      "eval_split='' for none)"
    )
  if sizes[split] < 1:
    raise UserError(
      f"builtin split {split!r} has {sizes[split]} examples; "
      "set builtin_train_examples/builtin_eval_examples > 0"
    )
  return sizes[split], generator.split_seed(cfg.builtin_seed, split)


def _arrays(cfg: base.DataConfig, split: str) -> tuple[np.ndarray, np.ndarray]:
  """All images and labels of a split (cached by the generator)."""
  n, seed = _split(cfg, split)
  return generator.generate(n, cfg.host_image_size, seed)


class BuiltinSource(base.Source):
  """Procedurally generated shapes; no download, always in memory."""

  name = "builtin"
  in_memory = True

  def info(self, cfg: base.DataConfig) -> base.DatasetInfo:
    num_train = _split(cfg, cfg.train_split)[0]
    num_eval = _split(cfg, cfg.eval_split)[0] if cfg.eval_split else 0
    return base.DatasetInfo(
      num_train, num_eval, generator.NUM_CLASSES, generator.CLASS_NAMES
    )

  def num_examples(self, cfg: base.DataConfig, split: str) -> int:
    return _split(cfg, split)[0]

  def labels(self, cfg: base.DataConfig, split: str) -> np.ndarray:
    return _arrays(cfg, split)[1]

  def shard(
    self, cfg: base.DataConfig, split: str, index: int, count: int
  ) -> base.Shard:
    images, labels = _arrays(cfg, split)
    n = len(labels)
    start, end = base.contiguous(n, index, count)
    ds = tf.data.Dataset.from_tensor_slices(
      {"image": images[start:end], "label": labels[start:end]}
    )
    return base.Shard(ds, end - start, -(-n // count))

  def select(
    self, cfg: base.DataConfig, split: str, indices: np.ndarray
  ) -> base.Shard:
    images, labels = _arrays(cfg, split)
    ds = tf.data.Dataset.from_tensor_slices(
      {"image": images[indices], "label": labels[indices]}
    )
    return base.Shard(ds, indices.size, indices.size)
