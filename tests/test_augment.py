"""Tests for simclr_jax.augment (SIMCLR_SPEC.md section 5)."""

import functools
import itertools

import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simclr_jax import augment
from simclr_jax.errors import UserError

AugmentConfig = augment.AugmentConfig

# Everything random switched off; tests turn on the one op they look at.
_OFF = dict(crop=False, flip=False, color_jitter_strength=0.0,
            color_jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0,
            solarize_prob=0.0)


@functools.lru_cache(maxsize=None)
def _augment_fn(config):
  return jax.jit(functools.partial(augment.simclr_augment, config=config))


def _run(config, images, seed=0):
  return np.asarray(_augment_fn(config)(jax.random.key(seed), images))


@functools.lru_cache(maxsize=None)
def _boxes(config, height, width, n=20000, seed=0):
  fn = jax.jit(jax.vmap(lambda k: augment.sample_crop_box(
      k, height, width, config=config)))
  boxes = np.asarray(fn(jax.random.split(jax.random.key(seed), n)))
  return boxes.T  # y, x, h, w


def _random_uint8(shape, seed=0):
  return np.random.RandomState(seed).randint(0, 256, shape).astype(np.uint8)


# A full SimCLR view at 32 px with blur on (kernel 3), shared by several tests.
_FULL = AugmentConfig(32, color_jitter_strength=0.5)


# ----------------------------------------------------------------- config ---


@pytest.mark.parametrize("field, value", [
    ("image_size", 0), ("image_size", 3.5), ("image_size", True),
    ("crop_area", (0.0, 1.0)), ("crop_area", (0.5, 0.2)),
    ("crop_area", (0.1, 1.5)), ("crop_area", "big"),
    ("crop_area", (0.05, 0.08)),  # reference sampler needs high >= 0.1
    ("crop_aspect", (0.0, 1.0)), ("crop_aspect", (2.0, 1.0)),
    ("crop_sampler", "bogus"), ("brightness", "bogus"),
    ("color_jitter_prob", 1.5), ("grayscale_prob", -0.1),
    ("blur_prob", 2.0), ("solarize_prob", 1.01),
    ("color_jitter_strength", -0.1), ("color_jitter_strength", 1.5),
    ("flip", "yes"),
])
def test_config_rejects_bad_values(field, value):
  with pytest.raises(ValueError, match=field) as info:
    AugmentConfig(**dict({"image_size": 32}, **{field: value}))
  assert isinstance(info.value, UserError)


def test_config_normalises_sequences_and_is_hashable():
  config = AugmentConfig(32, crop_area=[0.2, 1], crop_aspect=np.array([1, 2]))
  assert config.crop_area == (0.2, 1.0)
  assert config.crop_aspect == (1.0, 2.0)
  assert hash(config) == hash(AugmentConfig(32, crop_area=(0.2, 1.0),
                                            crop_aspect=(1.0, 2.0)))


def test_presets():
  simclr = augment.make_augment_config("simclr", 224)
  assert simclr == AugmentConfig(224)
  assert (simclr.color_jitter_strength, simclr.blur_prob) == (1.0, 0.5)
  cifar = augment.make_augment_config("simclr_cifar", 32)
  assert (cifar.color_jitter_strength, cifar.blur_prob) == (0.5, 0.0)
  assert augment.make_augment_config("simclr_v1", 224).brightness == "additive"
  crop_flip = augment.make_augment_config("crop_flip", 32)
  assert crop_flip.crop and crop_flip.flip
  assert crop_flip.color_jitter_prob == crop_flip.grayscale_prob == 0.0
  assert crop_flip.blur_prob == crop_flip.solarize_prob == 0.0
  none = augment.make_augment_config("none", 32)
  assert none == AugmentConfig(32, **_OFF)
  for name in ("simclr", "simclr_cifar", "simclr_v1", "crop_flip", "none"):
    assert augment.PRESETS[name](96).image_size == 96
  over = augment.make_augment_config("simclr", 64, blur_prob=0.0,
                                     crop_sampler="torchvision")
  assert (over.blur_prob, over.crop_sampler, over.image_size) == (
      0.0, "torchvision", 64)


def test_make_augment_config_errors():
  with pytest.raises(ValueError, match="simclr_cifar") as info:
    augment.make_augment_config("imagenet", 224)
  assert "crop_flip" in str(info.value) and "none" in str(info.value)
  with pytest.raises(ValueError, match="blur_sigma"):
    augment.make_augment_config("simclr", 224, blur_sigma=1.0)
  with pytest.raises(ValueError, match="blur_prob"):
    augment.make_augment_config("simclr", 224, blur_prob=3.0)


# ------------------------------------------------------- whole pipeline ---


def test_output_shape_dtype_range_and_input_dtypes():
  images_u8 = _random_uint8((8, 32, 32, 3))
  out_u8 = _run(_FULL, images_u8)
  assert out_u8.shape == (8, 32, 32, 3) and out_u8.dtype == np.float32
  assert out_u8.min() >= 0.0 and out_u8.max() <= 1.0
  out_f = _run(_FULL, images_u8.astype(np.float32) / 255.0)
  np.testing.assert_allclose(out_f, out_u8, atol=1e-5)
  # Non-square input of another size: resized to image_size.
  none = AugmentConfig(24, **_OFF)
  out = _run(none, _random_uint8((2, 40, 56, 3)))
  assert out.shape == (2, 24, 24, 3) and out.dtype == np.float32
  assert out.min() >= 0.0 and out.max() <= 1.0


def test_determinism_by_key_and_per_example_independence():
  image = _random_uint8((1, 32, 32, 3))
  images = np.repeat(image, 8, axis=0)
  a = _run(_FULL, images, seed=1)
  np.testing.assert_array_equal(a, _run(_FULL, images, seed=1))
  b = _run(_FULL, images, seed=2)
  assert np.abs(a - b).max() > 0.1
  # Copies of one image in one batch get different views.
  for i, j in itertools.combinations(range(8), 2):
    assert np.abs(a[i] - a[j]).max() > 1e-3, (i, j)


def test_batch_is_vmap_of_augment_image_with_split_keys():
  images = _random_uint8((8, 32, 32, 3))
  key = jax.random.key(7)
  batch = _run(_FULL, images, seed=7)
  single = jax.jit(functools.partial(augment.augment_image, config=_FULL))
  for i, k in enumerate(jax.random.split(key, 8)):
    np.testing.assert_allclose(single(k, images[i]), batch[i], atol=1e-6)


def test_sharded_batch_under_jit():
  # jax.make_mesh defaults to explicit sharding: the per-example keys must be
  # batch-sharded like the images for vmap to accept them.
  mesh = jax.make_mesh((8,), ("data",))
  sharding = jax.sharding.NamedSharding(mesh,
                                        jax.sharding.PartitionSpec("data"))
  images = _random_uint8((8, 32, 32, 3))
  out = _augment_fn(_FULL)(jax.random.key(3), jax.device_put(images, sharding))
  np.testing.assert_allclose(np.asarray(out), _run(_FULL, images, seed=3),
                             atol=1e-6)


# Ops of _FULL_ORDER (jitter and blur always on, so each fires) one at a
# time; with the same key each draws the same randomness as in the pipeline.
_FULL_ORDER = AugmentConfig(32, color_jitter_prob=1.0, grayscale_prob=0.5,
                            blur_prob=1.0)
_ONE_OP = {
    "crop": dict(_OFF, crop=True),
    "flip": dict(_OFF, flip=True),
    "jitter": dict(_OFF, color_jitter_strength=1.0, color_jitter_prob=1.0),
    "gray": dict(_OFF, grayscale_prob=0.5),
    "blur": dict(_OFF, blur_prob=1.0),
}


def _compose(order, images, seed):
  for op in order:
    images = _run(AugmentConfig(32, **_ONE_OP[op]), images, seed=seed)
  return images


def test_op_order_is_crop_flip_jitter_grayscale_blur():
  images = np.random.RandomState(8).rand(16, 32, 32, 3).astype(np.float32)
  full = _run(_FULL_ORDER, images, seed=5)
  spec = ("crop", "flip", "jitter", "gray", "blur")
  np.testing.assert_allclose(full, _compose(spec, images, 5), atol=1e-5)
  # Any swap of two ops that do not commute changes the views. (Flip
  # commutes with the per-pixel ops and the symmetric blur, and grayscale
  # with the blur: both linear, on different axes; their order is moot.)
  for a, b in (("crop", "flip"), ("jitter", "gray"), ("jitter", "blur"),
               ("crop", "jitter"), ("crop", "blur")):
    swapped = tuple({a: b, b: a}.get(op, op) for op in spec)
    assert np.abs(full - _compose(swapped, images, 5)).max() > 0.05, (a, b)


# ---------------------------------------------------------------- crops ---


@pytest.mark.parametrize("sampler, out_size", [("reference", 32),
                                               ("torchvision", 48)])
def test_full_area_crop_returns_resized_input(sampler, out_size):
  config = AugmentConfig(out_size, **dict(_OFF, crop=True),
                         crop_area=(1.0, 1.0), crop_aspect=(1.0, 1.0),
                         crop_sampler=sampler)
  images = np.random.RandomState(0).rand(4, 32, 32, 3).astype(np.float32)
  expected = images if out_size == 32 else jax.image.resize(
      images, (4, out_size, out_size, 3), "cubic", antialias=False)
  np.testing.assert_allclose(_run(config, images), np.clip(expected, 0, 1),
                             atol=1e-5)


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
  y, x, h, w = _boxes(AugmentConfig(size, crop_sampler="torchvision"),
                      size, size)
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
  tv = _boxes(AugmentConfig(32, crop_sampler="torchvision", **fixed), 32, 48,
              n=64)
  np.testing.assert_array_equal(np.stack(tv, 1), [[0, 8, 32, 32]] * 64)


# ---------------------------------------------------------- colour ops ---


@pytest.mark.parametrize("mode, lo, hi", [("multiplicative", 0.3, 0.7),
                                          ("additive", 0.1, 0.9)])
def test_brightness_range_and_jitter_probability(mode, lo, hi):
  # On a flat grey image contrast, saturation and hue are no-ops, so only
  # brightness shows: 0.5 * U[0.6, 1.4] or 0.5 + U[-0.4, 0.4] at s = 0.5.
  config = AugmentConfig(8, **dict(_OFF, color_jitter_strength=0.5,
                                   color_jitter_prob=0.8), brightness=mode)
  out = _run(config, np.full((512, 8, 8, 3), 0.5, np.float32))
  values = out.reshape(512, -1)
  np.testing.assert_allclose(values, values[:, :1].repeat(192, 1), atol=1e-6)
  values = values[:, 0]
  changed = values[np.abs(values - 0.5) > 1e-6]
  assert 0.72 < changed.size / 512 < 0.88  # jitter applied with p = 0.8
  assert changed.min() >= lo - 1e-6 and changed.max() <= hi + 1e-6
  assert changed.min() < lo + 0.03 and changed.max() > hi - 0.03


def test_jitter_parameter_ranges_and_random_order():
  keys = jax.random.split(jax.random.key(0), 4096)
  sample = jax.jit(jax.vmap(lambda k: augment._sample_color_jitter(
      k, 1.0, "multiplicative")))
  orders, params = map(np.asarray, sample(keys))
  assert (np.sort(orders, axis=1) == np.arange(4)).all()
  assert len({tuple(o) for o in orders}) == 24
  bounds = [(0.2, 1.8), (0.2, 1.8), (0.2, 1.8), (-0.2, 0.2)]
  for i, (lo, hi) in enumerate(bounds):
    assert params[:, i].min() >= lo and params[:, i].max() <= hi, i
    assert params[:, i].min() < lo + 0.01 and params[:, i].max() > hi - 0.01, i
  # Strong strength: brightness factor floor is clamped at 0.
  _, p = augment._sample_color_jitter(jax.random.key(1), 1.25, "multiplicative")
  lo, hi = augment._jitter_bounds(1.25, "multiplicative")
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
    ops = {0: lambda x: x * b, 1: lambda x: pix.adjust_contrast(x, c),
           2: lambda x: pix.adjust_saturation(x, s),
           3: lambda x: pix.adjust_hue(x, h)}
    pairs = []
    for order in orders:
      expected = image
      for op in order:
        expected = _clip(ops[op](expected))
      got = augment._color_jitter(image, jnp.array(order), params,
                                  "multiplicative")
      pairs.append((expected, got))
    additive = augment._color_jitter(image, jnp.array([0, 1, 2, 3]),
                                     jnp.array([-0.2, 1.0, 1.0, 0.0]),
                                     "additive")
    return pairs, additive

  pairs, additive = expected_and_got(image, params)
  for expected, got in pairs:
    np.testing.assert_allclose(got, expected, atol=1e-5)
  assert np.abs(pairs[0][1] - pairs[1][1]).max() > 1e-2  # order matters
  np.testing.assert_allclose(additive, _clip(image - 0.2), atol=1e-5)


def test_grayscale_and_its_probability():
  images = np.random.RandomState(2).rand(512, 8, 8, 3).astype(np.float32)
  out = _run(AugmentConfig(8, **dict(_OFF, grayscale_prob=0.2)), images)
  gray = np.all(np.ptp(out, axis=-1) == 0, axis=(1, 2))
  assert 0.13 < gray.mean() < 0.27
  np.testing.assert_allclose(
      out[gray], pix.rgb_to_grayscale(images[gray], keep_dims=True), atol=1e-6)
  np.testing.assert_array_equal(out[~gray], images[~gray])


# ------------------------------------------------------ flip, blur, etc ---


def test_flip_is_exact_mirror_half_the_time():
  images = np.random.RandomState(6).rand(64, 16, 16, 3).astype(np.float32)
  out = _run(AugmentConfig(16, **dict(_OFF, flip=True)), images, seed=4)
  same = [np.array_equal(o, x) for o, x in zip(out, images)]
  mirror = [np.array_equal(o, x[:, ::-1]) for o, x in zip(out, images)]
  assert all(s or m for s, m in zip(same, mirror))
  assert 16 < sum(mirror) < 48


def test_blur_kernel_size_rule():
  assert augment.blur_kernel_size(224) == 23
  assert augment.blur_kernel_size(32) == 3
  assert augment.blur_kernel_size(96) == 9
  assert augment.blur_kernel_size(64) == 7
  assert augment.blur_kernel_size(16) == 1


def test_blur_support_padding_and_probability():
  size, n = 64, 128
  k = augment.blur_kernel_size(size)
  r, c = k // 2, size // 2
  images = np.ones((n, size, size, 3), np.float32)  # white: second half
  images[:n // 2] = 0.0
  images[:n // 2, c, c, :] = 1.0  # impulses: first half
  out = _run(AugmentConfig(size, **dict(_OFF, blur_prob=0.5)), images)
  blurred = np.abs(out - images).max(axis=(1, 2, 3)) > 0
  assert 0.4 < blurred.mean() < 0.6
  impulses = out[:n // 2][blurred[:n // 2]]
  rows = np.nonzero(impulses[..., 0].max(axis=(0, 2)) > 0)[0]
  cols = np.nonzero(impulses[..., 0].max(axis=(0, 1)) > 0)[0]
  assert (rows.min(), rows.max()) == (c - r, c + r)  # k x k support
  assert (cols.min(), cols.max()) == (c - r, c + r)
  np.testing.assert_allclose(impulses.sum(axis=(1, 2)), 1.0, atol=1e-5)
  # Zero padding: a white image darkens at the border only.
  white = out[n // 2:][blurred[n // 2:]]
  np.testing.assert_allclose(white[:, r:-r, r:-r], 1.0, atol=1e-6)
  assert white[:, 0, 0].min() < 0.7


def test_blur_sigma_is_uniform_between_0_1_and_2():
  # Blurring an impulse leaves k0 * k at its row, k the normalised 1-D
  # kernel, so the ratio of neighbour to centre, exp(-1 / (2 sigma^2)),
  # gives each view's sigma back.
  n, c = 4000, 16
  impulses = np.zeros((n, 32, 32, 3), np.float32)
  impulses[:, c, c] = 1.0
  out = _run(AugmentConfig(32, **dict(_OFF, blur_prob=1.0)), impulses)
  ratio = out[:, c, c + 1, 0].astype(np.float64) / out[:, c, c, 0]
  sigma = np.sqrt(-0.5 / np.log(ratio))
  assert sigma.min() >= 0.1 - 1e-4 and sigma.max() <= 2.0 + 1e-4
  assert sigma.min() < 0.11 and sigma.max() > 1.99
  # Kolmogorov-Smirnov distance to U[0.1, 2.0] (1% critical value 0.026).
  cdf = (np.sort(sigma) - 0.1) / 1.9
  above, below = np.arange(1, n + 1) / n - cdf, cdf - np.arange(n) / n
  assert max(above.max(), below.max()) < 0.026


@pytest.mark.parametrize("sigma, size", [(0.6, 32), (1.7, 224)])
def test_blur_matches_dm_pix(sigma, size):
  image = jnp.asarray(np.random.RandomState(3).rand(size, size, 3),
                      jnp.float32)
  k = augment.blur_kernel_size(size)
  np.testing.assert_allclose(
      augment._gaussian_blur(image, jnp.float32(sigma), k),
      pix.gaussian_blur(image, sigma, k, padding="SAME"), atol=1e-5)


def test_solarize():
  images = np.random.RandomState(5).rand(4, 16, 16, 3).astype(np.float32)
  out = _run(AugmentConfig(16, **dict(_OFF, solarize_prob=1.0)), images)
  np.testing.assert_allclose(out, np.where(images < 0.5, images, 1 - images),
                             atol=1e-7)


# ------------------------------------------------------------------ eval ---


def _framed(height, width, top, left, crop):
  """1 outside the centre crop box, 0 inside."""
  images = np.ones((2, height, width, 3), np.float32)
  images[:, top:top + crop, left:left + crop] = 0.0
  return images


@pytest.mark.parametrize("height, width, out_size, top, left, crop", [
    (224, 224, 224, 14, 14, 196),
    (48, 64, 32, 3, 11, 42),
])
def test_preprocess_eval_crops_centre(height, width, out_size, top, left, crop):
  images = _framed(height, width, top, left, crop)
  out = np.asarray(augment.preprocess_eval(images, image_size=out_size))
  assert out.shape == (2, out_size, out_size, 3) and out.dtype == np.float32
  assert out.max() < 1e-6  # the frame was cropped away, nothing else
  # One pixel less cropped would show the frame.
  wider = _framed(height, width, top + 1, left + 1, crop - 2)
  assert augment.preprocess_eval(wider, image_size=out_size).max() > 0.1


def test_preprocess_eval_skips_crop_at_32px():
  images = _random_uint8((3, 32, 32, 3))
  out = np.asarray(augment.preprocess_eval(images, image_size=32))
  assert out.dtype == np.float32
  np.testing.assert_allclose(out, images / 255.0, atol=1e-6)
  up = np.asarray(augment.preprocess_eval(images, image_size=64))
  expected = jax.image.resize(images / 255.0, (3, 64, 64, 3), "cubic",
                              antialias=False)
  np.testing.assert_allclose(up, np.clip(expected, 0, 1), atol=1e-5)


def test_preprocess_eval_rejects_bad_arguments():
  images = np.zeros((1, 64, 64, 3), np.uint8)
  with pytest.raises(ValueError, match="crop_fraction"):
    augment.preprocess_eval(images, image_size=32, crop_fraction=0.0)
  with pytest.raises(ValueError, match="image_size"):
    augment.preprocess_eval(images, image_size=0)
