"""Random resized crops and flips (docs/fidelity.md rows 5.1-5.4): the box
samplers' statistics and the mapping from a box to the resized view."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from simclr_jax import augment
from simclr_jax.augment import crops

AugmentConfig = augment.AugmentConfig


@functools.lru_cache(maxsize=None)
def _boxes(config, height, width, n=20000, seed=0):
  fn = jax.jit(
    jax.vmap(lambda k: augment.sample_crop_box(k, height, width, config=config))
  )
  boxes = np.asarray(fn(jax.random.split(jax.random.key(seed), n)))
  return boxes.T  # y, x, h, w


@pytest.mark.parametrize(
  "sampler, out_size", [("reference", 32), ("torchvision", 48)]
)
def test_full_area_crop_returns_resized_input(
  sampler, out_size, run_augment, augment_off
):
  config = AugmentConfig(
    out_size,
    **dict(augment_off, crop=True),
    crop_area=(1.0, 1.0),
    crop_aspect=(1.0, 1.0),
    crop_sampler=sampler,
  )
  images = np.random.RandomState(0).rand(4, 32, 32, 3).astype(np.float32)
  expected = (
    images
    if out_size == 32
    else jax.image.resize(
      images, (4, out_size, out_size, 3), "cubic", antialias=False
    )
  )
  np.testing.assert_allclose(
    run_augment(config, images), np.clip(expected, 0, 1), atol=1e-5
  )


# Partial, non-square boxes off the centre (y != x, h != w), at least two
# pixels inside the 48 x 64 image, so every bicubic tap lands in the image.
_BOXES = [
  pytest.param((9, 17, 20, 27), 40, id="upsample"),
  pytest.param((5, 11, 37, 44), 16, id="downsample"),
]


def _inner(n, size):
  """Output indices whose 4 bicubic taps all lie inside a box side of n."""
  u = (np.arange(size) + 0.5) * n / size - 0.5
  return (np.floor(u) >= 1) & (np.floor(u) + 2 <= n - 1)


@pytest.mark.parametrize("box, size", _BOXES)
def test_resize_box_is_slice_then_resize_away_from_box_edges(box, size):
  image = np.random.RandomState(1).rand(48, 64, 3).astype(np.float32)
  y, x, h, w = box
  got = np.asarray(
    jax.jit(crops.resize_box, static_argnums=2)(
      image, jnp.array(box, jnp.float32), size
    )
  )
  # The reference: crop_to_bounding_box, then resize that patch alone.
  patch = tf.image.crop_to_bounding_box(image, y, x, h, w)
  tf_view = tf.image.resize(patch[None], [size, size], method="bicubic")[0]
  jax_view = jax.image.resize(
    image[y : y + h, x : x + w], (size, size, 3), "cubic", antialias=False
  )
  inner = _inner(h, size)[:, None] & _inner(w, size)[None, :]
  assert inner.mean() > 0.5
  # TF quantises the cubic weights (a 1024-entry table): ~6e-4 at most.
  np.testing.assert_allclose(got[inner], tf_view.numpy()[inner], atol=2e-3)
  np.testing.assert_allclose(got[inner], np.asarray(jax_view)[inner], atol=1e-5)
  # D3: only the band of output pixels whose taps leave the box differs
  # (we read the image just outside the box, TF drops those taps).
  differs = np.abs(got - tf_view.numpy()).max(axis=-1) > 2e-3
  assert differs.any() and not (differs & inner).any()


@pytest.mark.parametrize("box, size", _BOXES)
def test_resize_box_is_exact_on_a_linear_ramp(box, size):
  # Cubic convolution reproduces linear functions wherever all taps are in
  # the image; the box's output pixel (p, q) samples source coordinates
  # (y + (p + 0.5) h / size - 0.5, x + (q + 0.5) w / size - 0.5).
  a, b = 0.008, 0.005
  offset = np.array([0.1, 0.15, 0.2], np.float32)
  rows, cols = np.mgrid[0:48, 0:64].astype(np.float32)
  ramp = a * rows[..., None] + b * cols[..., None] + offset
  y, x, h, w = box
  got = np.asarray(
    jax.jit(crops.resize_box, static_argnums=2)(
      jnp.asarray(ramp), jnp.array(box, jnp.float32), size
    )
  )
  p = np.arange(size, dtype=np.float64) + 0.5
  src_y, src_x = y + p * h / size - 0.5, x + p * w / size - 0.5
  want = a * src_y[:, None, None] + b * src_x[None, :, None] + offset
  np.testing.assert_allclose(got, want, atol=2e-6)


def test_reference_sampler_statistics():
  size = 224
  y, x, h, w = _boxes(AugmentConfig(size), size, size)
  for v in (y, x, h, w):
    np.testing.assert_array_equal(v, np.round(v))
  assert (y >= 0).all() and (x >= 0).all()
  assert (y + h <= size).all() and (x + w <= size).all()
  # TF draws offsets in [0, size - box - 1].
  assert ((y + h < size) | (h == size)).all()
  area = h * w / size**2
  assert area.min() >= 0.1  # min_object_covered rejects 0.08 <= area < 0.1
  assert area.max() <= 1.0
  # Height is uniform per aspect (TF), so the mean area is ~0.42, well below
  # the ~0.55 of an area-uniform sampler.
  assert 0.40 < area.mean() < 0.445, area.mean()
  aspect = w / h
  assert aspect.min() >= 0.74 and aspect.max() <= 1.345
  lo, hi = 3 / 4, 4 / 3
  for q in (0.25, 0.5, 0.75):  # uniform aspect, not log-uniform
    assert abs(np.quantile(aspect, q) - (lo + q * (hi - lo))) < 0.015, q
  assert np.mean((h == size) & (w == size)) < 0.01  # fallback is rare


def test_reference_sampler_small_images_keep_min_area():
  y, x, h, w = _boxes(AugmentConfig(32), 32, 32, n=5000)
  assert (h * w / 32**2).min() >= 0.1
  assert (y + h <= 32).all() and (x + w <= 32).all()


def test_torchvision_sampler_statistics():
  size = 224
  y, x, h, w = _boxes(
    AugmentConfig(size, crop_sampler="torchvision"), size, size
  )
  assert (y >= 0).all() and (x >= 0).all()
  assert (y + h <= size).all() and (x + w <= size).all()
  assert (y + h == size).any()  # offsets reach the far edge
  area = h * w / size**2
  assert area.min() >= 0.075 and area.max() <= 1.0  # 0.08 up to rounding
  assert area.min() < 0.1  # no 10% floor here
  log_aspect = np.log(w / h)
  bound = np.log(4 / 3)
  # Integer box sides: the realised ratio is off by up to ~2% for small boxes.
  assert log_aspect.min() >= -bound - 0.02 and log_aspect.max() <= bound + 0.02
  # Log-uniform aspect: symmetric in log space around ratio 1.
  assert abs(np.median(log_aspect)) < 0.01
  q25, q75 = np.quantile(log_aspect, [0.25, 0.75])
  assert abs(q25 + q75) < 0.01 and 0.11 < q75 < 0.16


def test_sampler_fallbacks():
  # A full-area square box never fits a 32x48 image: every attempt fails.
  fixed = dict(crop_area=(1.0, 1.0), crop_aspect=(1.0, 1.0))
  ref = _boxes(AugmentConfig(32, **fixed), 32, 48, n=64)
  np.testing.assert_array_equal(np.stack(ref, 1), [[0, 0, 32, 48]] * 64)
  tv = _boxes(
    AugmentConfig(32, crop_sampler="torchvision", **fixed), 32, 48, n=64
  )
  np.testing.assert_array_equal(np.stack(tv, 1), [[0, 8, 32, 32]] * 64)


def test_flip_is_exact_mirror_half_the_time(run_augment, augment_off):
  images = np.random.RandomState(6).rand(64, 16, 16, 3).astype(np.float32)
  out = run_augment(
    AugmentConfig(16, **dict(augment_off, flip=True)), images, seed=4
  )
  same = [np.array_equal(o, x) for o, x in zip(out, images)]
  mirror = [np.array_equal(o, x[:, ::-1]) for o, x in zip(out, images)]
  assert all(s or m for s, m in zip(same, mirror))
  assert 16 < sum(mirror) < 48
