"""The one train-state pytree, and the update every optimiser step shares.

The state is a plain pytree (step, params, batch_stats, opt_state, rng) so
that jit, sharding, donation and orbax checkpointing all see the same thing.
Pretraining, fine-tuning and linear evaluation all train a `TrainState`;
for linear evaluation `params` is the head alone and `batch_stats` is empty.
"""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

from simclr_jax import sharding


@flax.struct.dataclass
class TrainState:
  step: jnp.ndarray  # int32 scalar: optimiser steps taken
  params: Any  # what the optimiser updates
  batch_stats: Any  # state the forward pass updates ({} when frozen)
  opt_state: Any
  rng: jnp.ndarray  # base key; step keys fold in `step`


def new_state(
  params: Any,
  batch_stats: Any,
  tx: optax.GradientTransformation,
  rng: jax.Array,
) -> TrainState:
  """Step 0 with a fresh optimiser state (pure: call it inside jit)."""
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    batch_stats=batch_stats,
    opt_state=tx.init(params),
    rng=rng,
  )


def apply_gradients(
  state: TrainState,
  grads: Any,
  batch_stats: Any,
  *,
  tx: optax.GradientTransformation,
  schedule: optax.Schedule | None,
  metrics: dict,
) -> tuple[TrainState, dict]:
  """Applies `grads`, stores the new BN statistics, advances the step, and
  adds the learning rate (with a `schedule`) and gradient norm to
  `metrics`."""
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = dict(metrics)
  if schedule is not None:
    metrics["learning_rate"] = schedule(state.step)
  metrics["grad_norm"] = optax.tree.norm(grads)
  return state.replace(
    step=state.step + 1,
    params=params,
    batch_stats=batch_stats,
    opt_state=opt_state,
  ), metrics


def gradient_step(
  state: TrainState,
  loss_fn: Callable[[Any], tuple[jnp.ndarray, tuple[dict, Any]]],
  *,
  tx: optax.GradientTransformation,
  schedule: optax.Schedule | None,
) -> tuple[TrainState, dict]:
  """One optimiser step: `loss_fn(params) -> (loss, (metrics, batch_stats))`
  is differentiated at `state.params` and the update applied
  (`apply_gradients`)."""
  grads, (metrics, batch_stats) = jax.grad(loss_fn, has_aux=True)(state.params)
  return apply_gradients(
    state, grads, batch_stats, tx=tx, schedule=schedule, metrics=metrics
  )


def jit_step(
  step: Callable[..., tuple[TrainState, dict]],
  mesh: jax.sharding.Mesh,
  num_constants: int = 0,
) -> Callable[..., tuple[TrainState, dict]]:
  """`step(state, *constants, batch)` jitted over `mesh`: the state and the
  constants replicated, the batch split over the devices, the state donated
  (updated in place), the new state and the metrics replicated."""
  replicated = sharding.replicated(mesh)
  return jax.jit(
    step,
    in_shardings=(replicated,) * (1 + num_constants)
    + (sharding.batch_sharding(mesh),),
    out_shardings=(replicated, replicated),
    donate_argnums=(0,),
  )


def abstract_state(
  init_fn: Callable[[jnp.ndarray], TrainState], sharding: jax.sharding.Sharding
) -> TrainState:
  """Shapes and dtypes of `init_fn`'s state placed with `sharding`, without
  compute or memory: a restore target, and a check that the model builds."""
  shapes = jax.eval_shape(init_fn, jax.random.PRNGKey(0))
  return jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
    shapes,
  )


def count_params(tree: Any) -> int:
  return sum(int(x.size) for x in jax.tree_util.tree_leaves(tree))
