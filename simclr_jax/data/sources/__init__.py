"""Data sources (builtin, tfds, image folder) as per-process tf.data pipelines.

A source gives one process's shard of one split as unbatched examples
`{'image': uint8 (S, S, 3), 'label': int32}` (label -1 if unlabelled) in a
fixed order, with S = `DataConfig.host_image_size`. The host only decodes and
resizes (shorter side to S, then centre crop); all random augmentation, and the
crops that read from these S x S squares, run later on the accelerator.

Every source implements `base.Source` and is registered by name; this module
dispatches on `DataConfig.source` through that registry. A corrupt image file
(folder source) is dropped inside tf.data; training fills and counts its place
(see `pipeline.py`), and `dataset_info` refuses a folder that is mostly
unreadable with a `UserError` naming bad files (see `readable.py`).
"""

from __future__ import annotations

import tensorflow as tf

from simclr_jax.data.sources import base
from simclr_jax.data.sources import builtin as builtin_source
from simclr_jax.data.sources import folder as folder_source
from simclr_jax.data.sources import tfds as tfds_source
from simclr_jax.data.sources.base import check_config
from simclr_jax.data.sources.base import contiguous
from simclr_jax.data.sources.base import DataConfig
from simclr_jax.data.sources.base import DatasetInfo
from simclr_jax.data.sources.base import get
from simclr_jax.data.sources.base import register
from simclr_jax.data.sources.base import Shard
from simclr_jax.data.sources.base import Source
from simclr_jax.data.sources.images import decode_file
from simclr_jax.data.sources.images import decode_paths
from simclr_jax.data.sources.images import IMAGE_EXTENSIONS
from simclr_jax.data.sources.images import to_fixed_size
from simclr_jax.errors import UserError

# Registration order is the order error messages list the sources in.
register(builtin_source.BuiltinSource())
register(tfds_source.TfdsSource())
register(folder_source.FolderSource())
SOURCES = base.names()

__all__ = [
  "IMAGE_EXTENSIONS",
  "SOURCES",
  "DataConfig",
  "DatasetInfo",
  "Shard",
  "Source",
  "check_config",
  "contiguous",
  "dataset_info",
  "decode_file",
  "decode_paths",
  "get",
  "hide_tf_from_accelerators",
  "load_shard",
  "register",
  "to_fixed_size",
]


def hide_tf_from_accelerators() -> None:
  """tf.data only runs on the host; keep TF off the GPUs/TPUs JAX owns."""
  for kind in ("GPU", "TPU"):
    try:
      tf.config.set_visible_devices([], kind)
    except (ValueError, RuntimeError):
      pass


def dataset_info(cfg: DataConfig) -> DatasetInfo:
  """Returns sizes and class names; validates the source (raises UserError)."""
  return check_config(cfg).info(cfg)


def load_shard(
  cfg: DataConfig, split: str, *, process_index: int = 0, process_count: int = 1
) -> Shard:
  """Builds the decoded, resized, optionally cached examples of one shard."""
  source = check_config(cfg)
  if not 0 <= process_index < process_count:
    raise UserError(
      f"process_index {process_index} is not in "
      f"[0, {process_count}); pass jax.process_index() and "
      "jax.process_count()"
    )
  shard = source.shard(cfg, split, process_index, process_count)
  return source.cached(cfg, shard)
