"""Chunked NT-Xent: the same loss and metrics with bounded logits memory.

The unchunked loss materialises four (n, N_g) logit blocks per device (n
local anchors, N_g global candidates per view), and its backward pass keeps
them, so memory grows with the global batch. Here the candidates are taken
`chunk_size` columns at a time: each block yields per-row partial statistics
(a log-sum-exp as max + scaled sum, the positive logit, the argmax), blocks
are merged with a running (online) log-sum-exp under `lax.scan`, and the
per-block function is wrapped in `jax.checkpoint` so the backward pass
recomputes each block's logits instead of storing all of them. Peak memory
for the loss is then O(n * chunk_size) instead of O(n * N_g), at the price
of recomputing the logits once more in the backward pass.

`contrast_entropy` needs p * log(p + 1e-8) with p the softmax of the `ab`
row, which a single pass cannot give exactly (the +1e-8 needs the final
normaliser), so it takes a second, gradient-free pass over the blocks once
the `ab` log-sum-exp is known. Called from `losses.nt_xent` (chunk_size > 0).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

Metrics = dict[str, jnp.ndarray]


class _RowStats(NamedTuple):
  """Per-anchor statistics of the candidate columns seen so far.

  `m_*`/`s_*` are a log-sum-exp split as max and sum(exp(logit - max)); the
  maxima carry no gradient (the log-sum-exp does not depend on them), the
  sums and positives do. `*_ab` and `arg_ab` feed the metrics only.
  """

  m_a: jnp.ndarray  # rows [ab | aa]
  s_a: jnp.ndarray
  pos_a: jnp.ndarray  # ab at the positive column (0 until that block)
  m_b: jnp.ndarray  # rows [ba | bb]
  s_b: jnp.ndarray
  pos_b: jnp.ndarray
  m_ab: jnp.ndarray  # rows ab alone, for the metrics (no gradient)
  s_ab: jnp.ndarray
  arg_ab: jnp.ndarray  # first column attaining m_ab


def _lse_parts(*blocks: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Row max (no gradient) and sum(exp(x - max)) over the given blocks."""
  m = lax.stop_gradient(
    jnp.max(jnp.stack([jnp.max(b, axis=1) for b in blocks]), axis=0)
  )
  s = sum(jnp.sum(jnp.exp(b - m[:, None]), axis=1) for b in blocks)
  return m, s


def _lse_merge(
  m1: jnp.ndarray, s1: jnp.ndarray, m2: jnp.ndarray, s2: jnp.ndarray
) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Combines two (max, scaled sum) log-sum-exp partials of the same rows."""
  m = jnp.maximum(m1, m2)
  return m, s1 * jnp.exp(m1 - m) + s2 * jnp.exp(m2 - m)


def _merge(x: _RowStats, y: _RowStats) -> _RowStats:
  """Statistics of columns of x followed by those of y (y later)."""
  m_a, s_a = _lse_merge(x.m_a, x.s_a, y.m_a, y.s_a)
  m_b, s_b = _lse_merge(x.m_b, x.s_b, y.m_b, y.s_b)
  m_ab, s_ab = _lse_merge(x.m_ab, x.s_ab, y.m_ab, y.s_ab)
  # Strictly greater, so ties keep the earlier column as jnp.argmax does.
  arg_ab = jnp.where(y.m_ab > x.m_ab, y.arg_ab, x.arg_ab)
  return _RowStats(
    m_a, s_a, x.pos_a + y.pos_a, m_b, s_b, x.pos_b + y.pos_b, m_ab, s_ab, arg_ab
  )


def chunked_nt_xent(
  h1: jnp.ndarray,
  h2: jnp.ndarray,
  h1_all: jnp.ndarray,
  h2_all: jnp.ndarray,
  labels: jnp.ndarray,
  *,
  temperature: float,
  chunk_size: int,
  mask_value: float,
) -> tuple[jnp.ndarray, Metrics]:
  """This device's loss and metrics, taking candidates in column blocks.

  Args:
    h1, h2: (n, d) float32 local anchors of view 1 and view 2 (already
      normalised if requested).
    h1_all, h2_all: (N_g, d) candidates of all devices, device-major.
    labels: (n,) column of each anchor's positive (and of its own,
      masked, self-similarity).
    temperature: softmax temperature tau.
    chunk_size: candidate columns per block; must divide N_g.
    mask_value: subtracted from the self-similarity logits (LARGE_NUM).

  Returns:
    `(loss, metrics)` over the local anchors, before any cross-device mean:
    the same values as the unchunked path, to float32 rounding.
  """
  n_global, dim = h1_all.shape
  if chunk_size <= 0 or n_global % chunk_size:
    raise ValueError(
      f"loss chunk_size={chunk_size} must be a positive divisor of the "
      f"global batch of {n_global} pairs (the candidate columns per view); "
      "use 0 for the unchunked loss."
    )
  num_blocks = n_global // chunk_size
  block_stats = _block_stats_fn(
    h1, h2, labels, chunk_size, temperature, mask_value
  )
  h1_blocks = h1_all.reshape(num_blocks, chunk_size, dim)
  h2_blocks = h2_all.reshape(num_blocks, chunk_size, dim)
  starts = jnp.arange(num_blocks) * chunk_size

  # Empty statistics to start from; *_like keeps the inputs' device-varying
  # type inside shard_map, which scan requires of its carry.
  neg_inf = jnp.full_like(h1[:, 0], -jnp.inf)
  zero = jnp.zeros_like(h1[:, 0])
  init = _RowStats(
    *(neg_inf, zero, zero) * 2, neg_inf, zero, jnp.zeros_like(labels)
  )

  def step(carry: _RowStats, xs) -> tuple[_RowStats, None]:
    return _merge(carry, block_stats(*xs)), None

  stats, _ = lax.scan(step, init, (h1_blocks, h2_blocks, starts))
  loss_a = stats.m_a + jnp.log(stats.s_a) - stats.pos_a
  loss_b = stats.m_b + jnp.log(stats.s_b) - stats.pos_b
  loss = jnp.mean(loss_a + loss_b)

  acc = jnp.mean((stats.arg_ab == labels).astype(jnp.float32))
  entropy = _chunked_entropy(
    lax.stop_gradient(h1),
    lax.stop_gradient(h2_blocks),
    lax.stop_gradient(stats.m_ab),
    lax.stop_gradient(stats.s_ab),
    temperature,
  )
  return loss, {"contrast_acc": acc, "contrast_entropy": entropy}


def _block_stats_fn(
  h1: jnp.ndarray,
  h2: jnp.ndarray,
  labels: jnp.ndarray,
  chunk_size: int,
  temperature: float,
  mask_value: float,
):
  """(h1_blk, h2_blk, start) -> the _RowStats of one candidate block,
  rematerialised in the backward pass."""
  columns = jnp.arange(chunk_size)

  def block_stats(h1_blk, h2_blk, start) -> _RowStats:
    self_col = labels[:, None] == (start + columns)[None, :]
    mask = self_col.astype(jnp.float32)
    # Same expressions as the unchunked loss, restricted to the block.
    ab = h1 @ h2_blk.T / temperature
    aa = h1 @ h1_blk.T / temperature - mask * mask_value
    ba = h2 @ h1_blk.T / temperature
    bb = h2 @ h2_blk.T / temperature - mask * mask_value
    m_a, s_a = _lse_parts(ab, aa)
    m_b, s_b = _lse_parts(ba, bb)
    pos_a = jnp.sum(jnp.where(self_col, ab, 0.0), axis=1)
    pos_b = jnp.sum(jnp.where(self_col, ba, 0.0), axis=1)
    ab_const = lax.stop_gradient(ab)
    m_ab, s_ab = _lse_parts(ab_const)
    arg_ab = start + jnp.argmax(ab_const, axis=1)
    return _RowStats(m_a, s_a, pos_a, m_b, s_b, pos_b, m_ab, s_ab, arg_ab)

  # Recompute each block's logits in the backward pass instead of keeping
  # them; prevent_cse is not needed under scan (see jax.checkpoint docs).
  return jax.checkpoint(block_stats, prevent_cse=False)


def _chunked_entropy(
  h1: jnp.ndarray,
  h2_blocks: jnp.ndarray,
  m_ab: jnp.ndarray,
  s_ab: jnp.ndarray,
  temperature: float,
) -> jnp.ndarray:
  """Mean entropy of softmax(ab) with the reference's +1e-8, block by block.

  A second pass because log(p + 1e-8) needs the final normaliser; p is
  formed exactly as jax.nn.softmax does (exp(x - max) / sum), so the value
  matches the unchunked metric to float32 rounding.
  """

  def block_term(h2_blk):
    ab = h1 @ h2_blk.T / temperature
    prob = jnp.exp(ab - m_ab[:, None]) / s_ab[:, None]
    return jnp.sum(prob * jnp.log(prob + 1e-8), axis=1)

  # Per-block row sums, (num_blocks, n): small, and no carry to type.
  return -jnp.mean(jnp.sum(lax.map(block_term, h2_blocks), axis=0))
