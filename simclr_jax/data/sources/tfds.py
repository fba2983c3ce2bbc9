"""The tfds source: a prepared tensorflow_datasets dataset; never downloads.

Index and read order are the split's order on disk (files not shuffled);
process shards are `tfds.even_splits` of it. The image is the supervised
image feature (else the first image feature), the label the supervised
ClassLabel (else 'label' if it is one; otherwise unlabelled, -1).
"""

from __future__ import annotations

import contextlib
import difflib
from typing import Iterator

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from simclr_jax.data.sources import base
from simclr_jax.data.sources import images
from simclr_jax.errors import UserError


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
  """tfds logs a warning for every version folder it finds incomplete
  (that is what an unprepared dataset is); the UserError says it once."""
  previous = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)
  try:
    yield
  finally:
    logging.set_verbosity(previous)


def _builder(cfg: base.DataConfig):
  """Returns a prepared tfds builder; never downloads."""
  with _quiet():
    return _prepared_builder(cfg)


def _prepared_builder(cfg: base.DataConfig):
  name, data_dir = cfg.name, cfg.data_dir
  try:
    builder = tfds.builder(name, data_dir=data_dir or None)
  except tfds.core.registered.DatasetNotFoundError:
    base_name = name.split(":")[0].split("/")[0]
    close = difflib.get_close_matches(base_name, tfds.list_builders(), n=5)
    hint = (
      f"did you mean {', '.join(close)}?"
      if close
      else "see `tfds.list_builders()` or https://www.tensorflow.org/"
      "datasets/catalog for the names"
    )
    raise UserError(f"unknown tfds dataset {name!r}; {hint}") from None
  if not builder.is_prepared():
    try:  # readable anyway, e.g. under tfds.testing.mock_data
      _dataset(builder, cfg.train_split)
    except AssertionError:
      where = data_dir or "the default tfds data_dir (~/tensorflow_datasets)"
      raise UserError(
        f"tfds dataset {name!r} is not prepared in {where} and this "
        f"program never downloads. On a machine with network access run "
        f"`tfds build {name} --data_dir {data_dir or '<DIR>'}` (or "
        f"`tfds.builder({name!r}, data_dir=...).download_and_prepare()`), "
        "then copy that folder here and pass it as data_dir"
      ) from None
  return builder


def _dataset(builder, split, **kwargs) -> tf.data.Dataset:
  return builder.as_dataset(
    split=split,
    shuffle_files=False,
    read_config=tfds.ReadConfig(try_autocache=False),
    **kwargs,
  )


def _num_examples(builder, split) -> int:
  """Size of a split (or sub-split); UserError naming the valid splits."""
  splits = builder.info.splits
  if not splits:  # sizes unknown (mock_data without metadata): count
    return max(0, int(_dataset(builder, split).cardinality()))
  try:
    return int(splits[split].num_examples)
  except (KeyError, ValueError, AssertionError) as e:
    raise UserError(
      f"split {split!r} is not valid for tfds dataset {builder.name!r} "
      f"({e}); available splits: {', '.join(splits)}. Set "
      "train_split/eval_split accordingly (eval_split='' for none)"
    ) from None


def _keys(builder) -> tuple[str, str | None]:
  """The image feature name and the ClassLabel feature name (or None)."""
  features = dict(builder.info.features.items())
  keys = builder.info.supervised_keys
  image_key, label_key = (
    keys
    if keys and len(keys) == 2 and all(isinstance(k, str) for k in keys)
    else ("image", "label")
  )
  if not isinstance(features.get(image_key), tfds.features.Image):
    found = [
      k for k, f in features.items() if isinstance(f, tfds.features.Image)
    ]
    if not found:
      raise UserError(
        f"tfds dataset {builder.name!r} has no image feature; "
        "pick an image classification dataset"
      )
    image_key = found[0]
  if not isinstance(features.get(label_key), tfds.features.ClassLabel):
    label_key = None
  return image_key, label_key


def _converter(builder, size: int):
  """tfds example -> {'image': uint8 (size, size, 3), 'label': int32}."""
  image_key, label_key = _keys(builder)

  def convert(ex):
    label = (
      tf.cast(ex[label_key], tf.int32)
      if label_key
      else tf.constant(-1, tf.int32)
    )
    return {
      "image": images.to_fixed_size(ex[image_key], size),
      "label": label,
    }

  return convert


class TfdsSource(base.Source):
  """A prepared tfds dataset (`cfg.name`, `cfg.data_dir`)."""

  name = "tfds"

  def check(self, cfg: base.DataConfig) -> None:
    if not cfg.name:
      raise UserError("source 'tfds' needs a dataset name (e.g. cifar10)")

  def info(self, cfg: base.DataConfig) -> base.DatasetInfo:
    builder = _builder(cfg)
    num_train = _num_examples(builder, cfg.train_split)
    num_eval = _num_examples(builder, cfg.eval_split) if cfg.eval_split else 0
    _, label_key = _keys(builder)
    names = tuple(builder.info.features[label_key].names) if label_key else ()
    return base.DatasetInfo(num_train, num_eval, len(names), names)

  def num_examples(self, cfg: base.DataConfig, split: str) -> int:
    return _num_examples(_builder(cfg), split)

  def labels(self, cfg: base.DataConfig, split: str) -> np.ndarray:
    """Reads the labels only (images not decoded)."""
    builder = _builder(cfg)
    _num_examples(builder, split)  # validates the split
    image_key, label_key = _keys(builder)
    if label_key is None:
      raise UserError(
        f"tfds dataset {cfg.name!r} has no labels; fine-tuning "
        "needs a labelled dataset"
      )
    ds = _dataset(
      builder, split, decoders={image_key: tfds.decode.SkipDecoding()}
    )
    ds = ds.map(lambda ex: tf.cast(ex[label_key], tf.int32)).batch(4096)
    parts = list(ds.as_numpy_iterator())
    return np.concatenate(parts) if parts else np.zeros((0,), np.int32)

  def shard(
    self, cfg: base.DataConfig, split: str, index: int, count: int
  ) -> base.Shard:
    builder = _builder(cfg)
    _num_examples(builder, split)  # validates the split
    shards = tfds.even_splits(split, n=count)
    sizes = [_num_examples(builder, s) for s in shards]
    convert = _converter(builder, cfg.host_image_size)
    ds = _dataset(builder, shards[index])
    ds = ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)
    return base.Shard(ds, sizes[index], max(sizes))

  def select(
    self, cfg: base.DataConfig, split: str, indices: np.ndarray
  ) -> base.Shard:
    """Reads the split in order and keeps the selected examples.

    Every process reads the whole split once (then the cache serves later
    epochs); fine for CIFAR-sized data, and ImageNet has official subsets.
    """
    builder = _builder(cfg)
    n = _num_examples(builder, split)
    convert = _converter(builder, cfg.host_image_size)
    selected = np.zeros(n, bool)
    selected[indices] = True
    keep = tf.constant(selected)
    ds = _dataset(builder, split).enumerate()
    ds = ds.filter(lambda i, ex: tf.gather(keep, i))
    ds = ds.map(lambda i, ex: convert(ex), num_parallel_calls=tf.data.AUTOTUNE)
    return base.Shard(ds, indices.size, indices.size)
