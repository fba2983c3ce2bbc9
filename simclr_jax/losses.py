"""NT-Xent contrastive loss of SimCLR, single-device and sharded over a mesh.

The loss follows the reference TF2 implementation exactly (docs/fidelity.md section 1):
the returned value is the mean over anchors of `loss_a + loss_b`, i.e. twice
the usual mean NT-Xent, so it starts near `2 * ln(2N - 1)` for a global batch
of N pairs. With several devices every device keeps its local rows as anchors
and all-gathers the candidates of all devices, and gradients flow back through
the gather (its transpose is a reduce-scatter), so the sharded loss and its
gradient equal the single-device ones on the global batch.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from simclr_jax import losses_chunked
from simclr_jax import sharding

# Subtracted from the self-similarity logits; the reference's LARGE_NUM.
LARGE_NUM = 1e9
# Epsilon of tf.math.l2_normalize (on the squared norm).
_L2_EPSILON = 1e-12

Metrics = dict[str, jnp.ndarray]


def _l2_normalize(x: jnp.ndarray) -> jnp.ndarray:
  """Row-wise L2 normalisation, same formula as tf.math.l2_normalize."""
  sq = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
  return x * lax.rsqrt(jnp.maximum(sq, _L2_EPSILON))


def _anchors_and_candidates(
  hidden: jnp.ndarray,
  *,
  hidden_norm: bool,
  axis_name: Any,
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """Local anchors `h1, h2`, gathered candidates `h1_all, h2_all`, labels.

  Shared by the unchunked and chunked losses. Everything is float32 whatever
  the input dtype, so bf16 projections do not lose the 1e9 mask or the
  softmax to rounding. `labels` is the column of each local anchor's
  positive among the candidates.
  """
  if hidden.ndim != 2 or hidden.shape[0] % 2:
    raise ValueError(
      "nt_xent expects hidden of shape (2n, d) laid out [view1; view2], got "
      f"shape {hidden.shape}."
    )
  hidden = hidden.astype(jnp.float32)
  if hidden_norm:
    hidden = _l2_normalize(hidden)
  h1, h2 = jnp.split(hidden, 2, axis=0)
  n = h1.shape[0]

  if axis_name is None:
    h1_all, h2_all = h1, h2
    offset = 0
  else:
    # One collective for both views; tiled so the global row order is
    # device-major, which is what the labels r * n + i below assume.
    both = lax.all_gather(jnp.stack([h1, h2]), axis_name, axis=1, tiled=True)
    h1_all, h2_all = both[0], both[1]
    offset = lax.axis_index(axis_name) * n
  return h1, h2, h1_all, h2_all, offset + jnp.arange(n)


def _nt_xent_local(
  hidden: jnp.ndarray,
  *,
  temperature: float,
  hidden_norm: bool = True,
  axis_name: Any = None,
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
  """This device's share of the loss, before any cross-device averaging.

  Returns `(loss, logits_ab, labels)`: `loss` is the mean over the local
  anchors of `loss_a + loss_b`, `logits_ab` the (n, N_g) view-1 vs view-2
  logits of the local anchors and `labels` the column of each positive.
  Computed in float32 (see `_anchors_and_candidates`).
  """
  h1, h2, h1_all, h2_all, labels = _anchors_and_candidates(
    hidden, hidden_norm=hidden_norm, axis_name=axis_name
  )
  n_global = h1_all.shape[0]
  masks = jax.nn.one_hot(labels, n_global, dtype=jnp.float32)

  logits_aa = h1 @ h1_all.T / temperature - masks * LARGE_NUM
  logits_bb = h2 @ h2_all.T / temperature - masks * LARGE_NUM
  logits_ab = h1 @ h2_all.T / temperature
  logits_ba = h2 @ h1_all.T / temperature

  def cross_entropy(positive_block, negative_block):
    # Softmax cross-entropy over [positive_block | negative_block] with the
    # positive at column `labels` of the first block.
    logits = jnp.concatenate([positive_block, negative_block], axis=1)
    positive = jnp.take_along_axis(positive_block, labels[:, None], axis=1)[
      :, 0
    ]
    return jax.nn.logsumexp(logits, axis=1) - positive

  loss_a = cross_entropy(logits_ab, logits_aa)
  loss_b = cross_entropy(logits_ba, logits_bb)
  loss = jnp.mean(loss_a + loss_b)
  return loss, logits_ab, labels


def _contrast_metrics(logits_ab: jnp.ndarray, labels: jnp.ndarray) -> Metrics:
  """The reference's logged metrics over the local anchors (no gradient)."""
  logits_ab = lax.stop_gradient(logits_ab)
  acc = jnp.mean((jnp.argmax(logits_ab, axis=1) == labels).astype(jnp.float32))
  prob = jax.nn.softmax(logits_ab, axis=1)
  entropy = -jnp.mean(jnp.sum(prob * jnp.log(prob + 1e-8), axis=1))
  return {"contrast_acc": acc, "contrast_entropy": entropy}


def nt_xent(
  hidden: jnp.ndarray,
  *,
  temperature: float,
  hidden_norm: bool = True,
  axis_name: str | None = None,
  chunk_size: int = 0,
) -> tuple[jnp.ndarray, Metrics]:
  """SimCLR's NT-Xent loss (reference convention: not halved).

  Args:
    hidden: (2n, d) projections `[view1; view2]`; with `axis_name` set, this
      device's rows, the candidates being gathered from all devices.
    temperature: softmax temperature tau.
    hidden_norm: L2-normalise the rows first (cosine similarity).
    axis_name: mapped axis (e.g. inside `jax.shard_map`) to gather negatives
      over; None for a single device.
    chunk_size: 0 computes all (n, N_g) logits at once; > 0 takes the N_g
      candidates of each view `chunk_size` columns at a time with an online
      log-sum-exp and recomputes each block in the backward pass, so loss
      memory is O(n * chunk_size) instead of O(n * N_g) (same values to
      float32 rounding; see `losses_chunked`). Must divide N_g.

  Returns:
    `(loss, metrics)` as float32 scalars; `metrics` holds `contrast_acc` and
    `contrast_entropy`. With `axis_name` set, both are averaged over the axis
    (every device holds the same number of anchors), so they equal the
    single-device values on the global batch.
  """
  if chunk_size:
    h1, h2, h1_all, h2_all, labels = _anchors_and_candidates(
      hidden, hidden_norm=hidden_norm, axis_name=axis_name
    )
    loss, metrics = losses_chunked.chunked_nt_xent(
      h1,
      h2,
      h1_all,
      h2_all,
      labels,
      temperature=temperature,
      chunk_size=chunk_size,
      mask_value=LARGE_NUM,
    )
  else:
    loss, logits_ab, labels = _nt_xent_local(
      hidden,
      temperature=temperature,
      hidden_norm=hidden_norm,
      axis_name=axis_name,
    )
    metrics = _contrast_metrics(logits_ab, labels)
  if axis_name is not None:
    loss = lax.pmean(loss, axis_name)
    metrics = lax.pmean(metrics, axis_name)
  return loss, metrics


def sharded_nt_xent(
  z1: jnp.ndarray,
  z2: jnp.ndarray,
  *,
  mesh: jax.sharding.Mesh,
  temperature: float,
  hidden_norm: bool = True,
  axis: str = sharding.DATA_AXIS,
  chunk_size: int = 0,
) -> tuple[jnp.ndarray, Metrics]:
  """NT-Xent on global projections sharded along the batch over `axis`.

  `z1` and `z2` are the (N, d) projections of view 1 and view 2, row i of
  both being the same image. Each device takes its N / |axis| rows of each
  as anchors and the whole batch as candidates. Returns the replicated loss
  and metrics; differentiable and usable inside `jax.jit`. `chunk_size` as
  in `nt_xent` (must divide N, the global number of pairs).
  """
  if z1.shape != z2.shape or z1.ndim != 2:
    raise ValueError(
      "sharded_nt_xent expects z1 and z2 of the same (N, d) shape, got "
      f"{z1.shape} and {z2.shape}."
    )
  num_shards = mesh.shape[axis]
  if z1.shape[0] % num_shards:
    raise ValueError(
      f"The batch of {z1.shape[0]} pairs does not split evenly over the "
      f"{num_shards} devices of mesh axis {axis!r}."
    )
  if chunk_size < 0 or (chunk_size and z1.shape[0] % chunk_size):
    raise ValueError(
      f"loss chunk_size={chunk_size} must be 0 (unchunked) or a positive "
      f"divisor of the global batch of {z1.shape[0]} pairs."
    )

  if axis in mesh.explicit_axes:
    # Explicit-sharding meshes (jax.make_mesh's default) require the inputs to
    # arrive sharded as in_specs says; a no-op when they already are.
    z1, z2 = jax.reshard((z1, z2), sharding.batch_sharding(mesh, axis=axis))

  def per_device(local_z1, local_z2):
    hidden = jnp.concatenate([local_z1, local_z2], axis=0)
    return nt_xent(
      hidden,
      temperature=temperature,
      hidden_norm=hidden_norm,
      axis_name=axis,
      chunk_size=chunk_size,
    )

  # check_vma stays on (the default) so JAX verifies that the loss really is
  # replicated as out_specs=P() claims; the gathered candidates are typed
  # varying and all_gather's transpose is a reduce-scatter, which gives the
  # global-batch gradient with no device-count factor (see tests).
  return jax.shard_map(
    per_device,
    mesh=mesh,
    in_specs=(sharding.batch_spec(mesh, axis=axis),) * 2,
    out_specs=sharding.P(),
  )(z1, z2)
