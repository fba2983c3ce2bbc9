"""The data configuration and dataset summary: plain dataclasses.

Importing this module needs no TensorFlow, so `defaults.base_config()`, which
builds `config.data` from `DataConfig()`, and the config files stay light.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where the images come from and the size the host brings them to.

  The defaults are those of `defaults.base_config().data` (which is built
  from this class): ImageNet from tfds at 224 px, not cached.
  """

  source: str = "tfds"  # "builtin" | "tfds" | "folder"
  name: str = "imagenet2012"  # tfds dataset name, e.g. "cifar10"
  data_dir: str = ""  # tfds data_dir, or the image-folder root
  train_split: str = "train"  # tfds split, or sub-folder name for folders
  eval_split: str = "validation"  # "" disables held-out evaluation
  image_size: int = 224  # model input size: the side of every view
  # Side of the square the host brings images to (shorter side resized,
  # centre crop); the random and eval crops read from it and resize to
  # image_size. 0: image_size.
  host_size: int = 0
  builtin_train_examples: int = 10000  # size of the builtin 'train' split
  builtin_eval_examples: int = 2000  # size of the builtin 'test' split
  builtin_seed: int = 0  # seed of the builtin dataset's generator
  shuffle_buffer: int = 10000  # examples in all (<= 1: no shuffling)
  cache: bool = False  # keep decoded images in host memory
  # Data order = S reader shards (pipeline.train_batches; 0: one per
  # process); a fixed S keeps the order across process and device counts.
  num_shards: int = 0
  # Image folders: before training, a fixed sample of each split (all of it
  # up to 256 files) is decoded, and a split with more than this fraction
  # unreadable is refused; training skips (and counts) unreadable files.
  max_unreadable_fraction: float = 0.01

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
