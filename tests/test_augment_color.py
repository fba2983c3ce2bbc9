"""Colour jitter, grayscale and solarize (docs/fidelity.md rows 5.5-5.8)."""

import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simclr_jax import augment
from simclr_jax.augment import color

AugmentConfig = augment.AugmentConfig


@pytest.mark.parametrize(
  "mode, lo, hi", [("multiplicative", 0.3, 0.7), ("additive", 0.1, 0.9)]
)
def test_brightness_range_and_jitter_probability(
  mode, lo, hi, run_augment, augment_off
):
  # On a flat grey image contrast, saturation and hue are no-ops, so only
  # brightness shows: 0.5 * U[0.6, 1.4] or 0.5 + U[-0.4, 0.4] at s = 0.5.
  config = AugmentConfig(
    8,
    **dict(augment_off, color_jitter_strength=0.5, color_jitter_prob=0.8),
    brightness=mode,
  )
  out = run_augment(config, np.full((512, 8, 8, 3), 0.5, np.float32))
  values = out.reshape(512, -1)
  np.testing.assert_allclose(values, values[:, :1].repeat(192, 1), atol=1e-6)
  values = values[:, 0]
  changed = values[np.abs(values - 0.5) > 1e-6]
  assert 0.72 < changed.size / 512 < 0.88  # jitter applied with p = 0.8
  assert changed.min() >= lo - 1e-6 and changed.max() <= hi + 1e-6
  assert changed.min() < lo + 0.03 and changed.max() > hi - 0.03


def test_jitter_parameter_ranges_and_random_order():
  keys = jax.random.split(jax.random.key(0), 4096)
  sample = jax.jit(
    jax.vmap(lambda k: color._sample_color_jitter(k, 1.0, "multiplicative"))
  )
  orders, params = map(np.asarray, sample(keys))
  assert (np.sort(orders, axis=1) == np.arange(4)).all()
  assert len({tuple(o) for o in orders}) == 24
  bounds = [(0.2, 1.8), (0.2, 1.8), (0.2, 1.8), (-0.2, 0.2)]
  for i, (lo, hi) in enumerate(bounds):
    assert params[:, i].min() >= lo and params[:, i].max() <= hi, i
    assert params[:, i].min() < lo + 0.01 and params[:, i].max() > hi - 0.01, i
  # Strong strength: brightness factor floor is clamped at 0.
  _, p = color._sample_color_jitter(jax.random.key(1), 1.25, "multiplicative")
  lo, hi = color._jitter_bounds(1.25, "multiplicative")
  assert 0.0 <= float(p[0]) <= 2.0
  assert lo[0] == 0.0 and hi[0] == 2.0 and lo[1] == 0.0


def _clip(x):
  return jnp.clip(x, 0.0, 1.0)


def test_color_jitter_applies_ops_in_given_order():
  image = jnp.asarray(np.random.RandomState(0).rand(8, 8, 3), jnp.float32)
  params = jnp.array([1.3, 1.6, 0.4, 0.15])
  orders = ([1, 2, 0, 3], [2, 1, 0, 3], [3, 0, 2, 1])

  @jax.jit
  def expected_and_got(image, params):
    b, c, s, h = params
    ops = {
      0: lambda x: x * b,
      1: lambda x: pix.adjust_contrast(x, c),
      2: lambda x: pix.adjust_saturation(x, s),
      3: lambda x: pix.adjust_hue(x, h),
    }
    pairs = []
    for order in orders:
      expected = image
      for op in order:
        expected = _clip(ops[op](expected))
      got = color._color_jitter(
        image, jnp.array(order), params, "multiplicative"
      )
      pairs.append((expected, got))
    additive = color._color_jitter(
      image,
      jnp.array([0, 1, 2, 3]),
      jnp.array([-0.2, 1.0, 1.0, 0.0]),
      "additive",
    )
    return pairs, additive

  pairs, additive = expected_and_got(image, params)
  for expected, got in pairs:
    np.testing.assert_allclose(got, expected, atol=1e-5)
  assert np.abs(pairs[0][1] - pairs[1][1]).max() > 1e-2  # order matters
  np.testing.assert_allclose(additive, _clip(image - 0.2), atol=1e-5)


def test_grayscale_and_its_probability(run_augment, augment_off):
  images = np.random.RandomState(2).rand(512, 8, 8, 3).astype(np.float32)
  out = run_augment(
    AugmentConfig(8, **dict(augment_off, grayscale_prob=0.2)), images
  )
  gray = np.all(np.ptp(out, axis=-1) == 0, axis=(1, 2))
  assert 0.13 < gray.mean() < 0.27
  np.testing.assert_allclose(
    out[gray], pix.rgb_to_grayscale(images[gray], keep_dims=True), atol=1e-6
  )
  np.testing.assert_array_equal(out[~gray], images[~gray])


def test_grayscale_coin_is_independent_of_the_jitter_coin(
  run_augment, augment_off
):
  # Jitter p 0.8 then grayscale p 0.2 with their own coins: the four
  # (jittered?, gray?) cells have probabilities 0.8/0.2 products.
  n = 4000
  images = np.random.RandomState(9).rand(n, 8, 8, 3).astype(np.float32)
  config = AugmentConfig(
    8,
    **dict(
      augment_off,
      color_jitter_strength=1.0,
      color_jitter_prob=0.8,
      grayscale_prob=0.2,
    ),
  )
  out = run_augment(config, images, seed=3)
  # Gray: the three channels are equal (a jittered colour image never is).
  gray = np.ptp(out, axis=-1).max(axis=(1, 2)) < 1e-6
  # Not jittered: the output is the input, or its grayscale, exactly; four
  # continuous jitter parameters all within 1e-5 of identity never happen.
  untouched = np.where(
    gray[:, None, None, None],
    pix.rgb_to_grayscale(images, keep_dims=True),
    images,
  )
  jittered = np.abs(out - untouched).max(axis=(1, 2, 3)) > 1e-5
  for j, g in ((True, True), (True, False), (False, True), (False, False)):
    p = (0.8 if j else 0.2) * (0.2 if g else 0.8)
    freq = np.mean((jittered == j) & (gray == g))
    # 4.5 standard errors of a binomial proportion: a false alarm at this
    # seed-fixed draw would have probability below 1e-5 per cell.
    assert abs(freq - p) < 4.5 * np.sqrt(p * (1 - p) / n), (j, g, freq, p)


def test_solarize(run_augment, augment_off):
  images = np.random.RandomState(5).rand(4, 16, 16, 3).astype(np.float32)
  out = run_augment(
    AugmentConfig(16, **dict(augment_off, solarize_prob=1.0)), images
  )
  np.testing.assert_allclose(
    out, np.where(images < 0.5, images, 1 - images), atol=1e-7
  )
