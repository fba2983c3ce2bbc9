"""The per-pixel ops of a view: colour jitter, grayscale, blur, solarize.

Pure JAX functions of one HWC float image in [0, 1] (and, for the random
ones, their sampled parameters), so `pipeline.augment_image` can vmap them
with a traced parameter per example and pick the result with a coin flip.
"""

from __future__ import annotations

import dm_pix as pix
import jax
import jax.numpy as jnp

from simclr_jax.augment.config import BLUR_SIGMA_RANGE


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


def _grayscale(image: jnp.ndarray) -> jnp.ndarray:
  """Luma grayscale, kept 3-channel."""
  return pix.rgb_to_grayscale(image, keep_dims=True)


def blur_kernel_size(image_size: int) -> int:
  """Blur kernel side: `image_size // 10` made odd (23 at 224, 3 at 32)."""
  return 2 * (image_size // 10 // 2) + 1


def sample_blur_sigma(key: jax.Array) -> jnp.ndarray:
  """One blur sigma, uniform in [0.1, 2.0] (the reference's range)."""
  return jax.random.uniform(
    key, (), minval=BLUR_SIGMA_RANGE[0], maxval=BLUR_SIGMA_RANGE[1]
  )


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


def _solarize(image: jnp.ndarray) -> jnp.ndarray:
  """Inverts the pixels at or above the threshold 0.5."""
  return pix.solarize(image, 0.5)
