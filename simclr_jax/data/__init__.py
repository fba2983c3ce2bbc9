"""Input pipelines: built-in, tfds and image-folder sources, host-side only.

The host decodes images and brings them to a fixed size (uint8, S x S x 3);
all random augmentation happens later on the accelerator.

The names below load their modules on first use, so that importing a light
part of the package (`data.config`, which `defaults.py` builds the config
from) does not import TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> (module, attribute) it is re-exported from.
_EXPORTS = {
  "BUILTIN_CLASS_NAMES": ("simclr_jax.data.builtin", "CLASS_NAMES"),
  "DataConfig": ("simclr_jax.data.config", "DataConfig"),
  "DatasetInfo": ("simclr_jax.data.config", "DatasetInfo"),
  "dataset_info": ("simclr_jax.data.sources", "dataset_info"),
  "eval_batches": ("simclr_jax.data.pipeline", "eval_batches"),
  "local_batch_size": ("simclr_jax.data.pipeline", "local_batch_size"),
  "prefetch_to_device": ("simclr_jax.data.prefetch", "prefetch_to_device"),
  "shard_batches": ("simclr_jax.data.pipeline", "shard_batches"),
  "to_global": ("simclr_jax.sharding", "to_global"),
  "train_batches": ("simclr_jax.data.pipeline", "train_batches"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
  if name not in _EXPORTS:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  module, attribute = _EXPORTS[name]
  value = getattr(importlib.import_module(module), attribute)
  globals()[name] = value
  return value


def __dir__() -> list[str]:
  return sorted(set(globals()) | set(_EXPORTS))
