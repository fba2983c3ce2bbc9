"""The explicit train-state pytree and the builders that create it.

The state is a plain pytree (params, batch_stats, opt_state, step, rng) so
that jit, sharding, donation and orbax checkpointing all see the same thing.
The model and optimiser are built from their own config sections.
"""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from simclr_jax import models
from simclr_jax import optim


@flax.struct.dataclass
class TrainState:
  step: jnp.ndarray  # int32 scalar: optimiser steps taken
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jnp.ndarray  # uint32[2] base key; step keys fold in `step`


def create_model(
  model_cfg: ml_collections.ConfigDict, num_classes: int
) -> models.SimCLRModel:
  """Builds the encoder + projection head + online linear head."""
  dtype = jnp.bfloat16 if model_cfg.half_precision else jnp.float32
  backbone = models.ResNet(
    depth=model_cfg.depth,
    width_multiplier=model_cfg.width_multiplier,
    sk_ratio=model_cfg.sk_ratio,
    se_ratio=model_cfg.se_ratio,
    cifar_stem=model_cfg.cifar_stem,
    bn_momentum=model_cfg.bn_momentum,
    bn_epsilon=model_cfg.bn_epsilon,
    dtype=dtype,
  )
  head = models.ProjectionHead(
    num_layers=model_cfg.proj_head_layers,
    out_dim=model_cfg.proj_out_dim,
    bn_momentum=model_cfg.bn_momentum,
    bn_epsilon=model_cfg.bn_epsilon,
    dtype=dtype,
  )
  return models.SimCLRModel(
    backbone=backbone, projection_head=head, num_classes=num_classes
  )


def create_schedule(
  optim_cfg: ml_collections.ConfigDict,
  *,
  batch_size: int,
  num_examples: int,
  epochs: float,
  train_steps: int,
) -> optax.Schedule:
  return optim.learning_rate_schedule(
    base_learning_rate=optim_cfg.base_learning_rate,
    batch_size=batch_size,
    num_examples=num_examples,
    epochs=epochs,
    warmup_epochs=optim_cfg.warmup_epochs,
    scaling=optim_cfg.lr_scaling,
    train_steps=train_steps,
  )


def create_optimizer(
  optim_cfg: ml_collections.ConfigDict, schedule: optax.Schedule, params: Any
) -> optax.GradientTransformation:
  """LARS with weight decay and trust ratio masked by parameter path."""
  decay_mask = optim.kernel_mask if optim_cfg.decay_supervised_head else None
  return optim.lars(
    schedule,
    params,
    weight_decay=optim_cfg.weight_decay,
    momentum=optim_cfg.momentum,
    trust_coefficient=optim_cfg.trust_coefficient,
    weight_decay_mask_fn=decay_mask,
  )


def make_init_fn(
  model: models.SimCLRModel,
  image_size: int,
  make_tx: Callable[[Any], optax.GradientTransformation],
) -> Callable[[jnp.ndarray], TrainState]:
  """Returns rng -> TrainState; pure, so it can run under eval_shape or jit."""

  def init(rng: jnp.ndarray) -> TrainState:
    init_rng, state_rng = jax.random.split(rng)
    dummy = jnp.zeros((2, image_size, image_size, 3), jnp.float32)
    variables = model.init(init_rng, dummy, train=False)
    params = variables["params"]
    tx = make_tx(params)
    return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      batch_stats=variables.get("batch_stats", {}),
      opt_state=tx.init(params),
      rng=state_rng,
    )

  return init


def abstract_state(
  init_fn: Callable[[jnp.ndarray], TrainState], sharding: jax.sharding.Sharding
) -> TrainState:
  """Shapes and dtypes of `init_fn`'s state placed with `sharding`, without
  compute or memory: a restore target, and a check that the model builds."""
  shapes = jax.eval_shape(init_fn, jax.random.PRNGKey(0))
  return jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), shapes
  )


def count_params(tree: Any) -> int:
  return sum(int(x.size) for x in jax.tree_util.tree_leaves(tree))
