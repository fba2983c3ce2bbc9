"""Converters from `ConfigDict` sections to the typed objects of the layers
that own them (`DataConfig`, `AugmentConfig`), and the model signature."""

from __future__ import annotations

from typing import Any

import ml_collections

from simclr_jax import augment
from simclr_jax import data as data_lib
from simclr_jax.augment import views
from simclr_jax.errors import UserError


def data_config(config: ml_collections.ConfigDict) -> data_lib.DataConfig:
  """The typed data section (`data.DataConfig`)."""
  return data_lib.DataConfig(**config.data.to_dict())


def augment_config(config: ml_collections.ConfigDict) -> augment.AugmentConfig:
  """The on-device augmentation settings; output size = data.image_size."""
  fields = config.augment.to_dict()
  fields.pop("asymmetric")
  try:
    return augment.AugmentConfig(image_size=config.data.image_size, **fields)
  except augment.AugmentConfigError as e:
    detail = str(e).removeprefix("AugmentConfig: ")
    raise UserError(
      f"config.augment.{detail}; fix the value in the config "
      "or its --config.augment override."
    ) from None


def view_configs(
  config: ml_collections.ConfigDict,
) -> tuple[augment.AugmentConfig, augment.AugmentConfig]:
  """Augmentation settings of the two views (equal unless asymmetric)."""
  return views.view_configs(augment_config(config), config.augment.asymmetric)


def signature(model: Any, image_size: int) -> dict[str, Any]:
  """The architecture keys a checkpoint must match (`model` is a
  ModelConfig or a `config.model` section)."""
  keys = (
    "depth",
    "width_multiplier",
    "sk_ratio",
    "se_ratio",
    "cifar_stem",
    "proj_head_layers",
    "proj_out_dim",
  )
  return {**{k: getattr(model, k) for k in keys}, "image_size": image_size}


def model_signature(config: ml_collections.ConfigDict) -> dict:
  """What must match for a checkpoint to be restorable into this config."""
  return signature(config.model, config.data.image_size)
