"""kNN and linear probe against brute-force references."""

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
    got = evaluation.knn_accuracy(train_x, train_y, test_x, test_y,
                                  num_classes=5, k=k, temperature=t, chunk=32)
    assert abs(got - expected) < 1e-9, (k, t, got, expected)
  assert 0.3 < got <= 1.0


def test_knn_k_larger_than_bank():
  x = np.eye(3, dtype=np.float32)
  y = np.arange(3)
  assert evaluation.knn_accuracy(x, y, x, y, num_classes=3, k=200,
                                 temperature=0.01) == 1.0


def test_linear_probe_separates_separable_features():
  rng = np.random.default_rng(1)
  w = rng.normal(size=(32, 4))
  x = rng.normal(size=(600, 32)).astype(np.float32)
  y = np.argmax(x @ w, axis=1)
  acc = evaluation.linear_probe_accuracy(x[:500], y[:500], x[500:], y[500:],
                                         num_classes=4, steps=300)
  assert acc > 0.9


def test_linear_probe_near_chance_on_noise():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(800, 8)).astype(np.float32)
  y = rng.integers(0, 4, 800)
  acc = evaluation.linear_probe_accuracy(x[:600], y[:600], x[600:], y[600:],
                                         num_classes=4, steps=200)
  assert acc < 0.45
