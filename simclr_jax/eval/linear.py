"""The paper's linear evaluation: a linear classifier on a frozen encoder.

Protocol (docs/fidelity.md row 6.5): the encoder runs with BatchNorm in
inference mode and gets no gradient (its variables are a constant argument of
the step; only the `SupervisedHead` parameters are in the optimiser); each
training image gets a random crop and flip on device (augment preset
"crop_flip", one key per example from its global index); SGD with Nesterov
momentum 0.9, learning rate base x B / 256 with cosine decay and no warmup;
weight decay 0 for CIFAR, 1e-6 for ImageNet. As in the reference's README
commands (`--zero_init_logits_layer=True`) the head's kernel and bias start
at zero, and the decay covers the bias too: the reference's momentum
optimiser gets its decay from an L2 loss term over every trainable variable
but BatchNorm's, which in linear evaluation is the head's kernel and bias.
`zero_init_head=False` / `decay_bias=False` give the Dense default init
(normal, stddev 0.01) / kernel-only decay instead.

The train step is generic in a `forward` function
`forward(params, batch_stats, frozen, images, train) -> (logits, batch_stats)`;
the augmented view and the masked top-1/top-5 evaluation live in
`simclr_jax/eval/supervised.py`, shared with fine-tuning.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from simclr_jax import augment
from simclr_jax import optim
from simclr_jax import sharding
from simclr_jax.configlib.sections import LinearSettings, RunConfig
from simclr_jax.errors import UserError
from simclr_jax.eval import features
from simclr_jax.eval import supervised
from simclr_jax.eval.base import EvalContext, EvalResult, restartable
from simclr_jax.models import SupervisedHead
from simclr_jax import reporting
from simclr_jax.training import loop
from simclr_jax.training.resume import TrainerCheckpoints
from simclr_jax.training.state import (
  TrainState,
  gradient_step,
  jit_step,
  new_state,
)


Forward = Callable[[Any, Any, Any, jnp.ndarray, bool], tuple[jnp.ndarray, Any]]


def make_supervised_train_step(
  forward: Forward,
  tx: optax.GradientTransformation,
  mesh: Mesh,
  augment_config: augment.AugmentConfig,
  schedule: optax.Schedule | None = None,
) -> Callable:
  """Jitted (state, frozen, batch) -> (state, metrics); the state is donated.

  Cross-entropy on an augmented view of batch['image'] (uint8) against
  batch['label']; gradients reach `state.params` only.
  """
  data = sharding.batch_sharding(mesh)

  def step(state: TrainState, frozen: Any, batch: dict):
    labels = batch["label"]
    key = jax.random.fold_in(state.rng, state.step)
    x = jax.lax.with_sharding_constraint(
      supervised.augmented_view(key, batch["image"], augment_config), data
    )

    def loss_fn(params):
      logits, batch_stats = forward(params, state.batch_stats, frozen, x, True)
      loss = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), labels
      ).mean()
      top1 = jnp.mean(jnp.argmax(logits, -1) == labels)
      return loss, ({"loss": loss, "top1": top1}, batch_stats)

    return gradient_step(state, loss_fn, tx=tx, schedule=schedule)

  return jit_step(step, mesh, 1)


def linear_forward(model: Any, num_classes: int) -> Forward:
  """Frozen encoder (inference BN, stop-gradient) -> SupervisedHead logits;
  `frozen` is the encoder's {'params', 'batch_stats'}."""
  head = SupervisedHead(num_classes)

  def forward(params, batch_stats, frozen, x, train):
    del train  # the encoder always runs in inference mode
    h = jax.lax.stop_gradient(model.backbone.apply(frozen, x, train=False))
    return head.apply({"params": params}, h), batch_stats

  return forward


def head_optimizer(
  learning_rate: optax.ScalarOrSchedule,
  *,
  momentum: float = 0.9,
  weight_decay: float = 0.0,
  decay_bias: bool = True,
) -> optax.GradientTransformation:
  """SGD with Nesterov momentum for the linear head (`optim.sgd_nesterov`).

  `g += weight_decay * w` for the kernel, and with `decay_bias` for the bias
  too: the gradient of the reference's L2 term `wd * sum ||v||^2 / 2` over
  the head's variables.
  """
  if not decay_bias or not weight_decay:
    return optim.sgd_nesterov(
      learning_rate, momentum=momentum, weight_decay=weight_decay
    )
  return optax.chain(
    optax.add_decayed_weights(weight_decay),
    optim.sgd_nesterov(learning_rate, momentum=momentum),
  )


def init_head(
  key: jax.Array, num_classes: int, dim: int, zero_init: bool = True
) -> Any:
  """`SupervisedHead` params for `dim`-wide features; all zeros (kernel and
  bias, the reference's `zero_init_logits_layer`) unless `zero_init` is
  False."""
  params = SupervisedHead(num_classes).init(key, jnp.zeros((1, dim)))["params"]
  if zero_init:
    params = jax.tree.map(jnp.zeros_like, params)
  return params


def train_linear(
  model: Any,
  variables: dict,
  train_batches: Iterable[dict] | Callable[[int], Iterable[dict]],
  *,
  mesh: Mesh,
  num_classes: int,
  steps: int,
  batch_size: int,
  image_size: int,
  base_learning_rate: float = 0.1,
  lr_scaling: str = "linear",
  weight_decay: float = 0.0,
  momentum: float = 0.9,
  seed: int = 0,
  augment_preset: str = "crop_flip",
  zero_init_head: bool = True,
  decay_bias: bool = True,
  log_fn: Callable[[int, dict[str, float]], None] | None = None,
  log_every: int = 100,
  checkpoints: TrainerCheckpoints | None = None,
  resume_hint: str = "run the same command again",
) -> Any:
  """Trains a linear head on the frozen encoder; returns the head params.

  `variables`: the SimCLRModel's {'params', 'batch_stats'} (not modified);
  `train_batches`: global batches of `batch_size` (data.train_batches). The
  head starts at zero (`zero_init_head`); `weight_decay` covers its bias too
  (`decay_bias`), as in the reference. `log_fn(step, means)`: metrics
  averaged over `log_every` steps. With `checkpoints` it saves and resumes
  as `finetune.finetune` does (`train_batches` a function of steps done).
  """
  if num_classes < 1 or steps < 1:
    raise UserError(
      f"linear evaluation needs labelled data and steps >= 1; "
      f"got num_classes={num_classes}, steps={steps}."
    )
  replicated = sharding.replicated(mesh)
  frozen = jax.device_put(features.backbone_variables(variables), replicated)
  schedule = optim.step_schedule(
    base_learning_rate=base_learning_rate,
    batch_size=batch_size,
    scaling=lr_scaling,
    total_steps=steps,
  )
  tx = head_optimizer(
    schedule,
    momentum=momentum,
    weight_decay=weight_decay,
    decay_bias=decay_bias,
  )
  dim = _feature_dim(model, frozen, image_size)
  init_params = functools.partial(
    init_head, num_classes=num_classes, dim=dim, zero_init=zero_init_head
  )
  state, start = loop.start_state(
    lambda: _initial_state(init_params, tx, seed, replicated),
    replicated,
    checkpoints,
  )
  view = augment.make_augment_config(augment_preset, image_size)
  forward = linear_forward(model, num_classes)
  train_step = make_supervised_train_step(forward, tx, mesh, view, schedule)
  state = loop.run_labelled(
    lambda state, batch: train_step(state, frozen, batch),
    state,
    train_batches,
    start=start,
    data_sharding=sharding.batch_sharding(mesh),
    checkpoints=checkpoints,
    last_step=steps,
    log_every=log_every,
    loss_key="loss",
    what="linear evaluation",
    nan_advice="lower config.linear_eval.base_learning_rate.",
    log_fn=log_fn,
    batch_size=batch_size,
    resume_hint=resume_hint,
  )
  return state.params


def _feature_dim(model: Any, frozen: dict, image_size: int) -> int:
  """Width of the encoder output (shapes only, no compute)."""
  x = jnp.zeros((1, image_size, image_size, 3))
  return jax.eval_shape(
    lambda v: model.backbone.apply(v, x, train=False), frozen
  ).shape[-1]


def _initial_state(
  init_params: Callable[[jax.Array], Any],
  tx: optax.GradientTransformation,
  seed: int,
  replicated: Any,
) -> TrainState:
  """Step 0 of the head (`init_params(key)`), replicated; the step keys come
  from the same key `PRNGKey(seed)` too."""
  return jax.jit(
    lambda k: new_state(init_params(k), {}, tx, jax.random.fold_in(k, 1)),
    out_shardings=replicated,
  )(jax.random.PRNGKey(seed))


def evaluate_linear(
  model: Any,
  variables: dict,
  head_params: Any,
  eval_batches: Iterable[dict],
  *,
  mesh: Mesh,
  num_classes: int,
  image_size: int,
) -> dict[str, float]:
  """Top-1 / top-5 of the linear head over the real examples of
  `eval_batches` (from data.eval_batches: 'image', 'label', 'mask')."""
  replicated = sharding.replicated(mesh)
  frozen = jax.device_put(features.backbone_variables(variables), replicated)
  forward = linear_forward(model, num_classes)

  def logits_fn(v, images):
    x = augment.preprocess_eval(images, image_size=image_size)
    return forward(v["head"], {}, v["encoder"], x, False)[0]

  return supervised.topk_accuracy(
    logits_fn, {"head": head_params, "encoder": frozen}, eval_batches, mesh
  )


class LinearEvaluator:
  """The paper's linear evaluation of a pretrained `SimCLRModel`."""

  def __init__(self, settings: LinearSettings, ctx: EvalContext, model: Any):
    self.settings, self.ctx, self.model = settings, ctx, model

  def run(self, variables: dict) -> EvalResult:
    s, ctx = self.settings, self.ctx
    steps = optim.total_steps(
      batch_size=s.batch_size,
      num_examples=ctx.info.num_train,
      epochs=s.epochs,
    )
    checkpoints = ctx.trainer_checkpoints(
      "linear evaluation", s, batch_size=s.batch_size, steps=steps
    )
    reporter = ctx.reporter(steps, s.batch_size)
    head = train_linear(
      self.model,
      variables,
      restartable(
        lambda done: ctx.train_batches(s.batch_size, start_step=done),
        reporter,
      ),
      mesh=ctx.mesh,
      num_classes=ctx.num_classes,
      steps=steps,
      batch_size=s.batch_size,
      image_size=ctx.data_cfg.image_size,
      base_learning_rate=s.base_learning_rate,
      lr_scaling=s.lr_scaling,
      weight_decay=s.weight_decay,
      momentum=s.momentum,
      seed=ctx.seed,
      zero_init_head=s.zero_init_head,
      decay_bias=s.decay_bias,
      log_fn=reporter.report if reporter else None,
      log_every=ctx.log_every,
      checkpoints=checkpoints,
      resume_hint=reporting.resume_hint("simclr_jax.downstream.run"),
    )
    metrics = evaluate_linear(
      self.model,
      variables,
      head,
      ctx.eval_batches(ctx.data_cfg.eval_split),
      mesh=ctx.mesh,
      num_classes=ctx.num_classes,
      image_size=ctx.data_cfg.image_size,
    )
    if reporter:
      reporter.close()
    return EvalResult(
      {"linear_top1": metrics["top1"], "linear_top5": metrics["top5"]},
      {"method": "sgd", "steps": steps},
    )


def from_config(
  run: RunConfig, ctx: EvalContext, model: Any
) -> LinearEvaluator:
  """mode="linear" (linear_eval.method="sgd")."""
  return LinearEvaluator(run.linear, ctx, model)
