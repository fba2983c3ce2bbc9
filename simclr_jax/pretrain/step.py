"""The jitted SimCLR pretraining step over a device mesh.

One call: two augmented views per image (on device, one key per example and
view), a forward pass over both views together (BatchNorm statistics over the
whole global batch, since the model runs under jit on globally sharded data;
or, with `global_bn=False`, over each device's part of it),
NT-Xent with all-gathered negatives inside `shard_map`, the online linear
probe on the stop-gradient representation, and a LARS update. The state is
donated so params and optimiser state are updated in place.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from simclr_jax import augment
from simclr_jax import losses
from simclr_jax import sharding
from simclr_jax.augment import views
from simclr_jax.training.forward import forward_fn
from simclr_jax.training.state import TrainState, gradient_step, jit_step


def make_train_step(
  *,
  model: Any,
  tx: optax.GradientTransformation,
  view_cfgs: tuple[augment.AugmentConfig, augment.AugmentConfig],
  temperature: float,
  hidden_norm: bool,
  mesh: Mesh,
  schedule: optax.Schedule,
  num_classes: int,
  chunk_size: int = 0,
  global_bn: bool = True,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """Returns the jitted, state-donating step (state, batch) -> (state, metrics).

  `chunk_size` > 0 computes NT-Xent in candidate blocks (losses.nt_xent);
  `global_bn=False` normalises with per-device batch statistics
  (`forward_fn`).
  """
  data = sharding.batch_sharding(mesh)
  forward = forward_fn(model, mesh, global_bn=global_bn)

  def step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    images, labels = batch["image"], batch["label"]
    n = images.shape[0]
    step_key = jax.random.fold_in(state.rng, state.step)
    x = jax.lax.with_sharding_constraint(
      views.two_views(step_key, images, view_cfgs), data
    )

    def loss_fn(params):
      out, mutated = forward(
        {"params": params, "batch_stats": state.batch_stats}, x
      )
      z = out["projection"].reshape(n, 2, -1)
      z1 = jax.lax.with_sharding_constraint(z[:, 0], data)
      z2 = jax.lax.with_sharding_constraint(z[:, 1], data)
      loss, metrics = losses.sharded_nt_xent(
        z1,
        z2,
        mesh=mesh,
        temperature=temperature,
        hidden_norm=hidden_norm,
        axis=sharding.DATA_AXIS,
        chunk_size=chunk_size,
      )
      metrics = dict(metrics, contrastive_loss=loss)
      total = loss
      if num_classes:
        sup_loss, probe_acc = _probe_loss(out["logits"], jnp.repeat(labels, 2))
        total = total + sup_loss
        metrics.update(probe_loss=sup_loss, probe_acc=probe_acc)
      return total, (metrics, mutated["batch_stats"])

    return gradient_step(state, loss_fn, tx=tx, schedule=schedule)

  return jit_step(step, mesh)


def _probe_loss(
  logits: jnp.ndarray, labels: jnp.ndarray
) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Cross-entropy and accuracy of the online probe; label -1 = unlabelled."""
  valid = (labels >= 0).astype(jnp.float32)
  safe = jnp.maximum(labels, 0)
  ce = optax.softmax_cross_entropy_with_integer_labels(
    logits.astype(jnp.float32), safe
  )
  count = jnp.maximum(valid.sum(), 1.0)
  acc = ((jnp.argmax(logits, -1) == safe) * valid).sum() / count
  return (ce * valid).sum() / count, acc
