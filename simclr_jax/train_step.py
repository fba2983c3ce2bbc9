"""The jitted SimCLR pretraining step over a device mesh.

One call: two augmented views per image (on device, one key per example and
view), a forward pass over both views together (BatchNorm statistics over the
whole global batch, since the model runs under jit on globally sharded data),
NT-Xent with all-gathered negatives inside `shard_map`, the online linear
probe on the stop-gradient representation, and a LARS update. The state is
donated so params and optimiser state are updated in place.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from simclr_jax import augment
from simclr_jax import losses
from simclr_jax import views
from simclr_jax.train_state import TrainState

DATA_AXIS = "data"


def make_train_step(*, model: Any, tx: optax.GradientTransformation,
                    view_cfgs: tuple[augment.AugmentConfig,
                                     augment.AugmentConfig],
                    temperature: float,
                    hidden_norm: bool, mesh: Mesh,
                    schedule: optax.Schedule, num_classes: int,
                    chunk_size: int = 0,
                    ) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """Returns the jitted, state-donating step (state, batch) -> (state, metrics).

  `chunk_size` > 0 computes NT-Xent in candidate blocks (losses.nt_xent).
  """
  data = NamedSharding(mesh, P(DATA_AXIS))
  replicated = NamedSharding(mesh, P())

  def step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    images, labels = batch["image"], batch["label"]
    n = images.shape[0]
    step_key = jax.random.fold_in(state.rng, state.step)
    x = jax.lax.with_sharding_constraint(
        views.two_views(step_key, images, view_cfgs), data)

    def loss_fn(params):
      out, mutated = model.apply(
          {"params": params, "batch_stats": state.batch_stats}, x,
          train=True, mutable=["batch_stats"])
      z = out["projection"].reshape(n, 2, -1)
      z1 = jax.lax.with_sharding_constraint(z[:, 0], data)
      z2 = jax.lax.with_sharding_constraint(z[:, 1], data)
      loss, metrics = losses.sharded_nt_xent(
          z1, z2, mesh=mesh, temperature=temperature, hidden_norm=hidden_norm,
          axis=DATA_AXIS, chunk_size=chunk_size)
      metrics = dict(metrics, contrastive_loss=loss)
      total = loss
      if num_classes:
        sup_loss, probe_acc = _probe_loss(out["logits"], jnp.repeat(labels, 2))
        total = total + sup_loss
        metrics.update(probe_loss=sup_loss, probe_acc=probe_acc)
      return total, (metrics, mutated["batch_stats"])

    grads, (metrics, batch_stats) = jax.grad(loss_fn, has_aux=True)(
        state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics["learning_rate"] = schedule(state.step)
    metrics["grad_norm"] = optax.tree.norm(grads)
    new_state = state.replace(step=state.step + 1, params=params,
                              batch_stats=batch_stats, opt_state=opt_state)
    return new_state, metrics

  return jax.jit(step, in_shardings=(replicated, data),
                 out_shardings=(replicated, replicated), donate_argnums=(0,))


def _probe_loss(logits: jnp.ndarray,
                labels: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Cross-entropy and accuracy of the online probe; label -1 = unlabelled."""
  valid = (labels >= 0).astype(jnp.float32)
  safe = jnp.maximum(labels, 0)
  ce = optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), safe)
  count = jnp.maximum(valid.sum(), 1.0)
  acc = ((jnp.argmax(logits, -1) == safe) * valid).sum() / count
  return (ce * valid).sum() / count, acc
