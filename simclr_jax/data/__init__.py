"""Input pipelines: built-in, tfds and image-folder sources, host-side only.

The host decodes images and brings them to a fixed size (uint8, S x S x 3);
all random augmentation happens later on the accelerator.
"""

from simclr_jax.data.builtin import CLASS_NAMES as BUILTIN_CLASS_NAMES
from simclr_jax.data.pipeline import eval_batches
from simclr_jax.data.pipeline import local_batch_size
from simclr_jax.data.pipeline import prefetch_to_device
from simclr_jax.data.pipeline import shard_batches
from simclr_jax.data.pipeline import to_global
from simclr_jax.data.pipeline import train_batches
from simclr_jax.data.sources import DataConfig
from simclr_jax.data.sources import dataset_info
from simclr_jax.data.sources import DatasetInfo

__all__ = [
  "BUILTIN_CLASS_NAMES",
  "DataConfig",
  "DatasetInfo",
  "dataset_info",
  "eval_batches",
  "local_batch_size",
  "prefetch_to_device",
  "shard_batches",
  "to_global",
  "train_batches",
]
