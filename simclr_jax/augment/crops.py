"""Crop boxes for the augmentations: random resized crops and the eval crop.

The random samplers draw every attempt at once with fixed shapes, so they run
inside `jit`/`vmap` on the accelerator; `resize_box` resamples a traced box
straight out of the image. `center_crop_box` is the reference's static
evaluation crop. Used by `simclr_jax.augment.pipeline`; `sample_crop_box` is
re-exported as `simclr_jax.augment.sample_crop_box`.
"""

from __future__ import annotations

import math
import jax
import jax.numpy as jnp
import numpy as np

from simclr_jax.augment.config import MIN_OBJECT_COVERED, AugmentConfig

REFERENCE_ATTEMPTS = 100
TORCHVISION_ATTEMPTS = 10


def _randint_below(key: jax.Array, n: jnp.ndarray) -> jnp.ndarray:
  """Uniform integer in [0, n) for traced n >= 1 (0 when n <= 0), as float."""
  u = jax.random.uniform(key, jnp.shape(n))
  return jnp.clip(jnp.floor(u * n), 0.0, jnp.maximum(n - 1.0, 0.0))


def _reference_box(
  key: jax.Array, height: int, width: int, config: AugmentConfig
) -> jnp.ndarray:
  """TF `sample_distorted_bounding_box` as SimCLR uses it, all attempts at once.

  Aspect ratio is uniform; for each attempt the integer height is uniform
  between the heights that give the min and max area (so the area is not
  uniform), with TF's rounding repairs. Boxes covering < 10% of the image are
  rejected; the first valid attempt wins, else the whole image.
  """
  k_aspect, k_height, k_y, k_x = jax.random.split(key, 4)
  n = REFERENCE_ATTEMPTS
  img_h, img_w = float(height), float(width)
  min_area = jnp.float32(config.crop_area[0] * img_h * img_w)
  max_area = jnp.float32(config.crop_area[1] * img_h * img_w)
  aspect = jax.random.uniform(
    k_aspect, (n,), minval=config.crop_aspect[0], maxval=config.crop_aspect[1]
  )
  h_lo = jnp.rint(jnp.sqrt(min_area / aspect))
  h_hi = jnp.rint(jnp.sqrt(max_area / aspect))
  # Largest height whose rounded width still fits (TF's float repair).
  h_fit = jnp.floor((img_w + 0.5 - 1e-7) / aspect)
  h_fit = jnp.where(jnp.rint(h_fit * aspect) > img_w, h_fit - 1, h_fit)
  h_hi = jnp.where(jnp.rint(h_hi * aspect) > img_w, h_fit, h_hi)
  h_hi = jnp.minimum(h_hi, img_h)
  h_lo = jnp.minimum(h_lo, h_hi)
  h = h_lo + _randint_below(k_height, h_hi - h_lo + 1)
  w = jnp.rint(h * aspect)
  too_small = w * h < min_area
  h = jnp.where(too_small, h + 1, h)
  w = jnp.rint(h * aspect)
  too_big = w * h > max_area
  h = jnp.where(too_big, h - 1, h)
  w = jnp.rint(h * aspect)
  area = w * h
  valid = (
    (area >= min_area)
    & (area <= max_area)
    & (w <= img_w)
    & (h <= img_h)
    & (w > 0)
    & (h > 0)
    & (area / (img_h * img_w) >= MIN_OBJECT_COVERED)
  )
  first = jnp.argmax(valid)
  found = valid[first]
  h = jnp.where(found, h[first], img_h)
  w = jnp.where(found, w[first], img_w)
  # TF draws offsets with Uniform(img - size), i.e. in [0, img - size - 1].
  y = _randint_below(k_y, img_h - h)
  x = _randint_below(k_x, img_w - w)
  return jnp.stack([y, x, h, w])


def _torchvision_box(
  key: jax.Array, height: int, width: int, config: AugmentConfig
) -> jnp.ndarray:
  """torchvision `RandomResizedCrop.get_params`, all attempts at once.

  Area uniform, aspect log-uniform, 10 attempts; on failure a centre crop
  with the image aspect clamped into range.
  """
  k_area, k_aspect, k_y, k_x = jax.random.split(key, 4)
  n = TORCHVISION_ATTEMPTS
  img_h, img_w = float(height), float(width)
  lo, hi = config.crop_aspect
  target = (
    img_h
    * img_w
    * jax.random.uniform(
      k_area, (n,), minval=config.crop_area[0], maxval=config.crop_area[1]
    )
  )
  aspect = jnp.exp(
    jax.random.uniform(k_aspect, (n,), minval=math.log(lo), maxval=math.log(hi))
  )
  w = jnp.round(jnp.sqrt(target * aspect))
  h = jnp.round(jnp.sqrt(target / aspect))
  valid = (w > 0) & (w <= img_w) & (h > 0) & (h <= img_h)
  first = jnp.argmax(valid)
  found = valid[first]
  h, w = h[first], w[first]
  y = _randint_below(k_y, img_h - h + 1)
  x = _randint_below(k_x, img_w - w + 1)
  # Static fallback: centre crop with the image aspect clamped into range.
  ratio = width / height
  if ratio < lo:
    fb_w, fb_h = width, round(width / lo)
  elif ratio > hi:
    fb_w, fb_h = round(height * hi), height
  else:
    fb_w, fb_h = width, height
  fallback = jnp.array(
    [(height - fb_h) // 2, (width - fb_w) // 2, fb_h, fb_w], jnp.float32
  )
  return jnp.where(found, jnp.stack([y, x, h, w]), fallback)


def sample_crop_box(
  key: jax.Array, height: int, width: int, *, config: AugmentConfig
) -> jnp.ndarray:
  """Random crop box (y, x, h, w) in pixels, float32 holding integers."""
  sampler = (
    _reference_box if config.crop_sampler == "reference" else _torchvision_box
  )
  return sampler(key, height, width, config)


def resize_box(image: jnp.ndarray, box: jnp.ndarray, size: int) -> jnp.ndarray:
  """Bicubic resample of the box (y, x, h, w) of an HWC image to size x size.

  `scale_and_translate` lets the box be a traced value. No antialiasing, like
  TF's `tf.image.resize(..., BICUBIC)` that SimCLR uses, and no clipping:
  the reference hands the bicubic overshoot on to the colour ops.
  """
  y, x, h, w = box[0], box[1], box[2], box[3]
  scale = jnp.stack([size / h, size / w])
  translation = -jnp.stack([y, x]) * scale
  return jax.image.scale_and_translate(
    image,
    (size, size, image.shape[-1]),
    (0, 1),
    scale,
    translation,
    method="cubic",
    antialias=False,
  )


def center_crop_box(
  height: int, width: int, crop_fraction: float
) -> tuple[int, int, int]:
  """(top, left, side) of the reference's eval crop for a square output.

  As SimCLR's `center_crop`: side = rint(fraction * shorter side) in float32
  (ties to even), offsets `(image - side + 1) // 2`.
  """
  side = int(
    np.rint(np.float32(crop_fraction) * np.float32(min(height, width)))
  )
  side = max(side, 1)
  return (height - side + 1) // 2, (width - side + 1) // 2, side
