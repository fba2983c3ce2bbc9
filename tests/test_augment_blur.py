"""Gaussian blur (docs/fidelity.md rows 5.9-5.10): kernel size, padding,
probability, the sigma distribution, and per-image vs per-batch sigma."""

import functools

import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simclr_jax import augment
from simclr_jax.augment import color, views

AugmentConfig = augment.AugmentConfig


def test_blur_kernel_size_rule():
  assert augment.blur_kernel_size(224) == 23
  assert augment.blur_kernel_size(32) == 3
  assert augment.blur_kernel_size(96) == 9
  assert augment.blur_kernel_size(64) == 7
  assert augment.blur_kernel_size(16) == 1


def test_blur_support_padding_and_probability(run_augment, augment_off):
  size, n = 64, 128
  k = augment.blur_kernel_size(size)
  r, c = k // 2, size // 2
  images = np.ones((n, size, size, 3), np.float32)  # white: second half
  images[: n // 2] = 0.0
  images[: n // 2, c, c, :] = 1.0  # impulses: first half
  out = run_augment(
    AugmentConfig(size, **dict(augment_off, blur_prob=0.5)), images
  )
  blurred = np.abs(out - images).max(axis=(1, 2, 3)) > 0
  assert 0.4 < blurred.mean() < 0.6
  impulses = out[: n // 2][blurred[: n // 2]]
  rows = np.nonzero(impulses[..., 0].max(axis=(0, 2)) > 0)[0]
  cols = np.nonzero(impulses[..., 0].max(axis=(0, 1)) > 0)[0]
  assert (rows.min(), rows.max()) == (c - r, c + r)  # k x k support
  assert (cols.min(), cols.max()) == (c - r, c + r)
  np.testing.assert_allclose(impulses.sum(axis=(1, 2)), 1.0, atol=1e-5)
  # Zero padding: a white image darkens at the border only.
  white = out[n // 2 :][blurred[n // 2 :]]
  np.testing.assert_allclose(white[:, r:-r, r:-r], 1.0, atol=1e-6)
  assert white[:, 0, 0].min() < 0.7


def _impulses(n, size=32):
  images = np.zeros((n, size, size, 3), np.float32)
  images[:, size // 2, size // 2] = 1.0
  return images


def _sigmas(views_out, size=32):
  """Each blurred impulse's sigma (NaN where it was not blurred).

  Blurring an impulse leaves k0 * k at its row, k the normalised 1-D kernel,
  so the ratio of neighbour to centre, exp(-1 / (2 sigma^2)), gives sigma.
  """
  c = size // 2
  out = np.asarray(views_out, np.float64)
  ratio = out[:, c, c + 1, 0] / out[:, c, c, 0]
  with np.errstate(divide="ignore"):
    sigma = np.sqrt(-0.5 / np.log(ratio))
  return np.where(ratio > 0, sigma, np.nan)


def test_blur_sigma_is_uniform_between_0_1_and_2(run_augment, augment_off):
  n = 4000
  out = run_augment(
    AugmentConfig(32, **dict(augment_off, blur_prob=1.0)), _impulses(n)
  )
  sigma = _sigmas(out)
  assert sigma.min() >= 0.1 - 1e-4 and sigma.max() <= 2.0 + 1e-4
  assert sigma.min() < 0.11 and sigma.max() > 1.99
  # Kolmogorov-Smirnov distance to U[0.1, 2.0] (1% critical value 0.026).
  cdf = (np.sort(sigma) - 0.1) / 1.9
  above, below = np.arange(1, n + 1) / n - cdf, cdf - np.arange(n) / n
  assert max(above.max(), below.max()) < 0.026


@pytest.mark.parametrize("sigma, size", [(0.6, 32), (1.7, 224)])
def test_blur_matches_dm_pix(sigma, size):
  image = jnp.asarray(np.random.RandomState(3).rand(size, size, 3), jnp.float32)
  k = augment.blur_kernel_size(size)
  np.testing.assert_allclose(
    color._gaussian_blur(image, jnp.float32(sigma), k),
    pix.gaussian_blur(image, sigma, k, padding="SAME"),
    atol=1e-5,
  )


@functools.lru_cache(maxsize=None)
def _two_views(mode):
  config = AugmentConfig(
    32,
    crop=False,
    flip=False,
    color_jitter_prob=0.0,
    grayscale_prob=0.0,
    blur_prob=0.5,
    blur_sigma=mode,
  )
  return jax.jit(
    lambda key, images: views.two_views(key, images, (config, config))
  )


def _view_sigmas(mode, seed, n=64):
  """Sigmas of the blurred images of view 1 and view 2 at one step key."""
  out = np.asarray(_two_views(mode)(jax.random.key(seed), _impulses(n)))
  first, second = _sigmas(out[0::2]), _sigmas(out[1::2])
  return first[~np.isnan(first)], second[~np.isnan(second)]


def test_per_batch_sigma_is_shared_by_a_view_and_new_each_step():
  first, second = _view_sigmas("per_batch", seed=0)
  for blurred in (first, second):
    assert 16 < blurred.size < 48  # the coin is still per image (p 0.5)
    np.testing.assert_allclose(blurred, blurred[0], rtol=1e-4)
  assert abs(first[0] - second[0]) > 1e-3  # the two views differ
  later, _ = _view_sigmas("per_batch", seed=1)
  assert abs(later[0] - first[0]) > 1e-3  # and so do the steps
  # simclr_augment: one sigma for its whole batch too.
  config = AugmentConfig(
    32,
    crop=False,
    flip=False,
    color_jitter_prob=0.0,
    grayscale_prob=0.0,
    blur_prob=1.0,
    blur_sigma="per_batch",
  )
  out = jax.jit(functools.partial(augment.simclr_augment, config=config))(
    jax.random.key(2), _impulses(8)
  )
  sigma = _sigmas(out)
  np.testing.assert_allclose(sigma, sigma[0], rtol=1e-4)
  assert 0.1 <= sigma[0] <= 2.0


def test_per_image_sigma_differs_between_images():
  first, second = _view_sigmas("per_image", seed=0)
  for blurred in (first, second):
    assert blurred.size > 16 and np.ptp(blurred) > 0.5
    assert len(np.unique(np.round(blurred, 4))) == blurred.size


def test_augment_image_asks_for_the_batch_sigma_exactly_when_per_batch():
  image = _impulses(1)[0]
  per_batch = AugmentConfig(32, blur_sigma="per_batch")
  per_image = AugmentConfig(32)
  with pytest.raises(ValueError, match="per_batch"):
    augment.augment_image(jax.random.key(0), image, config=per_batch)
  with pytest.raises(ValueError, match="per_image"):
    augment.augment_image(
      jax.random.key(0), image, config=per_image, batch_sigma=jnp.float32(1.0)
    )
  # Without blur there is no sigma to give.
  no_blur = AugmentConfig(
    32,
    crop=False,
    flip=False,
    color_jitter_prob=0.0,
    grayscale_prob=0.0,
    blur_prob=0.0,
    blur_sigma="per_batch",
  )
  np.testing.assert_array_equal(
    augment.augment_image(jax.random.key(0), image, config=no_blur), image
  )
