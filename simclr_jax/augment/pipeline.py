"""The entry points: one view of an image or a batch, and the eval view.

`augment_image` runs the ops of `crops` and `color` in the reference's
order, each on its own sub-key and behind its own traced coin flip;
`simclr_augment` vmaps it over a batch with one key per example;
`preprocess_eval` is the deterministic evaluation view.
"""

from __future__ import annotations

import numbers

import dm_pix as pix
import jax
import jax.numpy as jnp

from simclr_jax import sharding
from simclr_jax.augment import color
from simclr_jax.augment import crops
from simclr_jax.augment.config import (
  BATCH_INDEX,
  EVAL_NO_CROP_MAX_SIZE,
  AugmentConfig,
  AugmentConfigError,
)


def _to_float(images: jnp.ndarray) -> jnp.ndarray:
  """uint8 (or any int) 0..255 -> float32 [0, 1]; floats are taken as [0, 1]."""
  images = jnp.asarray(images)
  if jnp.issubdtype(images.dtype, jnp.integer):
    return images.astype(jnp.float32) / 255.0
  return images.astype(jnp.float32)


def batch_key(key: jax.Array) -> jax.Array:
  """The key of a whole batch whose example i uses `fold_in(key, i)`.

  Example keys (`split(key, n)[i]` is `fold_in(key, i)`) never reach index
  2**32 - 1, so this key is distinct from every example's.
  """
  return jax.random.fold_in(key, BATCH_INDEX)


def augment_image(
  key: jax.Array,
  image: jnp.ndarray,
  *,
  config: AugmentConfig,
  batch_sigma: jnp.ndarray | None = None,
) -> jnp.ndarray:
  """One random view of one HWC image (uint8 or float [0,1]) -> float32 [0,1].

  Order: crop, flip, colour jitter, grayscale, blur, solarize. Each op has its
  own sub-key, so switching one op off leaves the others' randomness as is.
  `batch_sigma` is the batch's sigma, given exactly when blur is on and
  `config.blur_sigma == "per_batch"` (`simclr_augment` and
  `views.two_views` draw it); per image, sigma comes from `key`. The crop's
  bicubic overshoot is not clipped before the colour ops, as in the
  reference; the image is clipped before the blur (the reference's end of
  per-image work) and at the end.
  """
  image = _to_float(image)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(
      f"augment_image expects an (H, W, 3) image, got shape {image.shape}"
    )
  per_batch = config.blur_prob > 0 and config.blur_sigma == "per_batch"
  if config.blur_prob > 0 and per_batch != (batch_sigma is not None):
    raise ValueError(
      f"blur_sigma={config.blur_sigma!r}: augment_image takes batch_sigma "
      f"exactly in 'per_batch' mode (simclr_augment and views.two_views "
      f"draw it), got batch_sigma={batch_sigma!r}"
    )
  height, width = image.shape[:2]
  size = config.image_size
  k_crop, k_coins, k_jitter, k_blur = jax.random.split(key, 4)
  # Coins for flip, jitter, grayscale, blur, solarize.
  coins = jax.random.uniform(k_coins, (5,))

  if config.crop:
    box = crops.sample_crop_box(k_crop, height, width, config=config)
    image = crops.resize_box(image, box, size)
  elif (height, width) != (size, size):
    image = crops.resize_box(
      image, jnp.array([0, 0, height, width], jnp.float32), size
    )
  if config.flip:
    image = jnp.where(coins[0] < 0.5, pix.flip_left_right(image), image)
  if config.color_jitter_strength > 0 and config.color_jitter_prob > 0:
    order, params = color._sample_color_jitter(
      k_jitter, config.color_jitter_strength, config.brightness
    )
    jittered = color._color_jitter(image, order, params, config.brightness)
    image = jnp.where(coins[1] < config.color_jitter_prob, jittered, image)
  if config.grayscale_prob > 0:
    gray = color._grayscale(image)
    image = jnp.where(coins[2] < config.grayscale_prob, gray, image)
  image = jnp.clip(image, 0.0, 1.0)
  if config.blur_prob > 0:
    sigma = (
      jnp.asarray(batch_sigma, jnp.float32)
      if per_batch
      else color.sample_blur_sigma(k_blur)
    )
    blurred = color._gaussian_blur(image, sigma, color.blur_kernel_size(size))
    image = jnp.where(coins[3] < config.blur_prob, blurred, image)
  if config.solarize_prob > 0:
    image = jnp.where(
      coins[4] < config.solarize_prob, color._solarize(image), image
    )
  return jnp.clip(image, 0.0, 1.0)


def simclr_augment(
  key: jax.Array, images: jnp.ndarray, *, config: AugmentConfig
) -> jnp.ndarray:
  """One view of a (B, H, W, 3) batch; image i uses key i of split(key, B).

  With `blur_sigma="per_batch"` the whole batch shares one sigma drawn from
  `batch_key(key)`.
  """
  images = jnp.asarray(images)
  if images.ndim != 4:
    raise ValueError(
      f"simclr_augment expects (B, H, W, 3) images, got shape {images.shape}"
    )
  keys = jax.random.split(key, images.shape[0])
  # Under an explicit-sharding mesh vmap needs the keys batch-sharded like
  # the images; with automatic sharding this is a no-op.
  keys = sharding.like_batch(keys, images)
  sigma = None
  if config.blur_prob > 0 and config.blur_sigma == "per_batch":
    sigma = color.sample_blur_sigma(batch_key(key))
  return jax.vmap(
    lambda k, x: augment_image(k, x, config=config, batch_sigma=sigma)
  )(keys, images)


def preprocess_eval(
  images: jnp.ndarray, *, image_size: int, crop_fraction: float = 0.875
) -> jnp.ndarray:
  """Deterministic eval view: centre crop then bicubic resize, float32 [0,1].

  As the reference, the decision follows the output size: for `image_size`
  > 32 a centre square keeping `crop_fraction` of the shorter side (SimCLR's
  87.5%, rounded as its `center_crop`) is resized to `image_size`; for
  `image_size` <= 32 (CIFAR) nothing is cropped, and the image is only
  resized if it is not already `image_size` square (where the reference
  would fail). Works on (..., H, W, 3).
  """
  if not 0.0 < crop_fraction <= 1.0:
    raise AugmentConfigError(
      f"crop_fraction must be in (0, 1], got {crop_fraction}"
    )
  if (
    isinstance(image_size, bool)
    or not isinstance(image_size, numbers.Integral)
    or image_size < 1
  ):
    raise AugmentConfigError(
      f"image_size must be a positive int, got {image_size!r}"
    )
  images = _to_float(images)
  if images.ndim < 3:
    raise ValueError(
      f"preprocess_eval expects (..., H, W, C) images, got shape {images.shape}"
    )
  height, width = images.shape[-3:-1]
  if image_size > EVAL_NO_CROP_MAX_SIZE:
    top, left, side = crops.center_crop_box(height, width, crop_fraction)
    images = images[..., top : top + side, left : left + side, :]
  height, width = images.shape[-3:-1]
  if (height, width) != (image_size, image_size):
    # The crop alone is resized, as TF's `tf.image.resize` of the crop.
    ndim = images.ndim
    shape = images.shape[:-3] + (image_size, image_size, images.shape[-1])
    images = jax.image.scale_and_translate(
      images,
      shape,
      (ndim - 3, ndim - 2),
      jnp.array([image_size / height, image_size / width], jnp.float32),
      jnp.zeros((2,), jnp.float32),
      method="cubic",
      antialias=False,
    )
  return jnp.clip(images, 0.0, 1.0)
