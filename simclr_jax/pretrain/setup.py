"""Everything pretraining needs, built from the config without side effects.

The model, optimiser and schedule are built from their own config sections
(`create_model`, `create_optimizer`, `create_schedule`); `TrainSetup` puts
them together with the mesh and the dataset sizes, and checks the model
builds (`eval_shape`, no compute) before anything touches the workdir.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from simclr_jax import configlib
from simclr_jax import data as data_lib
from simclr_jax import models
from simclr_jax.models import conv_impl
from simclr_jax import optim
from simclr_jax import sharding
from simclr_jax.errors import UserError
from simclr_jax.eval import registry
from simclr_jax.pretrain import step as step_lib
from simclr_jax.training.state import TrainState, abstract_state, new_state


def create_model(model_cfg: Any, num_classes: int) -> models.SimCLRModel:
  """Builds the encoder + projection head + online linear head from the
  model section (`configlib.ModelConfig`, or `config.model`)."""
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
    conv_impl=conv_impl.resolve(
      getattr(model_cfg, "conv_impl", "auto"), jax.default_backend()
    ),
    remat=getattr(model_cfg, "remat", False),
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
  optim_cfg: Any,
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
  optim_cfg: Any, schedule: optax.Schedule, params: Any
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
    return new_state(
      params, variables.get("batch_stats", {}), make_tx(params), state_rng
    )

  return init


class TrainSetup:
  """Everything the loop needs, built from the config without side effects.

  `config` is a `ConfigDict` (checked and typed here) or a `RunConfig`
  already built from one.
  """

  def __init__(self, config: ml_collections.ConfigDict | configlib.RunConfig):
    if not isinstance(config, configlib.RunConfig):
      config = configlib.build(config, jax.device_count(), jax.process_count())
    run = self.run = config
    registry.check_mode(run.mode)
    self.mesh = sharding.make_mesh()
    self.data_cfg = run.data
    self.view_cfgs = run.views
    self.info = data_lib.dataset_info(self.data_cfg)
    batch_size = run.train.batch_size
    if self.info.num_train < batch_size:
      raise UserError(
        f"the training split has {self.info.num_train} examples, fewer than "
        f"config.batch_size={batch_size}; lower the batch size."
      )
    self.total_steps = optim.total_steps(
      batch_size=batch_size,
      num_examples=self.info.num_train,
      epochs=run.train.epochs,
      train_steps=run.train.train_steps,
    )
    self.schedule = create_schedule(
      run.optim,
      batch_size=batch_size,
      num_examples=self.info.num_train,
      epochs=run.train.epochs,
      train_steps=run.train.train_steps,
    )
    self.model = create_model(run.model, self.info.num_classes)
    self.global_bn = run.model.global_bn
    self.make_tx = lambda params: create_optimizer(
      run.optim, self.schedule, params
    )
    self.init_fn = make_init_fn(self.model, run.data.image_size, self.make_tx)
    self.replicated = sharding.replicated(self.mesh)
    self.data_sharding = sharding.batch_sharding(self.mesh)
    # Shapes first (no compute, no memory): checks the model builds and gives
    # the restore target.
    self.abstract_state = abstract_state(self.init_fn, self.replicated)

  def make_train_step(self, loss_cfg: Any, params: Any) -> Any:
    """The jitted, state-donating pretraining step for this set-up
    (`loss_cfg`: the typed `config.loss`)."""
    return step_lib.make_train_step(
      model=self.model,
      tx=self.make_tx(params),
      view_cfgs=self.view_cfgs,
      temperature=loss_cfg.temperature,
      hidden_norm=loss_cfg.hidden_norm,
      mesh=self.mesh,
      schedule=self.schedule,
      num_classes=self.info.num_classes,
      chunk_size=loss_cfg.chunk_size,
      global_bn=self.global_bn,
    )

  def init_state(self, seed: int) -> TrainState:
    init = jax.jit(self.init_fn, out_shardings=self.replicated)
    return init(jax.random.PRNGKey(seed))

  def init_variables(self, seed: int) -> dict:
    """Freshly initialised {'params', 'batch_stats'} (the random encoder)."""
    state = self.init_state(seed)
    return {"params": state.params, "batch_stats": state.batch_stats}
