"""`encoder.load_encoder`: one call from a run directory to features."""

import numpy as np
import pytest

from simclr_jax import encoder as encoder_lib
from simclr_jax import pretrained
from simclr_jax.eval import features as features_lib
from helpers import snapshot


@pytest.fixture(scope="module")
def enc(tiny_run):
  return encoder_lib.load_encoder(tiny_run)


def _images(n, size=16, seed=0):
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_features_are_the_evaluation_features(enc, tiny_run):
  images = _images(19)  # not a multiple of the 8 devices
  got = enc(images)
  p = pretrained.load_pretrained(tiny_run)
  fn = features_lib.make_feature_fn(p.model, p.mesh, p.image_size)
  padded = np.concatenate([images, np.zeros_like(images[:5])])
  want = np.asarray(fn(p.variables, padded))[:19]
  assert got.shape == (19, want.shape[1]) and got.dtype == np.float32
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # Batch size and padding do not change a row; floats in [0, 1] are the
  # same images.
  np.testing.assert_allclose(
    enc(images, batch_size=8), got, rtol=1e-5, atol=1e-5
  )
  np.testing.assert_allclose(
    enc(images.astype(np.float32) / 255), got, rtol=1e-5, atol=1e-5
  )
  np.testing.assert_allclose(enc(images[3]), got[3], rtol=1e-5, atol=1e-5)


def test_projection_and_properties(enc, tiny_run):
  proj = enc(_images(4), projection=True)
  assert proj.shape == (4, 16)  # tiny_config's proj_out_dim
  assert enc.image_size == 16 and enc.step == 2
  assert not np.allclose(proj, enc(_images(4))[:, :16])


def test_other_sizes_are_cropped_and_resized(enc):
  assert enc(_images(3, size=40)).shape == enc(_images(3)).shape


def test_bad_images_and_untouched_run(enc, tiny_run):
  before = snapshot(tiny_run)
  with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
    enc(np.zeros((2, 16, 16), np.uint8))
  encoder_lib.load_encoder(tiny_run)
  assert snapshot(tiny_run) == before
