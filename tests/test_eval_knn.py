"""Chunked on-device kNN against a brute-force numpy reference."""

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from simclr_jax.eval import knn
from simclr_jax.errors import UserError


def _norm(x):
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def _brute_rankings(bank, bank_y, queries, k, temperature, num_classes):
  """Top-5 class rankings of temperature-weighted cosine kNN, in float64."""
  sims = _norm(queries.astype(np.float64)) @ _norm(bank.astype(np.float64)).T
  out = []
  for row in sims:
    idx = np.argsort(-row, kind="stable")[:k]
    votes = np.zeros(num_classes)
    np.add.at(
      votes, bank_y[idx], np.exp((row[idx] - row[idx].max()) / temperature)
    )
    out.append(np.argsort(-votes, kind="stable")[:5])
  return np.array(out)


def _clusters(seed, n_bank, n_query, dim=16, classes=7, noise=1.5):
  rng = np.random.default_rng(seed)
  centers = rng.normal(size=(classes, dim))
  bank_y = rng.integers(0, classes, n_bank).astype(np.int32)
  query_y = rng.integers(0, classes, n_query).astype(np.int32)
  bank = centers[bank_y] + noise * rng.normal(size=(n_bank, dim))
  queries = centers[query_y] + noise * rng.normal(size=(n_query, dim))
  return (bank.astype(np.float32), bank_y, queries.astype(np.float32), query_y)


@pytest.mark.parametrize(
  "query_chunk,bank_chunk",
  [
    (64, 1000),  # one bank chunk holds everything
    (24, 37),  # bank size not a multiple of the chunk; padded queries
    (16, 5),  # bank chunk much smaller than k
  ],
)
def test_search_matches_brute_force(query_chunk, bank_chunk):
  bank, _, queries, _ = _clusters(0, 301, 53)
  sims, idx = knn.knn_search(
    bank, queries, k=20, query_chunk=query_chunk, bank_chunk=bank_chunk
  )
  exact = _norm(queries.astype(np.float64)) @ _norm(bank.astype(np.float64)).T
  expected = np.argsort(-exact, axis=1, kind="stable")[:, :20]
  assert idx.shape == (53, 20) and sims.shape == (53, 20)
  np.testing.assert_array_equal(idx, expected)
  np.testing.assert_allclose(
    sims, np.take_along_axis(exact, expected, 1), atol=1e-5
  )


def test_classify_matches_brute_force_for_several_k():
  bank, bank_y, queries, query_y = _clusters(1, 257, 70)
  preds = knn.knn_predict(
    bank,
    bank_y,
    queries,
    num_classes=7,
    ks=(200, 20, 1),
    temperature=0.1,
    query_chunk=32,
    bank_chunk=50,
  )
  for k in (200, 20, 1):
    expected = _brute_rankings(bank, bank_y, queries, k, 0.1, 7)
    # Zero-vote classes tie at 0 and rank by class id in both.
    np.testing.assert_array_equal(preds[k], expected)
  scores = knn.knn_classify(
    bank,
    bank_y,
    queries,
    query_y,
    num_classes=7,
    ks=(200, 20),
    query_chunk=32,
    bank_chunk=50,
  )
  assert set(scores) == {
    "knn_k200_top1",
    "knn_k200_top5",
    "knn_k20_top1",
    "knn_k20_top5",
  }
  for k in (200, 20):
    expected = _brute_rankings(bank, bank_y, queries, k, 0.1, 7)
    assert scores[f"knn_k{k}_top1"] == pytest.approx(
      (expected[:, 0] == query_y).mean()
    )
    assert scores[f"knn_k{k}_top5"] >= scores[f"knn_k{k}_top1"]
  assert 0.4 < scores["knn_k20_top1"] < 1.0  # informative, not trivial


def test_k_larger_than_bank_uses_whole_bank():
  bank, bank_y, queries, query_y = _clusters(3, 12, 30, classes=3)
  scores = knn.knn_classify(
    bank, bank_y, queries, query_y, num_classes=3, ks=(200, 12), bank_chunk=5
  )
  assert scores["knn_k200_top1"] == scores["knn_k12_top1"]
  expected = _brute_rankings(bank, bank_y, queries, 12, 0.1, 3)[:, 0]
  assert scores["knn_k200_top1"] == pytest.approx((expected == query_y).mean())
  # Fewer than 5 classes: top-5 covers every class.
  assert scores["knn_k200_top5"] == 1.0
  # The search returns the whole bank in order; zero padding never enters.
  _, idx = knn.knn_search(bank, queries, k=200, bank_chunk=5)
  exact = _norm(queries.astype(np.float64)) @ _norm(bank.astype(np.float64)).T
  np.testing.assert_array_equal(idx, np.argsort(-exact, axis=1, kind="stable"))


def test_tiny_temperature_does_not_overflow():
  x = np.eye(3, dtype=np.float32)
  y = np.arange(3)
  scores = knn.knn_classify(
    x, y, x, y, num_classes=3, ks=(3,), temperature=1e-3
  )
  assert scores["knn_k3_top1"] == 1.0


def test_sharded_queries_and_device_inputs_give_the_same_answer():
  bank, bank_y, queries, query_y = _clusters(4, 200, 45)
  host = knn.knn_predict(
    bank,
    bank_y,
    queries,
    num_classes=7,
    ks=(20,),
    query_chunk=16,
    bank_chunk=64,
  )
  mesh = Mesh(np.array(jax.devices()), ("data",))
  sharded = knn.knn_predict(
    jax.numpy.asarray(bank),
    jax.numpy.asarray(bank_y),
    jax.numpy.asarray(queries),
    num_classes=7,
    ks=(20,),
    query_chunk=16,
    bank_chunk=64,
    mesh=mesh,
  )
  np.testing.assert_array_equal(host[20], sharded[20])


def test_bad_inputs_raise_clear_errors():
  x = np.ones((4, 3), np.float32)
  with pytest.raises(UserError, match="non-empty"):
    knn.knn_classify(x[:0], np.zeros(0), x, np.zeros(4), num_classes=2)
  with pytest.raises(UserError, match="temperature"):
    knn.knn_classify(
      x, np.zeros(4), x, np.zeros(4), num_classes=2, temperature=0.0
    )
  with pytest.raises(ValueError, match="D"):
    knn.knn_search(x, np.ones((4, 5), np.float32), k=2)


def _brute_weighted_knn(train_x, train_y, test_x, k, temperature, num_classes):
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
    expected = (
      _brute_weighted_knn(train_x, train_y, test_x, k, t, 5) == test_y
    ).mean()
    got = knn.knn_classify(
      train_x,
      train_y,
      test_x,
      test_y,
      num_classes=5,
      ks=(k,),
      temperature=t,
      query_chunk=32,
    )[f"knn_k{k}_top1"]
    assert abs(got - expected) < 1e-9, (k, t, got, expected)
  assert 0.3 < got <= 1.0


def test_knn_k_larger_than_bank():
  x = np.eye(3, dtype=np.float32)
  y = np.arange(3)
  got = knn.knn_classify(x, y, x, y, num_classes=3, ks=(200,), temperature=0.01)
  assert got["knn_k200_top1"] == 1.0
