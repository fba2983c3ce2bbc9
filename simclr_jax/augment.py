"""SimCLR image augmentations as pure JAX functions of (key, images).

Everything random here runs on the accelerator inside the jitted train step:
one independent PRNG key per example (`simclr_augment` splits the key and
vmaps `augment_image`), fixed output shapes, and no Python control flow on
traced values. Which ops run is decided by an `AugmentConfig` (static data);
whether an op fires for a given image is a traced coin flip (`jnp.where`).
Behaviour follows docs/fidelity.md section 5 and the SimCLR reference
(google-research/simclr, `data_util.py`). Crop boxes and their resizing live
in `simclr_jax.crops`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Callable

import dm_pix as pix
import jax
import jax.numpy as jnp

from simclr_jax import crops
from simclr_jax.crops import sample_crop_box  # noqa: F401  (public here)
from simclr_jax.errors import UserError

_SAMPLERS = ("reference", "torchvision")
_BRIGHTNESS_MODES = ("multiplicative", "additive")
_BLUR_SIGMA_MODES = ("per_image", "per_batch")
# Contrast/saturation lower bound 1 - 0.8 s must stay >= 0 (TF refuses less).
_MAX_JITTER_STRENGTH = 1.25
_BLUR_SIGMA = (0.1, 2.0)
# The reference centre-crops eval images only when the model input is larger
# than this (`test_crop = FLAGS.image_size > 32`).
_EVAL_NO_CROP_MAX_SIZE = 32
# Per-example keys are `fold_in(key, i)`, equal to `split(key, n)[i]`; the key
# of a whole batch is the one of an index no batch reaches.
_BATCH_INDEX = 2**32 - 1


class AugmentConfigError(UserError, ValueError):
  """A bad augmentation setting; both a `ValueError` and a `UserError`."""


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """What one augmented view does; static (hashable) data, not code."""

  image_size: int
  crop: bool = True
  crop_area: tuple[float, float] = (0.08, 1.0)
  crop_aspect: tuple[float, float] = (3 / 4, 4 / 3)
  crop_sampler: str = "reference"
  flip: bool = True
  color_jitter_strength: float = 1.0
  color_jitter_prob: float = 0.8
  brightness: str = "multiplicative"
  grayscale_prob: float = 0.2
  blur_prob: float = 0.5
  # "per_image": a sigma per blurred image (ours); "per_batch": one per view
  # and batch, shared by its blurred images (like the reference).
  blur_sigma: str = "per_image"
  solarize_prob: float = 0.0

  def __post_init__(self):
    def fail(message):
      raise AugmentConfigError(f"AugmentConfig: {message}")

    size = self.image_size
    if (
      isinstance(size, bool)
      or not isinstance(size, numbers.Integral)
      or size < 1
    ):
      fail(f"image_size must be a positive int, got {size!r}")
    object.__setattr__(self, "image_size", int(size))
    for name in ("crop", "flip"):
      if not isinstance(getattr(self, name), bool):
        fail(f"{name} must be True or False, got {getattr(self, name)!r}")
    for name, top in (("crop_area", 1.0), ("crop_aspect", math.inf)):
      value = getattr(self, name)
      try:
        lo, hi = (float(v) for v in value)
      except (TypeError, ValueError):
        fail(f"{name} must be a pair (low, high) of numbers, got {value!r}")
      if not 0.0 < lo <= hi <= top or math.isinf(hi):
        fail(
          f"{name} must satisfy 0 < low <= high"
          f"{' <= 1' if top == 1.0 else ''}, got {(lo, hi)}"
        )
      object.__setattr__(self, name, (lo, hi))
    for name, choices in (
      ("crop_sampler", _SAMPLERS),
      ("brightness", _BRIGHTNESS_MODES),
      ("blur_sigma", _BLUR_SIGMA_MODES),
    ):
      if getattr(self, name) not in choices:
        fail(f"{name} must be one of {choices}, got {getattr(self, name)!r}")
    if (
      self.crop_sampler == "reference"
      and self.crop_area[1] < crops.MIN_OBJECT_COVERED
    ):
      fail(
        f"the reference crop sampler rejects boxes covering less than "
        f"{crops.MIN_OBJECT_COVERED:.0%} of the image, so crop_area high "
        f"must be >= {crops.MIN_OBJECT_COVERED}, got {self.crop_area[1]}"
      )
    for name in (
      "color_jitter_strength",
      "color_jitter_prob",
      "grayscale_prob",
      "blur_prob",
      "solarize_prob",
    ):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, numbers.Real):
        fail(f"{name} must be a number, got {value!r}")
      object.__setattr__(self, name, float(value))
      high = _MAX_JITTER_STRENGTH if name == "color_jitter_strength" else 1.0
      if not 0.0 <= value <= high:
        what = (
          "the jitter strength s (contrast/saturation factors start at "
          "1 - 0.8 s, which must not be negative)"
          if name == "color_jitter_strength"
          else "a probability"
        )
        fail(f"{name} is {what} and must be in [0, {high}], got {value}")


def _preset(**fields) -> Callable[[int], AugmentConfig]:
  return lambda image_size: AugmentConfig(image_size=image_size, **fields)


PRESETS: dict[str, Callable[[int], AugmentConfig]] = {
  # SimCLR v2 ImageNet pretraining.
  "simclr": _preset(),
  # CIFAR pretraining: weaker colour jitter, no blur.
  "simclr_cifar": _preset(color_jitter_strength=0.5, blur_prob=0.0),
  # SimCLR v1: additive brightness.
  "simclr_v1": _preset(brightness="additive"),
  # Linear evaluation / fine-tuning training: random crop and flip only.
  "crop_flip": _preset(
    color_jitter_strength=0.0,
    color_jitter_prob=0.0,
    grayscale_prob=0.0,
    blur_prob=0.0,
  ),
  # No augmentation at all: resize to image_size only.
  "none": _preset(
    crop=False,
    flip=False,
    color_jitter_strength=0.0,
    color_jitter_prob=0.0,
    grayscale_prob=0.0,
    blur_prob=0.0,
  ),
}


def make_augment_config(
  preset: str, image_size: int, **overrides
) -> AugmentConfig:
  """Builds the named preset for `image_size`, then applies field overrides."""
  if preset not in PRESETS:
    raise AugmentConfigError(
      f"unknown augmentation preset {preset!r}; valid presets: "
      f"{', '.join(sorted(PRESETS))}"
    )
  config = PRESETS[preset](image_size)
  fields = {f.name for f in dataclasses.fields(AugmentConfig)}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise AugmentConfigError(
      f"unknown AugmentConfig field(s) {unknown}; valid fields: "
      f"{', '.join(sorted(fields))}"
    )
  return dataclasses.replace(config, **overrides)


def blur_kernel_size(image_size: int) -> int:
  """Blur kernel side: `image_size // 10` made odd (23 at 224, 3 at 32)."""
  return 2 * (image_size // 10 // 2) + 1


def _to_float(images: jnp.ndarray) -> jnp.ndarray:
  """uint8 (or any int) 0..255 -> float32 [0, 1]; floats are taken as [0, 1]."""
  images = jnp.asarray(images)
  if jnp.issubdtype(images.dtype, jnp.integer):
    return images.astype(jnp.float32) / 255.0
  return images.astype(jnp.float32)


def _jitter_bounds(
  strength: float, brightness: str
) -> tuple[list[float], list[float]]:
  """(low, high) of the brightness, contrast, saturation and hue parameters."""
  s, h = 0.8 * strength, 0.2 * strength
  if brightness == "multiplicative":
    b_lo, b_hi = max(0.0, 1.0 - s), 1.0 + s
  else:
    b_lo, b_hi = -s, s
  return [b_lo, 1.0 - s, 1.0 - s, -h], [b_hi, 1.0 + s, 1.0 + s, h]


def _sample_color_jitter(
  key: jax.Array, strength: float, brightness: str
) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Random op order (a permutation of 0..3) and the 4 op parameters."""
  k_order, k_params = jax.random.split(key)
  order = jax.random.permutation(k_order, 4)
  lo, hi = _jitter_bounds(strength, brightness)
  params = jax.random.uniform(
    k_params, (4,), minval=jnp.array(lo), maxval=jnp.array(hi)
  )
  return order, params


def _color_jitter(
  image: jnp.ndarray, order: jnp.ndarray, params: jnp.ndarray, brightness: str
) -> jnp.ndarray:
  """Brightness, contrast, saturation, hue in `order`, clipping after each.

  Step i applies op `order[i]`. Under vmap a `lax.switch` on a per-example
  index evaluates every branch, i.e. two HSV round trips per step; here the
  saturation and hue branches share one round trip (the unused one gets its
  identity parameter) and a select picks the op. Same results, about half
  the cost. Saturation and hue match `pix.adjust_saturation`/`adjust_hue`.
  """
  for i in range(4):
    op = order[i]
    if brightness == "multiplicative":
      bright = image * params[0]
    else:
      bright = pix.adjust_brightness(image, params[0])
    contrast = pix.adjust_contrast(image, params[1])
    hue, sat, value = jnp.moveaxis(pix.rgb_to_hsv(image), -1, 0)
    sat = jnp.clip(sat * jnp.where(op == 2, params[2], 1.0), 0.0, 1.0)
    hue = (hue + jnp.where(op == 3, params[3], 0.0)) % 1.0
    colour = pix.hsv_to_rgb(jnp.stack([hue, sat, value], axis=-1))
    image = jnp.select([op == 0, op == 1], [bright, contrast], colour)
    image = jnp.clip(image, 0.0, 1.0)
  return image


def _gaussian_blur(
  image: jnp.ndarray, sigma: jnp.ndarray, kernel_size: int
) -> jnp.ndarray:
  """Separable Gaussian blur of an HWC image with zero ('SAME') padding.

  Shifted weighted sums instead of a convolution: the per-example traced sigma
  vmaps into cheap fused elementwise work.
  """
  radius = kernel_size // 2
  taps = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  kernel = jnp.exp(-(taps**2) / (2.0 * sigma**2))
  kernel = kernel / jnp.sum(kernel)

  def blur_axis(x, axis):
    pad = [(0, 0)] * x.ndim
    pad[axis] = (radius, radius)
    padded = jnp.pad(x, pad)
    length = x.shape[axis]
    return sum(
      kernel[t] * jax.lax.slice_in_dim(padded, t, t + length, axis=axis)
      for t in range(2 * radius + 1)
    )

  return blur_axis(blur_axis(image, 1), 0)


def sample_blur_sigma(key: jax.Array) -> jnp.ndarray:
  """One blur sigma, uniform in [0.1, 2.0] (the reference's range)."""
  return jax.random.uniform(
    key, (), minval=_BLUR_SIGMA[0], maxval=_BLUR_SIGMA[1]
  )


def batch_key(key: jax.Array) -> jax.Array:
  """The key of a whole batch whose example i uses `fold_in(key, i)`.

  Example keys (`split(key, n)[i]` is `fold_in(key, i)`) never reach index
  2**32 - 1, so this key is distinct from every example's.
  """
  return jax.random.fold_in(key, _BATCH_INDEX)


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
    box = sample_crop_box(k_crop, height, width, config=config)
    image = crops.resize_box(image, box, size)
  elif (height, width) != (size, size):
    image = crops.resize_box(
      image, jnp.array([0, 0, height, width], jnp.float32), size
    )
  if config.flip:
    image = jnp.where(coins[0] < 0.5, pix.flip_left_right(image), image)
  if config.color_jitter_strength > 0 and config.color_jitter_prob > 0:
    order, params = _sample_color_jitter(
      k_jitter, config.color_jitter_strength, config.brightness
    )
    jittered = _color_jitter(image, order, params, config.brightness)
    image = jnp.where(coins[1] < config.color_jitter_prob, jittered, image)
  if config.grayscale_prob > 0:
    gray = pix.rgb_to_grayscale(image, keep_dims=True)
    image = jnp.where(coins[2] < config.grayscale_prob, gray, image)
  image = jnp.clip(image, 0.0, 1.0)
  if config.blur_prob > 0:
    sigma = (
      jnp.asarray(batch_sigma, jnp.float32)
      if per_batch
      else sample_blur_sigma(k_blur)
    )
    blurred = _gaussian_blur(image, sigma, blur_kernel_size(size))
    image = jnp.where(coins[3] < config.blur_prob, blurred, image)
  if config.solarize_prob > 0:
    image = jnp.where(
      coins[4] < config.solarize_prob, pix.solarize(image, 0.5), image
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
  # the images; with automatic sharding the spec is None and this is a no-op.
  sharding = jax.typeof(images).sharding
  if len(sharding.spec) and sharding.spec[0] is not None:
    keys = jax.sharding.reshard(
      keys,
      jax.sharding.NamedSharding(
        sharding.mesh, jax.sharding.PartitionSpec(sharding.spec[0])
      ),
    )
  sigma = None
  if config.blur_prob > 0 and config.blur_sigma == "per_batch":
    sigma = sample_blur_sigma(batch_key(key))
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
  if image_size > _EVAL_NO_CROP_MAX_SIZE:
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
