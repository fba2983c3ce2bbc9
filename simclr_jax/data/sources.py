"""Data sources (tfds, image folder, built-in) as per-process tf.data pipelines.

A source gives one process's shard of one split as unbatched examples
`{'image': uint8 (S, S, 3), 'label': int32}` (label -1 if unlabelled) in a
fixed order, with S = `DataConfig.host_image_size`. The host only decodes and
resizes (shorter side to S, then centre crop); all random augmentation, and the
crops that read from these S x S squares, run later on the accelerator.

A corrupt image file (folder source) fails lazily inside tf.data; the pipeline
then names it in a `UserError` (see `pipeline.py`) rather than skipping it
silently or dying with a tf.data traceback.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
from collections.abc import Callable

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from simclr_jax.data import builtin
from simclr_jax.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
SOURCES = ("builtin", "tfds", "folder")


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where the images come from and the size the host brings them to."""

  source: str = "builtin"  # "builtin" | "tfds" | "folder"
  name: str = ""  # tfds dataset name, e.g. "cifar10"
  data_dir: str = ""  # tfds data_dir, or the image-folder root
  train_split: str = "train"  # tfds split, or sub-folder name for folders
  eval_split: str = "test"  # "" = no evaluation split
  image_size: int = 32  # model input size (square view side)
  host_size: int = 0  # side of the square the host brings images
  # to, crops read from it; 0: image_size
  builtin_train_examples: int = 10000
  builtin_eval_examples: int = 2000
  builtin_seed: int = 0
  shuffle_buffer: int = 10000
  cache: bool = True  # cache decoded images in memory
  num_shards: int = 0  # reader shards fixing the training order
  # (pipeline.train_batches); 0: one per process

  @property
  def host_image_size(self) -> int:
    """Side of the uint8 squares the host produces (>= image_size)."""
    return self.host_size or self.image_size


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """Sizes and classes of the configured dataset."""

  num_train: int
  num_eval: int  # 0 if there is no eval split
  num_classes: int  # 0 for unlabelled data
  class_names: tuple[str, ...]


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


def hide_tf_from_accelerators() -> None:
  """tf.data only runs on the host; keep TF off the GPUs/TPUs JAX owns."""
  for kind in ("GPU", "TPU"):
    try:
      tf.config.set_visible_devices([], kind)
    except (ValueError, RuntimeError):
      pass


def dataset_info(cfg: DataConfig) -> DatasetInfo:
  """Returns sizes and class names; validates the source (raises UserError)."""
  _check_config(cfg)
  if cfg.source == "builtin":
    num_train = _builtin_split(cfg, cfg.train_split)[0]
    num_eval = _builtin_split(cfg, cfg.eval_split)[0] if cfg.eval_split else 0
    return DatasetInfo(
      num_train, num_eval, builtin.NUM_CLASSES, builtin.CLASS_NAMES
    )
  if cfg.source == "tfds":
    builder = _tfds_builder(cfg)
    num_train = _tfds_num_examples(builder, cfg.train_split)
    num_eval = (
      _tfds_num_examples(builder, cfg.eval_split) if cfg.eval_split else 0
    )
    _, label_key = _tfds_keys(builder)
    names = tuple(builder.info.features[label_key].names) if label_key else ()
    return DatasetInfo(num_train, num_eval, len(names), names)
  num_train = len(_folder_files(cfg, cfg.train_split))
  _, flat = _folder_root(cfg)
  num_eval = (
    len(_folder_files(cfg, cfg.eval_split))
    if cfg.eval_split and not flat
    else 0
  )
  names = _folder_classes(cfg)
  return DatasetInfo(num_train, num_eval, len(names), names)


def load_shard(
  cfg: DataConfig, split: str, *, process_index: int = 0, process_count: int = 1
) -> Shard:
  """Builds the decoded, resized, optionally cached examples of one shard."""
  _check_config(cfg)
  if not 0 <= process_index < process_count:
    raise UserError(
      f"process_index {process_index} is not in "
      f"[0, {process_count}); pass jax.process_index() and "
      "jax.process_count()"
    )
  make = {
    "builtin": _builtin_shard,
    "tfds": _tfds_shard,
    "folder": _folder_shard,
  }[cfg.source]
  shard = make(cfg, split, process_index, process_count)
  if cfg.cache and cfg.source != "builtin":  # builtin is in memory already
    shard = dataclasses.replace(
      shard, dataset=shard.dataset.cache(), reshuffled=None
    )
  return shard


def _check_config(cfg: DataConfig) -> None:
  if cfg.source not in SOURCES:
    raise UserError(
      f"unknown data source {cfg.source!r}; use one of {', '.join(SOURCES)}"
    )
  if cfg.image_size < 1:
    raise UserError(f"image_size must be positive, got {cfg.image_size}")
  if cfg.host_size and cfg.host_size < cfg.image_size:
    raise UserError(
      f"host_size={cfg.host_size} is smaller than image_size="
      f"{cfg.image_size}; use 0 (= image_size) or a size of at "
      "least image_size, so that crops downsample"
    )
  if cfg.source == "tfds" and not cfg.name:
    raise UserError("source 'tfds' needs a dataset name (e.g. cifar10)")
  if cfg.source == "folder" and not cfg.data_dir:
    raise UserError(
      "source 'folder' needs data_dir: the root of root/<split>/<class>/*.jpg"
    )


def _contiguous(n: int, index: int, count: int) -> tuple[int, int]:
  """Start and end of shard `index` of n examples in `count` shards whose
  sizes differ by at most one (the largest has ceil(n / count))."""
  return n * index // count, n * (index + 1) // count


def to_fixed_size(image: tf.Tensor, size: int) -> tf.Tensor:
  """Brings any (H, W, C) image to uint8 (size, size, 3), keeping aspect.

  Grayscale becomes RGB, an alpha channel is dropped; images that are not
  already size x size get their shorter side resized to `size` (antialiased
  bilinear) and are centre cropped.
  """
  if image.shape.rank is None:
    image = tf.ensure_shape(image, [None, None, None])
  channels = tf.shape(image)[-1]
  image = tf.cond(
    channels < 3,
    lambda: tf.repeat(image[..., :1], 3, axis=-1),
    lambda: image[..., :3],
  )
  image = tf.image.convert_image_dtype(image, tf.uint8, saturate=True)
  image = tf.ensure_shape(image, [None, None, 3])
  height, width = tf.shape(image)[0], tf.shape(image)[1]

  def resize():
    hw = tf.cast(tf.stack([height, width]), tf.float32)
    new_hw = tf.cast(tf.round(hw * (size / tf.reduce_min(hw))), tf.int32)
    new_hw = tf.maximum(new_hw, size)
    resized = tf.image.resize(image, new_hw, antialias=True)
    top, left = (new_hw[0] - size) // 2, (new_hw[1] - size) // 2
    cropped = resized[top : top + size, left : left + size]
    return tf.cast(tf.clip_by_value(tf.round(cropped), 0, 255), tf.uint8)

  already = tf.logical_and(tf.equal(height, size), tf.equal(width, size))
  image = tf.cond(already, lambda: image, resize)
  return tf.ensure_shape(image, [size, size, 3])


def _builtin_split(cfg: DataConfig, split: str) -> tuple[int, int]:
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
  return sizes[split], builtin.split_seed(cfg.builtin_seed, split)


def _builtin_shard(cfg, split, index, count) -> Shard:
  n, seed = _builtin_split(cfg, split)
  images, labels = builtin.generate(n, cfg.host_image_size, seed)
  start, end = _contiguous(n, index, count)
  ds = tf.data.Dataset.from_tensor_slices(
    {"image": images[start:end], "label": labels[start:end]}
  )
  return Shard(ds, end - start, -(-n // count))


def _tfds_builder(cfg: DataConfig):
  """Returns a prepared tfds builder; never downloads."""
  name, data_dir = cfg.name, cfg.data_dir
  try:
    builder = tfds.builder(name, data_dir=data_dir or None)
  except tfds.core.registered.DatasetNotFoundError:
    base = name.split(":")[0].split("/")[0]
    close = difflib.get_close_matches(base, tfds.list_builders(), n=5)
    hint = (
      f"did you mean {', '.join(close)}?"
      if close
      else "see `tfds.list_builders()` or https://www.tensorflow.org/"
      "datasets/catalog for the names"
    )
    raise UserError(f"unknown tfds dataset {name!r}; {hint}") from None
  if not builder.is_prepared():
    try:  # readable anyway, e.g. under tfds.testing.mock_data
      _tfds_dataset(builder, cfg.train_split)
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


def _tfds_dataset(builder, split) -> tf.data.Dataset:
  return builder.as_dataset(
    split=split,
    shuffle_files=False,
    read_config=tfds.ReadConfig(try_autocache=False),
  )


def _tfds_num_examples(builder, split) -> int:
  """Size of a split (or sub-split); UserError naming the valid splits."""
  splits = builder.info.splits
  if not splits:  # sizes unknown (mock_data without metadata): count
    return max(0, int(_tfds_dataset(builder, split).cardinality()))
  try:
    return int(splits[split].num_examples)
  except (KeyError, ValueError, AssertionError) as e:
    raise UserError(
      f"split {split!r} is not valid for tfds dataset {builder.name!r} "
      f"({e}); available splits: {', '.join(splits)}. Set "
      "train_split/eval_split accordingly (eval_split='' for none)"
    ) from None


def _tfds_keys(builder) -> tuple[str, str | None]:
  """The image feature name and the ClassLabel feature name (or None)."""
  features = dict(builder.info.features.items())
  keys = builder.info.supervised_keys
  image_key, label_key = (
    keys
    if keys and len(keys) == 2 and all(isinstance(k, str) for k in keys)
    else ("image", "label")
  )
  if not isinstance(features.get(image_key), tfds.features.Image):
    images = [
      k for k, f in features.items() if isinstance(f, tfds.features.Image)
    ]
    if not images:
      raise UserError(
        f"tfds dataset {builder.name!r} has no image feature; "
        "pick an image classification dataset"
      )
    image_key = images[0]
  if not isinstance(features.get(label_key), tfds.features.ClassLabel):
    label_key = None
  return image_key, label_key


def _tfds_shard(cfg, split, index, count) -> Shard:
  builder = _tfds_builder(cfg)
  _tfds_num_examples(builder, split)  # validates the split
  shards = tfds.even_splits(split, n=count)
  sizes = [_tfds_num_examples(builder, s) for s in shards]
  image_key, label_key = _tfds_keys(builder)
  ds = _tfds_dataset(builder, shards[index])

  def convert(ex):
    label = (
      tf.cast(ex[label_key], tf.int32)
      if label_key
      else tf.constant(-1, tf.int32)
    )
    return {
      "image": to_fixed_size(ex[image_key], cfg.host_image_size),
      "label": label,
    }

  ds = ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)
  return Shard(ds, sizes[index], max(sizes))


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


def _folder_root(cfg: DataConfig) -> tuple[str, bool]:
  """The root of root/<split>/<class>/**/image, and whether it is flat.

  Flat: without root/<train_split> (and root/<eval_split>), root itself holds
  the train split's classes or images, and there is no eval split.
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
  return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def _subdirs(root: str) -> list[str]:
  return sorted(
    e.name
    for e in os.scandir(root)
    if e.is_dir() and not e.name.startswith(".")
  )


def _split_dir(cfg: DataConfig, split: str) -> str:
  root, flat = _folder_root(cfg)
  if flat and split == cfg.train_split:
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


def _folder_classes(cfg: DataConfig) -> tuple[str, ...]:
  """Sorted class folder names of the train and eval splits together."""
  flat = _folder_root(cfg)[1]
  splits = [cfg.train_split, "" if flat else cfg.eval_split]
  return tuple(
    sorted({c for s in splits if s for c in _scan(_split_dir(cfg, s))[1]})
  )


def _folder_files(cfg: DataConfig, split: str) -> tuple[tuple[str, int], ...]:
  """(path, label) of every image of a split, label -1 if unlabelled."""
  folder = _split_dir(cfg, split)
  direct, by_class = _scan(folder)
  if not direct and not by_class:
    raise UserError(
      f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {folder}; put "
      "them in <class>/ sub-folders (or directly in it for unlabelled data)"
    )
  index = {c: i for i, c in enumerate(_folder_classes(cfg))}
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
  return tuple(items)


def _folder_shard(cfg, split, index, count) -> Shard:
  """Decodes this process's files, in the folder's canonical order.

  The canonical order is a fixed pseudo-random permutation of the sorted
  file list, so that contiguous process shards, shuffle buffers and eval
  batches all mix classes even though files are stored class by class.
  """
  items = _folder_files(cfg, split)
  order = np.random.default_rng(0).permutation(len(items))
  start, end = _contiguous(len(items), index, count)
  mine = [items[i] for i in order[start:end]]
  paths = tf.constant([p for p, _ in mine], tf.string, shape=[len(mine)])
  labels = tf.constant([l for _, l in mine], tf.int32, shape=[len(mine)])
  files = tf.data.Dataset.from_tensor_slices({"path": paths, "label": labels})
  size = cfg.host_image_size

  def decode(ds):
    return decode_paths(ds, size)

  def reshuffled(seed):
    return decode(
      files.shuffle(
        max(1, len(mine)), seed=seed, reshuffle_each_iteration=False
      )
    )

  return Shard(
    decode(files),
    end - start,
    -(-len(items) // count),
    tuple(p for p, _ in mine),
    reshuffled,
  )


def decode_paths(ds: tf.data.Dataset, size: int) -> tf.data.Dataset:
  """{'path', 'label'} examples -> {'image', 'label'}, decoded in parallel."""

  # A named function with explicit tf.cond inside: nothing for AutoGraph to
  # convert (it cannot parse a lambda and would warn on every run).
  @tf.autograph.experimental.do_not_convert
  def one(ex):
    return {"image": decode_file(ex["path"], size), "label": ex["label"]}

  return ds.map(one, num_parallel_calls=tf.data.AUTOTUNE)


def decode_file(path: tf.Tensor, size: int) -> tf.Tensor:
  """Reads and decodes one image file to uint8 (size, size, 3)."""
  image = tf.io.decode_image(
    tf.io.read_file(path), channels=0, expand_animations=False
  )
  return to_fixed_size(image, size)
