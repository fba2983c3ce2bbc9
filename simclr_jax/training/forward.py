"""The training-mode forward pass shared by pretraining and fine-tuning."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from simclr_jax import sharding


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
    return out, jax.lax.pmean(mutated, sharding.DATA_AXIS)

  return jax.shard_map(
    local,
    mesh=mesh,
    in_specs=(sharding.P(), sharding.batch_spec(mesh)),
    out_specs=(sharding.batch_spec(mesh), sharding.P()),
  )
