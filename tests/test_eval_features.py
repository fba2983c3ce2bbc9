"""Feature extraction, the pixel baseline and BN recalibration."""

import jax
import numpy as np

from simclr_jax.eval import features as evaluation


def test_pixel_features_are_the_flattened_eval_view():
  mesh = jax.make_mesh(
    (8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,)
  )
  images = np.random.default_rng(0).integers(0, 256, (8, 4, 4, 3), np.uint8)
  got = evaluation.make_pixel_fn(mesh, 4)(None, images)
  np.testing.assert_allclose(got, images.reshape(8, -1) / 255.0, rtol=1e-6)


def test_recalibrated_stats_are_the_mean_of_full_batch_stats():
  import jax
  from jax.sharding import Mesh

  from simclr_jax import models

  model = models.SimCLRModel(
    backbone=models.ResNet(depth=18, width_multiplier=0.125, cifar_stem=True),
    projection_head=models.ProjectionHead(num_layers=2, out_dim=8),
    num_classes=0,
  )
  variables = jax.jit(
    lambda k: model.init(k, np.zeros((2, 8, 8, 3), np.float32), train=False)
  )(jax.random.PRNGKey(0))
  mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
  rng = np.random.default_rng(0)
  full = [
    {
      "image": rng.integers(0, 256, (8, 8, 8, 3), np.uint8),
      "label": np.zeros(8, np.int32),
      "mask": np.ones(8, bool),
    }
    for _ in range(2)
  ]
  padded = {
    "image": np.zeros((8, 8, 8, 3), np.uint8),
    "label": np.zeros(8, np.int32),
    "mask": np.arange(8) < 3,
  }
  out = evaluation.recalibrate_batch_stats(
    model, variables, [dict(b) for b in full] + [padded], mesh, 8
  )
  stem_mean = out["batch_stats"]["backbone"]["stem_bn"]["mean"]
  # First-layer BN input is the stem conv of the raw images: its mean is the
  # average of the two full batches' means, independent of the init (0).
  singles = [
    evaluation.recalibrate_batch_stats(model, variables, [dict(b)], mesh, 8)[
      "batch_stats"
    ]["backbone"]["stem_bn"]["mean"]
    for b in full
  ]
  np.testing.assert_allclose(
    stem_mean, (singles[0] + singles[1]) / 2, rtol=1e-5, atol=1e-6
  )
  assert float(np.abs(stem_mean).max()) > 0


def test_extract_features_stops_reading_at_max_examples():
  import jax
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

  mesh = Mesh(np.array(jax.devices()[:2]), ("data",))
  sharding = NamedSharding(mesh, P("data"))
  read = []

  def batches():
    for i in range(5):
      read.append(i)
      yield {
        "image": np.full((4, 2, 2, 3), i, np.uint8),
        "label": np.full((4,), i, np.int32),
        "mask": np.ones(4, bool),
      }

  fn = jax.jit(lambda v, im: im.reshape(im.shape[0], -1).astype(np.float32))
  x, y = evaluation.extract_features(
    fn, {}, batches(), sharding, max_examples=6
  )
  assert x.shape == (6, 12) and list(y) == [0, 0, 0, 0, 1, 1]
  assert read == [0, 1]  # the last three batches were never decoded
  x, _ = evaluation.extract_features(fn, {}, batches(), sharding)
  assert x.shape == (20, 12)
