"""Cosine k-nearest-neighbour classification with bounded device memory.

Built for ImageNet-sized banks (1.28M x 2048 features): the bank never has to
be on the device as a whole. It is streamed in fixed-size chunks (from host
numpy or from a device array) while the queries stay on device, split into
fixed-size query chunks; for every bank chunk one jitted call updates a
running top-k per query, so peak working memory is
O(query_chunk x (bank_chunk + k)) per step, plus the queries themselves and
their (Q, k) running top-k. Every chunk is padded to the same shape, so the
whole search compiles once. With a `mesh`, each query chunk is split over
all mesh devices (the bank chunk is replicated), so devices share the work.

Votes follow the weighted kNN classifier of InstDisc (Wu et al., 2018,
"Unsupervised Feature Learning via Non-Parametric Instance Discrimination"),
widely used as a monitor by later self-supervised work: each of the k
nearest bank items (cosine similarity) votes for its label with weight
exp(similarity / temperature). Neither the SimCLR papers nor the SimCLR
code evaluate with kNN; this is an addition, not a SimCLR protocol. Several
k are answered from a single top-max(k) search, since the top-k of a query
is a prefix of its top-max(k).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding

from simclr_jax import sharding
from simclr_jax.eval import features
from simclr_jax.eval.base import EvalContext, EvalResult, FeatureEvaluator
from simclr_jax.eval.base import Features

from simclr_jax.configlib.sections import KnnSettings, RunConfig
from simclr_jax.errors import UserError


ArrayLike = Any  # numpy array (host) or jax.Array


def _normalize(x: jnp.ndarray) -> jnp.ndarray:
  x = x.astype(jnp.float32)
  return x / (jnp.linalg.norm(x, axis=-1, keepdims=True) + 1e-12)


def _put_rows(
  x: ArrayLike, rows: int, shape: tuple[int, ...], where: NamedSharding
) -> jax.Array:
  """Features `x` as float32, zero-padded to `rows` rows, reshaped to
  `shape` and placed with `where`."""
  if isinstance(x, jax.Array):
    x = x.astype(jnp.float32)
  else:
    x = np.asarray(x, np.float32)
  return sharding.put_rows(x, rows, where, shape)


def _search(
  bank: ArrayLike,
  queries: ArrayLike,
  k: int,
  query_chunk: int,
  bank_chunk: int,
  mesh: Mesh | None,
  precision: Any,
) -> tuple[jax.Array, jax.Array, Mesh]:
  """Device top-k: sims and bank indices, each (n_query_chunks, chunk, k)."""
  n, q = int(bank.shape[0]), int(queries.shape[0])
  if n == 0 or q == 0:
    raise UserError(
      f"kNN needs a non-empty bank and query set; got {n} bank "
      f"and {q} query examples. Check the evaluation splits."
    )
  if bank.ndim != 2 or queries.ndim != 2 or bank.shape[1] != queries.shape[1]:
    raise ValueError(
      f"kNN expects (N, D) bank and (Q, D) queries, got "
      f"{bank.shape} and {queries.shape}"
    )
  if query_chunk < 1 or bank_chunk < 1 or k < 1:
    raise ValueError(
      f"query_chunk, bank_chunk and k must be >= 1, got "
      f"{query_chunk}, {bank_chunk}, {k}"
    )
  mesh = mesh or sharding.local_mesh()
  k = min(k, n)
  devices = mesh.size
  # Query chunks: a multiple of the device count, no bigger than needed.
  query_chunk = min(query_chunk, q)
  query_chunk = -(-query_chunk // devices) * devices
  num_q = -(-q // query_chunk)
  bank_chunk = min(bank_chunk, n)
  dim = int(queries.shape[1])
  split = sharding.batch_sharding(mesh, dim=1)
  replicated = sharding.replicated(mesh)

  qs = _put_rows(queries, num_q * query_chunk, (num_q, query_chunk, dim), split)
  qs = jax.jit(_normalize, out_shardings=split)(qs)

  def merge(top_s, top_i, qs, chunk, offset, valid):
    chunk = _normalize(chunk)
    columns = jnp.arange(bank_chunk, dtype=jnp.int32)
    keep = columns < valid

    def one(args):
      s, i, qc = args
      sims = jnp.matmul(qc, chunk.T, precision=precision)
      sims = jnp.where(keep, sims, -jnp.inf)
      ids = jnp.broadcast_to(offset + columns, sims.shape)
      # Running entries first: on equal similarity the earlier bank index
      # stays ahead, like a stable sort over the whole bank.
      best, pos = jax.lax.top_k(jnp.concatenate([s, sims], -1), k)
      return best, jnp.take_along_axis(jnp.concatenate([i, ids], -1), pos, -1)

    return jax.lax.map(one, (top_s, top_i, qs))

  merge = jax.jit(
    merge,
    donate_argnums=(0, 1),
    in_shardings=(split, split, split, replicated, replicated, replicated),
    out_shardings=(split, split),
  )
  shape = (num_q, query_chunk, k)
  top_s, top_i = jax.jit(
    lambda: (
      jnp.full(shape, -jnp.inf, jnp.float32),
      jnp.full(shape, -1, jnp.int32),
    ),
    out_shardings=(split, split),
  )()
  for start in range(0, n, bank_chunk):
    chunk = bank[start : start + bank_chunk]
    valid = int(chunk.shape[0])
    chunk = _put_rows(chunk, bank_chunk, (bank_chunk, dim), replicated)
    top_s, top_i = merge(
      top_s, top_i, qs, chunk, np.int32(start), np.int32(valid)
    )
  return top_s, top_i, mesh


def knn_search(
  bank: ArrayLike,
  queries: ArrayLike,
  *,
  k: int,
  query_chunk: int = 1024,
  bank_chunk: int = 16384,
  mesh: Mesh | None = None,
  precision: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
  """Exact cosine top-k: host (similarities, bank indices), each (Q, k').

  k' = min(k, N). Rows are sorted by decreasing similarity; equal
  similarities keep bank order. `precision` goes to the similarity matmul
  (None: JAX's default, which on TPU/GPU may use bf16/tf32 passes; "highest"
  for full float32).
  """
  top_s, top_i, _ = _search(
    bank, queries, k, query_chunk, bank_chunk, mesh, precision
  )
  q, kk = int(queries.shape[0]), top_s.shape[-1]
  gather = jax.jit(
    lambda a: a, out_shardings=sharding.replicated(top_s.sharding.mesh)
  )
  sims = np.asarray(gather(top_s)).reshape(-1, kk)[:q]
  idx = np.asarray(gather(top_i)).reshape(-1, kk)[:q]
  return sims, idx


def knn_predict(
  bank: ArrayLike,
  bank_labels: ArrayLike,
  queries: ArrayLike,
  *,
  num_classes: int,
  ks: Sequence[int] = (200, 20),
  temperature: float = 0.1,
  num_top: int = 5,
  query_chunk: int = 1024,
  bank_chunk: int = 16384,
  mesh: Mesh | None = None,
  precision: Any = None,
) -> dict[int, np.ndarray]:
  """Class rankings per k: {k: (Q, min(num_top, C)) int32}, best class first.

  One search for max(ks) serves every k. Votes are exp((s - s_max) / T):
  the shift by each query's best similarity changes no ranking but keeps a
  small temperature from overflowing float32. Tied votes rank the lower
  class first.
  """
  if not ks or min(ks) < 1:
    raise ValueError(f"ks must be a non-empty list of k >= 1, got {ks}")
  if temperature <= 0:
    raise UserError(f"the kNN temperature must be > 0, got {temperature}.")
  if num_classes < 1:
    raise ValueError(f"num_classes must be >= 1, got {num_classes}")
  top_s, top_i, mesh = _search(
    bank, queries, max(ks), query_chunk, bank_chunk, mesh, precision
  )
  replicated = sharding.replicated(mesh)
  if isinstance(bank_labels, jax.Array):
    labels = jax.device_put(bank_labels, replicated)
  else:
    host = np.asarray(bank_labels, np.int32)
    labels = sharding.put_rows(host, host.shape[0], replicated)
  kmax = top_s.shape[-1]
  ks = sorted({min(k, kmax) for k in ks})
  ranked = min(num_top, num_classes)

  def vote(top_s, top_i, labels):
    def one(args):
      s, i = args
      lab = labels[jnp.maximum(i, 0)].astype(jnp.int32)
      w = jnp.exp((s - s[:, :1]) / temperature)
      out = []
      for k in ks:
        votes = jax.vmap(lambda l, v: jnp.zeros(num_classes).at[l].add(v))(
          lab[:, :k], w[:, :k]
        )
        out.append(jax.lax.top_k(votes, ranked)[1].astype(jnp.int32))
      return out

    return jax.lax.map(one, (top_s, top_i))

  preds = jax.jit(vote, out_shardings=replicated)(top_s, top_i, labels)
  q = int(queries.shape[0])
  return {k: np.asarray(p).reshape(-1, ranked)[:q] for k, p in zip(ks, preds)}


def knn_classify(
  bank: ArrayLike,
  bank_labels: ArrayLike,
  queries: ArrayLike,
  query_labels: ArrayLike,
  *,
  num_classes: int,
  ks: Sequence[int] = (200, 20),
  temperature: float = 0.1,
  query_chunk: int = 1024,
  bank_chunk: int = 16384,
  mesh: Mesh | None = None,
  precision: Any = None,
) -> dict[str, float]:
  """kNN top-1 and top-5 accuracy of the queries, for every k in `ks`.

  Returns {"knn_k200_top1": ..., "knn_k200_top5": ..., "knn_k20_top1": ...}
  keyed by the requested k (a k above the bank size uses the whole bank).
  Defaults: k = 200 and 20, temperature 0.1. k = 200 is InstDisc's setting
  (which weighted by its training temperature, 0.07); 0.1 is a common
  later choice.
  """
  effective = {k: min(k, int(bank.shape[0])) for k in ks}
  preds = knn_predict(
    bank,
    bank_labels,
    queries,
    num_classes=num_classes,
    ks=list(ks),
    temperature=temperature,
    query_chunk=query_chunk,
    bank_chunk=bank_chunk,
    mesh=mesh,
    precision=precision,
  )
  y = np.asarray(query_labels).reshape(-1, 1)
  out = {}
  for k in ks:
    p = preds[effective[k]]
    out[f"knn_k{k}_top1"] = float((p[:, :1] == y).any(-1).mean())
    out[f"knn_k{k}_top5"] = float((p == y).any(-1).mean())
  return out


class KnnEvaluator(FeatureEvaluator):
  """Weighted cosine kNN of eval-split features against a train-split bank."""

  def __init__(
    self, settings: KnnSettings, ctx: EvalContext, feature_fn: Callable
  ):
    super().__init__(ctx, feature_fn, settings.max_train_examples)
    self.settings = settings
    self._warned = False

  def _warn_if_k_exceeds(self, bank: int) -> None:
    """A k above the bank size votes with the whole bank, under its own
    name; say so once, with the fix, rather than refuse the run."""
    big = [k for k in self.settings.ks if k > bank]
    if big and not self._warned:
      self._warned = True
      self.ctx.print(
        f"warning: config.eval.knn_ks asks for k={', '.join(map(str, big))}"
        f" but the kNN bank has {bank:,} training images, so "
        f"knn_k{big[0]}_* vote with all {bank:,}; set config.eval.knn_ks "
        f"to values <= {bank:,} for distinct results."
      )

  def score(self, train: Features, test: Features) -> EvalResult:
    self._warn_if_k_exceeds(len(train[0]))
    metrics = knn_classify(
      *train,
      *test,
      num_classes=self.ctx.num_classes,
      ks=self.settings.ks,
      temperature=self.settings.temperature,
      mesh=self.ctx.mesh,
    )
    return EvalResult(
      metrics,
      {"bank_size": len(train[0]), "temperature": self.settings.temperature},
    )


def from_config(run: RunConfig, ctx: EvalContext, model: Any) -> KnnEvaluator:
  """mode="knn": the encoder of `model` judged by `config.eval`'s kNN."""
  return KnnEvaluator(
    run.eval.knn,
    ctx,
    features.make_feature_fn(model, ctx.mesh, ctx.data_cfg.image_size),
  )
