"""The folder source: image files under root/<split>/<class>/**.

Without root/<train_split> the root itself is the train split ("flat"); its
eval split (when `eval_split` is set) is then a fixed tenth of each class
folder, held out of the train split (`_held_out`), and unlabelled images
alone have no eval split. Images directly in a split folder are unlabelled.
Labels and `select` index the sorted file list; `shard` reads a fixed
pseudo-random permutation of it, so that contiguous process shards, shuffle
buffers and eval batches all mix classes even though files are stored
class by class. Files are decoded lazily in tf.data; one that cannot be
read or decoded is dropped there (`ignore_errors`) and the pipeline fills
and counts its place, while `info` first decodes a sample of each split and
refuses one that is mostly unreadable (`readable.check_sample`).
"""

from __future__ import annotations

import functools
import os
import zlib

import numpy as np
import tensorflow as tf

from simclr_jax.data.sources import base
from simclr_jax.data.sources import images
from simclr_jax.data.sources import readable
from simclr_jax.errors import UserError


@functools.lru_cache(maxsize=32)
def _scan(folder: str) -> tuple[tuple[str, ...], dict[str, tuple[str, ...]]]:
  """Images directly in `folder`, and per first-level sub-folder (class).

  Deeper folders count for their first-level folder. Cached per process.
  """
  direct, by_class = [], {}
  for entry in sorted(os.scandir(folder), key=lambda e: e.name):
    if entry.name.startswith("."):
      continue
    if entry.is_dir():
      found = []
      for dirpath, dirnames, filenames in os.walk(entry.path, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(
          os.path.join(dirpath, f) for f in sorted(filenames) if _is_image(f)
        )
      if found:
        by_class[entry.name] = tuple(found)
    elif _is_image(entry.name):
      direct.append(entry.path)
  return tuple(direct), by_class


# Share of each class folder of a flat root held out as its eval split.
HELD_OUT_FRACTION = 0.1


@functools.lru_cache(maxsize=32)
def _held_out(root: str) -> frozenset[str]:
  """The images of a flat root held out for evaluation: in each class of n
  >= 2 images, a tenth (rounded half up, at least one), those whose paths
  relative to `root` have the lowest CRC-32. The choice depends on the file
  names only, not on where the folder lives or the order the disk lists."""
  held = set()
  for paths in _scan(root)[1].values():
    if len(paths) < 2:
      continue
    k = max(1, int(len(paths) * HELD_OUT_FRACTION + 0.5))
    rel = {p: os.path.relpath(p, root).replace(os.sep, "/") for p in paths}
    by_hash = sorted(paths, key=lambda p: (zlib.crc32(rel[p].encode()), p))
    held.update(by_hash[:k])
  return frozenset(held)


def _holds_out(cfg: base.DataConfig) -> bool:
  """Whether a flat root's eval split is held out of its train split."""
  return bool(cfg.eval_split) and cfg.eval_split != cfg.train_split


def _root(cfg: base.DataConfig) -> tuple[str, bool]:
  """The root of root/<split>/<class>/**/image, and whether it is flat.

  Flat: without root/<train_split> (and root/<eval_split>), root itself holds
  the train split's classes or images, and the eval split is held out of
  them (`_held_out`).
  """
  root = os.path.abspath(os.path.expanduser(cfg.data_dir))
  if not os.path.isdir(root):
    raise UserError(
      f"image folder {root} does not exist; set data_dir to "
      "the root of root/<split>/<class>/*.jpg"
    )
  if os.path.isdir(os.path.join(root, cfg.train_split)):
    return root, False
  if cfg.eval_split and os.path.isdir(os.path.join(root, cfg.eval_split)):
    raise UserError(
      f"{root} has a {cfg.eval_split!r} folder but no {cfg.train_split!r} "
      f"folder; create {root}/{cfg.train_split}/<class>/... or set "
      f"train_split to one of: {', '.join(_subdirs(root))}"
    )
  return root, True


def _is_image(name: str) -> bool:
  if name.startswith("."):
    return False
  return name.lower().endswith(images.IMAGE_EXTENSIONS)


def _subdirs(root: str) -> list[str]:
  return sorted(
    e.name
    for e in os.scandir(root)
    if e.is_dir() and not e.name.startswith(".")
  )


def _split_dir(cfg: base.DataConfig, split: str) -> str:
  root, flat = _root(cfg)
  if flat and (
    split == cfg.train_split
    or (split == cfg.eval_split and _holds_out(cfg) and _held_out(root))
  ):
    return root
  path = os.path.join(root, split)
  if flat or not split or not os.path.isdir(path):
    available = [cfg.train_split] if flat else _subdirs(root)
    raise UserError(
      f"image folder {root} has no split {split!r} "
      f"(available: {', '.join(available)}); set "
      "train_split/eval_split to one of those (eval_split='' "
      "for no evaluation)"
    )
  return path


def _classes(cfg: base.DataConfig) -> tuple[str, ...]:
  """Sorted class folder names of the train and eval splits together."""
  flat = _root(cfg)[1]
  splits = [cfg.train_split, "" if flat else cfg.eval_split]
  return tuple(
    sorted({c for s in splits if s for c in _scan(_split_dir(cfg, s))[1]})
  )


def _files(cfg: base.DataConfig, split: str) -> tuple[tuple[str, int], ...]:
  """(path, label) of every image of a split, sorted; label -1 if
  unlabelled."""
  folder = _split_dir(cfg, split)
  direct, by_class = _scan(folder)
  if not direct and not by_class:
    raise UserError(
      f"no images ({', '.join(images.IMAGE_EXTENSIONS)}) found in {folder}; "
      "put them in <class>/ sub-folders (or directly in it for unlabelled "
      "data)"
    )
  index = {c: i for i, c in enumerate(_classes(cfg))}
  unknown = sorted(set(by_class) - set(index))
  if unknown:
    raise UserError(
      f"class folders {', '.join(unknown[:5])} in {folder} appear in "
      f"neither {cfg.train_split!r} nor {cfg.eval_split!r}, so they have "
      "no label; remove them or use the same classes in every split"
    )
  items = [(p, -1) for p in direct]
  for name, paths in by_class.items():
    items.extend((p, index[name]) for p in paths)
  root, flat = _root(cfg)
  if flat and _holds_out(cfg):
    held = _held_out(root)
    keep = split == cfg.eval_split
    items = [(p, l) for p, l in items if (p in held) == keep]
  return tuple(items)


def _read_order(cfg: base.DataConfig, split: str) -> list[tuple[str, int]]:
  """(path, label) of every image of a split in the order shards read: a
  fixed permutation of the sorted list, so that classes mix."""
  items = _files(cfg, split)
  return [items[i] for i in np.random.default_rng(0).permutation(len(items))]


def _file_shard(
  mine: list[tuple[str, int]], size: int, max_shard: int
) -> base.Shard:
  """Decodes the files `mine` in that order; `reshuffled` shuffles the file
  names before decoding."""
  paths = tf.constant([p for p, _ in mine], tf.string, shape=[len(mine)])
  labels = tf.constant([l for _, l in mine], tf.int32, shape=[len(mine)])
  files = tf.data.Dataset.from_tensor_slices({"path": paths, "label": labels})

  def decode(ds):
    # Unreadable files are dropped here; `skips_unreadable` tells the
    # pipeline to fill and count their places.
    return images.decode_paths(ds, size).ignore_errors()

  def reshuffled(seed):
    return decode(
      files.shuffle(
        max(1, len(mine)), seed=seed, reshuffle_each_iteration=False
      )
    )

  return base.Shard(
    decode(files),
    len(mine),
    max_shard,
    tuple(p for p, _ in mine),
    reshuffled,
    skips_unreadable=True,
  )


def _check_readable(cfg: base.DataConfig, split: str) -> None:
  """Refuses a split whose sampled files are too often unreadable
  (`readable.check_sample`, at most `data.max_unreadable_fraction`)."""
  paths = tuple(p for p, _ in _files(cfg, split))
  where = f"split {split!r} of {_split_dir(cfg, split)}"
  readable.check_sample(paths, where, cfg.max_unreadable_fraction)


class FolderSource(base.Source):
  """Image files under `cfg.data_dir`; class = first-level sub-folder.

  Unreadable files (empty, not an image, truncated, no permission) are
  dropped where they are decoded (`ignore_errors`): training skips and
  counts them (`pipeline.train_batches`), evaluation passes leave them out.
  `info` refuses a split that is mostly unreadable (`_check_readable`).
  """

  name = "folder"

  def check(self, cfg: base.DataConfig) -> None:
    if not cfg.data_dir:
      raise UserError(
        "source 'folder' needs data_dir: the root of root/<split>/<class>/*.jpg"
      )
    fraction = cfg.max_unreadable_fraction
    if not (isinstance(fraction, (int, float)) and 0 <= fraction <= 1):
      raise UserError(
        f"data.max_unreadable_fraction must be in [0, 1] (e.g. 0.01: refuse "
        f"a folder with more than 1% unreadable images), got {fraction!r}"
      )

  def info(self, cfg: base.DataConfig) -> base.DatasetInfo:
    """Sizes and classes; first decodes a sample of each split's files
    (`_check_readable`: a second or so), so that a folder that is mostly
    unreadable fails here, before a run directory exists."""
    num_train = len(_files(cfg, cfg.train_split))
    root, flat = _root(cfg)
    if flat:  # held out of the train split's classes, if it has any
      num_eval = len(_held_out(root)) if _holds_out(cfg) else 0
    else:
      num_eval = len(_files(cfg, cfg.eval_split)) if cfg.eval_split else 0
    names = _classes(cfg)
    _check_readable(cfg, cfg.train_split)
    if num_eval:
      _check_readable(cfg, cfg.eval_split)
    return base.DatasetInfo(num_train, num_eval, len(names), names)

  def num_examples(self, cfg: base.DataConfig, split: str) -> int:
    return len(_files(cfg, split))

  def labels(self, cfg: base.DataConfig, split: str) -> np.ndarray:
    return np.array([l for _, l in _files(cfg, split)], np.int32)

  def shard(
    self, cfg: base.DataConfig, split: str, index: int, count: int
  ) -> base.Shard:
    items = _read_order(cfg, split)
    start, end = base.contiguous(len(items), index, count)
    return _file_shard(
      items[start:end], cfg.host_image_size, -(-len(items) // count)
    )

  def select(
    self, cfg: base.DataConfig, split: str, indices: np.ndarray
  ) -> base.Shard:
    items = _files(cfg, split)
    return _file_shard(
      [items[i] for i in indices], cfg.host_image_size, indices.size
    )
