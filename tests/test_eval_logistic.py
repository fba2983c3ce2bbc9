"""L-BFGS softmax-regression probe with a validated L2 search."""

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from simclr_jax.eval import logistic as probe
from simclr_jax.errors import UserError


def _separable(seed, n, dim=16, classes=6, scale=5.0):
  rng = np.random.default_rng(seed)
  w = rng.normal(size=(dim, classes))
  # Features with an offset and uneven scales: standardisation must cope.
  z = rng.normal(size=(n, dim))
  x = z * rng.uniform(0.1, 10.0, dim) + scale
  y = np.argmax(z @ w, axis=1)
  return x.astype(np.float32), y.astype(np.int32)


def test_separable_features_reach_almost_perfect_accuracy():
  x, y = _separable(0, 2400)
  out = probe.linear_probe(
    x[:2000], y[:2000], x[2000:], y[2000:], num_classes=6
  )
  assert out["top1"] >= 0.97, out
  assert out["top5"] >= out["top1"]
  assert out["val_top1"] >= 0.9
  assert set(out["val_top1_by_l2"]) == set(probe.L2_GRID)
  assert out["iterations"] > 1


def _small(seed, classes=6):
  """403 training rows (not a multiple of 8: padded on the mesh), 100 test."""
  x, y = _separable(seed, 503, classes=classes)
  return x[:403], y[:403], x[403:], y[403:]


def test_search_picks_the_best_validation_strength_and_prefers_stronger():
  out = probe.linear_probe(
    *_small(1), num_classes=6, l2_grid=(1e-4, 1e-2, 1.0, 10.0)
  )
  curve = out["val_top1_by_l2"]
  best = max(curve.values())
  assert out["val_top1"] == best
  # Ties go to the strongest of the tied values.
  assert out["l2"] == max(l2 for l2, acc in curve.items() if acc == best)
  assert curve[10.0] < best  # far too strong a penalty is worse


def test_noisy_features_choose_a_stronger_penalty_than_clean_ones():
  rng = np.random.default_rng(2)
  dim, classes = 64, 3
  w = rng.normal(size=(dim, classes))
  # Clean: labels a linear function of all features.
  x = rng.normal(size=(800, dim)).astype(np.float32)
  y = np.argmax(x @ w, 1)
  clean = probe.linear_probe(
    x[:600], y[:600], x[600:], y[600:], num_classes=classes
  )
  # Noisy: weak signal in one feature, 63 features of pure noise.
  y = rng.integers(0, classes, 800)
  x = rng.normal(size=(800, dim)).astype(np.float32)
  x[:, 0] += 0.7 * y
  noisy = probe.linear_probe(
    x[:600], y[:600], x[600:], y[600:], num_classes=classes
  )
  assert noisy["l2"] > clean["l2"], (noisy, clean)
  assert clean["top1"] > 0.9 and noisy["top1"] < 0.6


def test_deterministic():
  runs = [
    probe.linear_probe(*_small(3), num_classes=6, l2_grid=(1e-3, 1e-1))
    for _ in range(2)
  ]
  assert runs[0] == runs[1]


def test_rows_split_over_the_mesh_give_the_same_answer():
  data = _small(4)
  one = probe.linear_probe(*data, num_classes=6, l2_grid=(1e-3, 1e-1))
  mesh = Mesh(np.array(jax.devices()), ("data",))
  many = probe.linear_probe(
    *data, num_classes=6, l2_grid=(1e-3, 1e-1), mesh=mesh
  )
  assert one["l2"] == many["l2"]
  assert abs(one["top1"] - many["top1"]) <= 0.01 + 1e-9


def test_fixed_strength_needs_no_validation_split():
  out = probe.fit_logistic_regression(*_small(5), num_classes=6, l2=1e-2)
  assert out["l2"] == 1e-2 and out["val_top1"] is None
  assert out["val_top1_by_l2"] == {} and out["top1"] > 0.8


def test_stratified_split():
  labels = np.repeat(np.arange(4), [10, 20, 31, 1])
  fit, val = probe.stratified_split(labels, 0.1, seed=0)
  assert np.intersect1d(fit, val).size == 0
  assert np.array_equal(np.sort(np.concatenate([fit, val])), np.arange(62))
  assert [int((labels[val] == c).sum()) for c in range(4)] == [1, 2, 3, 0]
  again, _ = probe.stratified_split(labels, 0.1, seed=0)
  other, _ = probe.stratified_split(labels, 0.1, seed=1)
  assert np.array_equal(fit, again) and not np.array_equal(fit, other)


def test_errors():
  x = np.zeros((3, 2), np.float32)
  y = np.array([0, 1, 2])
  with pytest.raises(UserError, match="validation split is empty"):
    probe.linear_probe(x, y, x, y, num_classes=3)
  with pytest.raises(UserError, match="L2 grid"):
    probe.linear_probe(x, y, x, y, num_classes=3, l2_grid=(0.0,))
  with pytest.raises(UserError, match="fraction"):
    probe.stratified_split(y, 1.5, seed=0)
