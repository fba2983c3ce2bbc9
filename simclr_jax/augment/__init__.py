"""SimCLR image augmentations as pure JAX functions of (key, images).

Everything random here runs on the accelerator inside the jitted train step:
one independent PRNG key per example (`simclr_augment` splits the key and
vmaps `augment_image`), fixed output shapes, and no Python control flow on
traced values. Which ops run is decided by an `AugmentConfig` (static data);
whether an op fires for a given image is a traced coin flip (`jnp.where`).
Behaviour follows docs/fidelity.md section 5 and the SimCLR reference
(google-research/simclr, `data_util.py`).

What lives where:

- `config`: `AugmentConfig` and its checks, `AugmentConfigError`, the named
  `PRESETS` and `make_augment_config`, the module constants.
- `crops`: random crop boxes (reference and torchvision samplers), their
  bicubic resize, the eval centre crop.
- `color`: colour jitter, grayscale, Gaussian blur (sigma sampling, kernel
  size), solarize.
- `pipeline`: the entry points `augment_image`, `simclr_augment`,
  `preprocess_eval` and `batch_key`.
- `views`: the two views SimCLR contrasts (`two_views`, `view_configs`,
  `example_keys`, `batch_blur_sigmas`, `ASYMMETRIC_VIEWS`).

The names below are re-exported here, so `augment.X` keeps working.
"""

from simclr_jax.augment.color import blur_kernel_size, sample_blur_sigma
from simclr_jax.augment.config import (
  PRESETS,
  AugmentConfig,
  AugmentConfigError,
  make_augment_config,
)
from simclr_jax.augment.crops import sample_crop_box
from simclr_jax.augment.pipeline import (
  augment_image,
  batch_key,
  preprocess_eval,
  simclr_augment,
)
from simclr_jax.augment import views

__all__ = [
  "PRESETS",
  "AugmentConfig",
  "AugmentConfigError",
  "augment_image",
  "batch_key",
  "blur_kernel_size",
  "make_augment_config",
  "preprocess_eval",
  "sample_blur_sigma",
  "sample_crop_box",
  "simclr_augment",
  "views",
]
