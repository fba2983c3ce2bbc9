"""simclr_jax.augment as a whole (docs/fidelity.md section 5): config
validation and presets, output contract, determinism by key, op order, and
where the pipeline clips."""

import functools
import itertools

import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simclr_jax import augment
from simclr_jax.augment import color
from simclr_jax.errors import UserError

AugmentConfig = augment.AugmentConfig

# A full SimCLR view at 32 px with blur on (kernel 3), shared by several tests.
_FULL = AugmentConfig(32, color_jitter_strength=0.5)


# ----------------------------------------------------------------- config ---


@pytest.mark.parametrize(
  "field, value",
  [
    ("image_size", 0),
    ("image_size", 3.5),
    ("image_size", True),
    ("crop_area", (0.0, 1.0)),
    ("crop_area", (0.5, 0.2)),
    ("crop_area", (0.1, 1.5)),
    ("crop_area", "big"),
    ("crop_area", (0.05, 0.08)),  # reference sampler needs high >= 0.1
    ("crop_aspect", (0.0, 1.0)),
    ("crop_aspect", (2.0, 1.0)),
    ("crop_sampler", "bogus"),
    ("brightness", "bogus"),
    ("color_jitter_prob", 1.5),
    ("grayscale_prob", -0.1),
    ("blur_prob", 2.0),
    ("solarize_prob", 1.01),
    ("blur_sigma", "per_device"),
    ("blur_sigma", 1.0),
    ("color_jitter_strength", -0.1),
    ("color_jitter_strength", 1.5),
    ("flip", "yes"),
  ],
)
def test_config_rejects_bad_values(field, value):
  with pytest.raises(ValueError, match=field) as info:
    AugmentConfig(**dict({"image_size": 32}, **{field: value}))
  assert isinstance(info.value, UserError)


def test_config_normalises_sequences_and_is_hashable():
  config = AugmentConfig(32, crop_area=[0.2, 1], crop_aspect=np.array([1, 2]))
  assert config.crop_area == (0.2, 1.0)
  assert config.crop_aspect == (1.0, 2.0)
  assert hash(config) == hash(
    AugmentConfig(32, crop_area=(0.2, 1.0), crop_aspect=(1.0, 2.0))
  )


def test_presets(augment_off):
  simclr = augment.make_augment_config("simclr", 224)
  assert simclr == AugmentConfig(224)
  assert (simclr.color_jitter_strength, simclr.blur_prob) == (1.0, 0.5)
  assert simclr.blur_sigma == "per_image"
  cifar = augment.make_augment_config("simclr_cifar", 32)
  assert (cifar.color_jitter_strength, cifar.blur_prob) == (0.5, 0.0)
  assert augment.make_augment_config("simclr_v1", 224).brightness == "additive"
  crop_flip = augment.make_augment_config("crop_flip", 32)
  assert crop_flip.crop and crop_flip.flip
  assert crop_flip.color_jitter_prob == crop_flip.grayscale_prob == 0.0
  assert crop_flip.blur_prob == crop_flip.solarize_prob == 0.0
  none = augment.make_augment_config("none", 32)
  assert none == AugmentConfig(32, **augment_off)
  for name in ("simclr", "simclr_cifar", "simclr_v1", "crop_flip", "none"):
    assert augment.PRESETS[name](96).image_size == 96
  over = augment.make_augment_config(
    "simclr",
    64,
    blur_prob=0.0,
    crop_sampler="torchvision",
    blur_sigma="per_batch",
  )
  assert (
    over.blur_prob,
    over.crop_sampler,
    over.image_size,
    over.blur_sigma,
  ) == (0.0, "torchvision", 64, "per_batch")


def test_make_augment_config_errors():
  with pytest.raises(ValueError, match="simclr_cifar") as info:
    augment.make_augment_config("imagenet", 224)
  assert "crop_flip" in str(info.value) and "none" in str(info.value)
  with pytest.raises(ValueError, match="blur_radius"):  # unknown field
    augment.make_augment_config("simclr", 224, blur_radius=1.0)
  with pytest.raises(ValueError, match="blur_sigma"):  # bad value
    augment.make_augment_config("simclr", 224, blur_sigma=1.0)
  with pytest.raises(ValueError, match="blur_prob"):
    augment.make_augment_config("simclr", 224, blur_prob=3.0)


# ------------------------------------------------------- whole pipeline ---


def test_output_shape_dtype_range_and_input_dtypes(
  run_augment, random_uint8, augment_off
):
  images_u8 = random_uint8((8, 32, 32, 3))
  out_u8 = run_augment(_FULL, images_u8)
  assert out_u8.shape == (8, 32, 32, 3) and out_u8.dtype == np.float32
  assert out_u8.min() >= 0.0 and out_u8.max() <= 1.0
  out_f = run_augment(_FULL, images_u8.astype(np.float32) / 255.0)
  np.testing.assert_allclose(out_f, out_u8, atol=1e-5)
  # Non-square input of another size: resized to image_size.
  none = AugmentConfig(24, **augment_off)
  out = run_augment(none, random_uint8((2, 40, 56, 3)))
  assert out.shape == (2, 24, 24, 3) and out.dtype == np.float32
  assert out.min() >= 0.0 and out.max() <= 1.0


def test_determinism_by_key_and_per_example_independence(
  run_augment, random_uint8
):
  image = random_uint8((1, 32, 32, 3))
  images = np.repeat(image, 8, axis=0)
  a = run_augment(_FULL, images, seed=1)
  np.testing.assert_array_equal(a, run_augment(_FULL, images, seed=1))
  b = run_augment(_FULL, images, seed=2)
  assert np.abs(a - b).max() > 0.1
  # Copies of one image in one batch get different views.
  for i, j in itertools.combinations(range(8), 2):
    assert np.abs(a[i] - a[j]).max() > 1e-3, (i, j)


def test_batch_is_vmap_of_augment_image_with_split_keys(
  run_augment, random_uint8
):
  images = random_uint8((8, 32, 32, 3))
  key = jax.random.key(7)
  batch = run_augment(_FULL, images, seed=7)
  single = jax.jit(functools.partial(augment.augment_image, config=_FULL))
  for i, k in enumerate(jax.random.split(key, 8)):
    np.testing.assert_allclose(single(k, images[i]), batch[i], atol=1e-6)


def test_sharded_batch_under_jit(run_augment, random_uint8):
  # jax.make_mesh defaults to explicit sharding: the per-example keys must be
  # batch-sharded like the images for vmap to accept them.
  mesh = jax.make_mesh((8,), ("data",))
  sharding = jax.sharding.NamedSharding(
    mesh, jax.sharding.PartitionSpec("data")
  )
  images = random_uint8((8, 32, 32, 3))
  fn = jax.jit(functools.partial(augment.simclr_augment, config=_FULL))
  out = fn(jax.random.key(3), jax.device_put(images, sharding))
  np.testing.assert_allclose(
    np.asarray(out), run_augment(_FULL, images, 3), atol=1e-6
  )


def _smooth_images(n, size, seed):
  """Low-frequency colour images in [0.2, 0.8]: their bicubic crops do not
  overshoot [0, 1], so clipping cannot tell op orders apart."""
  rng = np.random.RandomState(seed)
  yy, xx = np.mgrid[0:size, 0:size] / size
  f = rng.uniform(0.5, 2.0, (n, 3, 2))
  phase = rng.uniform(0, 2 * np.pi, (n, 3))
  waves = np.sin(
    2 * np.pi * (f[..., 0, None, None] * yy + f[..., 1, None, None] * xx)
    + phase[..., None, None]
  )
  return (0.5 + 0.3 * waves).transpose(0, 2, 3, 1).astype(np.float32)


def test_op_order_is_crop_flip_jitter_grayscale_blur(run_augment, augment_off):
  # Ops of `full` (jitter and blur always on, so each fires) one at a time;
  # with the same key each draws the same randomness as in the pipeline.
  full = AugmentConfig(
    32, color_jitter_prob=1.0, grayscale_prob=0.5, blur_prob=1.0
  )
  one_op = {
    "crop": dict(augment_off, crop=True),
    "flip": dict(augment_off, flip=True),
    "jitter": dict(
      augment_off, color_jitter_strength=1.0, color_jitter_prob=1.0
    ),
    "gray": dict(augment_off, grayscale_prob=0.5),
    "blur": dict(augment_off, blur_prob=1.0),
  }

  def compose(order):
    out = images
    for op in order:
      out = run_augment(AugmentConfig(32, **one_op[op]), out, seed=5)
    return out

  images = _smooth_images(16, 32, seed=8)
  views = run_augment(full, images, seed=5)
  spec = ("crop", "flip", "jitter", "gray", "blur")
  np.testing.assert_allclose(views, compose(spec), atol=1e-5)
  # Any swap of two ops that do not commute changes the views. (Flip
  # commutes with the per-pixel ops and the symmetric blur, and grayscale
  # with the blur: both linear, on different axes; their order is moot.)
  for a, b in (
    ("crop", "flip"),
    ("jitter", "gray"),
    ("jitter", "blur"),
    ("crop", "jitter"),
    ("crop", "blur"),
  ):
    swapped = tuple({a: b, b: a}.get(op, op) for op in spec)
    assert np.abs(views - compose(swapped)).max() > 0.05, (a, b)


@pytest.mark.parametrize("op", ["grayscale", "blur"])
def test_crop_overshoot_is_clipped_only_before_the_blur(op, augment_off):
  # Red is a sharp 0/1 pattern, upsampled 16 -> 40 by a full-image crop: the
  # bicubic overshoots [0, 1]. The reference hands that overshoot to the
  # colour ops (grayscale here) and clips before its batch-level blur.
  rng = np.random.RandomState(0)
  image = np.full((16, 16, 3), 0.5, np.float32)
  image[..., 0] = np.kron(rng.randint(0, 2, (4, 4)), np.ones((4, 4)))
  fields = dict(
    augment_off,
    crop=True,
    crop_area=(1.0, 1.0),
    crop_aspect=(1.0, 1.0),
    blur_sigma="per_batch",
  )
  fields["grayscale_prob" if op == "grayscale" else "blur_prob"] = 1.0
  config = AugmentConfig(40, **fields)
  sigma = jnp.float32(1.0) if op == "blur" else None
  got = jax.jit(functools.partial(augment.augment_image, config=config))(
    jax.random.key(0), image, batch_sigma=sigma
  )
  crop = jax.image.resize(image, (40, 40, 3), "cubic", antialias=False)
  assert crop.max() > 1.02 and crop.min() < -0.02  # there is overshoot
  clip = lambda x: jnp.clip(x, 0.0, 1.0)
  if op == "grayscale":
    gray = lambda x: pix.rgb_to_grayscale(x, keep_dims=True)
    want, clipped_first = clip(gray(crop)), clip(gray(clip(crop)))
  else:
    blur = lambda x: color._gaussian_blur(
      x, sigma, augment.blur_kernel_size(40)
    )
    want, clipped_first = clip(blur(clip(crop))), clip(blur(crop))
  np.testing.assert_allclose(got, want, atol=1e-5)
  assert np.abs(want - clipped_first).max() > 0.01  # the order is visible
