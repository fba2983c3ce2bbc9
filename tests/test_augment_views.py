"""Per-example view keys and symmetric / asymmetric view settings."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simclr_jax import augment
from simclr_jax.augment import views
from simclr_jax.errors import UserError


def test_example_keys_independent_of_batch_size():
  key = jax.random.PRNGKey(3)
  keys = np.asarray(views.example_keys(key, 8))
  assert keys.shape[:2] == (8, 2)
  np.testing.assert_array_equal(
    keys, np.asarray(views.example_keys(key, 16))[:8]
  )
  assert len({k.tobytes() for k in keys.reshape(16, -1)}) == 16


def test_two_views_interleaves_examples():
  images = jnp.stack([jnp.full((16, 16, 3), v, jnp.uint8) for v in (0, 255)])
  cfg = augment.AugmentConfig(
    image_size=16, color_jitter_strength=0.0, grayscale_prob=0.0, blur_prob=0.0
  )
  out = views.two_views(jax.random.PRNGKey(0), images, (cfg, cfg))
  assert out.shape == (4, 16, 16, 3)
  np.testing.assert_allclose(
    np.asarray(out.mean(axis=(1, 2, 3))), [0, 0, 1, 1], atol=1e-3
  )


def test_symmetric_is_the_reference_default():
  cfg = augment.AugmentConfig(image_size=32)
  assert views.view_configs(cfg) == (cfg, cfg)


def test_byol_views():
  cfg = augment.AugmentConfig(image_size=32)
  v1, v2 = views.view_configs(cfg, "byol")
  assert (v1.blur_prob, v1.solarize_prob) == (1.0, 0.0)
  assert (v2.blur_prob, v2.solarize_prob) == (0.1, 0.2)
  assert v1.color_jitter_strength == v2.color_jitter_strength == 1.0


def test_byol_view_two_solarizes_and_view_one_does_not():
  # Crop/flip/jitter/blur off: only solarize can change a bright image.
  base = augment.AugmentConfig(
    image_size=8,
    crop=False,
    flip=False,
    color_jitter_prob=0.0,
    grayscale_prob=0.0,
    blur_prob=0.0,
  )
  v1, v2 = views.view_configs(base, "byol")
  v1 = augment.AugmentConfig(**{**v1.__dict__, "blur_prob": 0.0})
  images = jnp.full((400, 8, 8, 3), 230, jnp.uint8)
  out = np.asarray(views.two_views(jax.random.PRNGKey(1), images, (v1, v2)))
  first, second = out[0::2], out[1::2]
  assert np.all(first > 0.5)
  solarized = (second < 0.5).all(axis=(1, 2, 3)).mean()
  assert 0.12 < solarized < 0.28


def test_unknown_asymmetric_name():
  with pytest.raises(UserError, match="asymmetric='simsiam' is unknown"):
    views.view_configs(augment.AugmentConfig(image_size=32), "simsiam")


def test_batch_key_is_no_example_key():
  key = jax.random.PRNGKey(5)
  batch = np.asarray(augment.batch_key(key)).tobytes()
  examples = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(4096))
  assert batch not in {k.tobytes() for k in np.asarray(examples)}


def test_per_batch_sigma_views_ignore_batch_size_and_device_split():
  # Full views with a shared per-view sigma: the first 8 examples of a
  # 16-example batch get the views they get alone, and 8 devices give the
  # views of one.
  # (Jitter off to keep it cheap; 24 px gives a 3-tap blur.)
  cfg = augment.AugmentConfig(
    image_size=24, color_jitter_prob=0.0, blur_prob=0.5, blur_sigma="per_batch"
  )
  assert (
    views.batch_blur_sigmas(
      jax.random.PRNGKey(0), (cfg, augment.AugmentConfig(image_size=24))
    )[1]
    is None
  )
  images = np.random.default_rng(0).integers(0, 256, (16, 24, 24, 3), np.uint8)
  fn = jax.jit(lambda k, x: views.two_views(k, x, (cfg, cfg)))
  key = jax.random.PRNGKey(2)
  whole = np.asarray(fn(key, images))
  np.testing.assert_allclose(
    np.asarray(fn(key, images[:8])), whole[:16], atol=1e-6
  )
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
  sharded = jax.device_put(
    images, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  )
  # The 8-device program is compiled apart from the 1-device one and may
  # order float sums differently (seen: 2.4e-6 with XLA's quick-compile
  # mode); a wrong key or sigma moves pixels by more than 1e-2.
  np.testing.assert_allclose(np.asarray(fn(key, sharded)), whole, atol=1e-5)
