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
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from simclr_jax import augment
from simclr_jax import losses
from simclr_jax import views
from simclr_jax.train_state import TrainState

DATA_AXIS = "data"


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
  data = NamedSharding(mesh, P(DATA_AXIS))
  replicated = NamedSharding(mesh, P())
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
        axis=DATA_AXIS,
        chunk_size=chunk_size,
      )
      metrics = dict(metrics, contrastive_loss=loss)
      total = loss
      if num_classes:
        sup_loss, probe_acc = _probe_loss(out["logits"], jnp.repeat(labels, 2))
        total = total + sup_loss
        metrics.update(probe_loss=sup_loss, probe_acc=probe_acc)
      return total, (metrics, mutated["batch_stats"])

    grads, (metrics, batch_stats) = jax.grad(loss_fn, has_aux=True)(
      state.params
    )
    return apply_gradients(
      state, grads, batch_stats, tx=tx, schedule=schedule, metrics=metrics
    )

  return jax.jit(
    step,
    in_shardings=(replicated, data),
    out_shardings=(replicated, replicated),
    donate_argnums=(0,),
  )


def apply_gradients(
  state: TrainState,
  grads: Any,
  batch_stats: Any,
  *,
  tx: optax.GradientTransformation,
  schedule: optax.Schedule,
  metrics: dict,
) -> tuple[TrainState, dict]:
  """The optimiser update shared by pretraining and fine-tuning: applies
  `grads`, stores the new BN statistics, advances the step, and adds the
  learning rate and gradient norm to `metrics`."""
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = dict(
    metrics,
    learning_rate=schedule(state.step),
    grad_norm=optax.tree.norm(grads),
  )
  return state.replace(
    step=state.step + 1,
    params=params,
    batch_stats=batch_stats,
    opt_state=opt_state,
  ), metrics


def forward_fn(
  model: Any,
  mesh: Mesh,
  *,
  global_bn: bool = True,
) -> Callable[[dict, jnp.ndarray], tuple[dict, dict]]:
  """Training-mode forward pass (variables, x) -> (outputs, {'batch_stats'}).

  With `global_bn` the model runs under jit on the globally sharded batch, so
  BN statistics cover the whole global batch. Without it, the model runs
  inside `shard_map` on each device's rows (both views of that device's
  examples), like the reference's per-replica BN; the updated running
  statistics are then averaged over devices (`pmean`) so the state stays
  replicated. Parameter gradients are summed over devices by the transpose
  of the replicated `params` input either way.
  """
  if global_bn:
    return lambda variables, x: model.apply(
      variables, x, train=True, mutable=["batch_stats"]
    )

  def local(variables, x):
    out, mutated = model.apply(
      variables, x, train=True, mutable=["batch_stats"]
    )
    return out, jax.lax.pmean(mutated, DATA_AXIS)

  return jax.shard_map(
    local,
    mesh=mesh,
    in_specs=(P(), P(DATA_AXIS)),
    out_specs=(P(DATA_AXIS), P()),
  )


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
