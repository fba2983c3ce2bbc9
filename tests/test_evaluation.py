"""kNN and linear probe against brute-force references."""

import jax
import numpy as np

from simclr_jax import evaluation


def _brute_knn(train_x, train_y, test_x, k, temperature, num_classes):
  def norm(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)

  sims = norm(test_x) @ norm(train_x).T
  preds = []
  for row in sims:
    idx = np.argsort(-row)[:k]
    votes = np.zeros(num_classes)
    for i in idx:
      votes[train_y[i]] += np.exp(row[i] / temperature)
    preds.append(np.argmax(votes))
  return np.array(preds)


def test_knn_matches_brute_force():
  rng = np.random.default_rng(0)
  centers = rng.normal(size=(5, 16))
  train_y = rng.integers(0, 5, 300)
  test_y = rng.integers(0, 5, 70)
  train_x = centers[train_y] + 1.5 * rng.normal(size=(300, 16))
  test_x = centers[test_y] + 1.5 * rng.normal(size=(70, 16))
  for k, t in ((20, 0.1), (200, 0.5), (1, 1.0)):
    expected = (_brute_knn(train_x, train_y, test_x, k, t, 5) == test_y).mean()
    got = evaluation.knn_accuracy(
      train_x,
      train_y,
      test_x,
      test_y,
      num_classes=5,
      k=k,
      temperature=t,
      chunk=32,
    )
    assert abs(got - expected) < 1e-9, (k, t, got, expected)
  assert 0.3 < got <= 1.0


def test_knn_k_larger_than_bank():
  x = np.eye(3, dtype=np.float32)
  y = np.arange(3)
  assert (
    evaluation.knn_accuracy(x, y, x, y, num_classes=3, k=200, temperature=0.01)
    == 1.0
  )


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
