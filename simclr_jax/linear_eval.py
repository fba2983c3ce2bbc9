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
`simclr_jax/classify.py`, shared with fine-tuning.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from simclr_jax import augment
from simclr_jax import classify
from simclr_jax import data as data_lib
from simclr_jax import evaluation
from simclr_jax import optim
from simclr_jax.errors import UserError
from simclr_jax.models import SupervisedHead
from simclr_jax.train_step import DATA_AXIS

Forward = Callable[[Any, Any, Any, jnp.ndarray, bool], tuple[jnp.ndarray, Any]]


@flax.struct.dataclass
class SupervisedState:
  step: jnp.ndarray  # int32 scalar
  params: Any  # what the optimiser updates
  opt_state: Any
  batch_stats: Any  # state the forward pass updates ({} when frozen)
  rng: jnp.ndarray  # base key; step keys fold in `step`


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
  data = NamedSharding(mesh, P(DATA_AXIS))
  replicated = NamedSharding(mesh, P())

  def step(state: SupervisedState, frozen: Any, batch: dict):
    labels = batch["label"]
    key = jax.random.fold_in(state.rng, state.step)
    x = jax.lax.with_sharding_constraint(
      classify.augmented_view(key, batch["image"], augment_config), data
    )

    def loss_fn(params):
      logits, batch_stats = forward(params, state.batch_stats, frozen, x, True)
      loss = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), labels
      ).mean()
      return loss, (logits, batch_stats)

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(
      loss_fn, has_aux=True
    )(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    metrics = {"loss": loss, "top1": jnp.mean(jnp.argmax(logits, -1) == labels)}
    if schedule is not None:
      metrics["learning_rate"] = schedule(state.step)
    return state.replace(
      step=state.step + 1,
      params=optax.apply_updates(state.params, updates),
      opt_state=opt_state,
      batch_stats=batch_stats,
    ), metrics

  return jax.jit(
    step,
    in_shardings=(replicated, replicated, data),
    out_shardings=(replicated, replicated),
    donate_argnums=(0,),
  )


def _global(
  batch: dict, keys: tuple[str, ...], sharding: NamedSharding
) -> dict:
  batch = {k: batch[k] for k in keys}
  if isinstance(batch["image"], jax.Array):
    return batch
  return data_lib.to_global(batch, sharding)


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
  train_batches: Iterator[dict],
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
) -> Any:
  """Trains a linear head on the frozen encoder; returns the head params.

  `variables` are the SimCLRModel's {'params', 'batch_stats'} (never
  modified); `train_batches` yields global batches of `batch_size` (uint8
  images, int labels) as from data.train_batches, per-process numpy or
  already on device. The head starts at zero (`zero_init_head`) and
  `weight_decay` covers its bias too (`decay_bias`), as in the reference.
  `log_fn(step, means)` gets the loss, train top-1 and learning rate
  averaged over every `log_every` steps.
  """
  if num_classes < 1 or steps < 1:
    raise UserError(
      f"linear evaluation needs labelled data and steps >= 1; "
      f"got num_classes={num_classes}, steps={steps}."
    )
  data = NamedSharding(mesh, P(DATA_AXIS))
  replicated = NamedSharding(mesh, P())
  frozen = jax.device_put(evaluation.backbone_variables(variables), replicated)
  schedule = optim.learning_rate_schedule(
    base_learning_rate=base_learning_rate,
    batch_size=batch_size,
    num_examples=batch_size,
    epochs=steps,
    warmup_epochs=0.0,
    scaling=lr_scaling,
    train_steps=steps,
  )
  forward = linear_forward(model, num_classes)
  dim = jax.eval_shape(
    lambda v: model.backbone.apply(
      v, jnp.zeros((1, image_size, image_size, 3)), train=False
    ),
    frozen,
  ).shape[-1]
  tx = head_optimizer(
    schedule,
    momentum=momentum,
    weight_decay=weight_decay,
    decay_bias=decay_bias,
  )

  def init(key):
    params = init_head(key, num_classes, dim, zero_init=zero_init_head)
    return SupervisedState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      opt_state=tx.init(params),
      batch_stats={},
      rng=jax.random.fold_in(key, 1),
    )

  state = jax.jit(init, out_shardings=replicated)(jax.random.PRNGKey(seed))
  train_step = make_supervised_train_step(
    forward,
    tx,
    mesh,
    augment.make_augment_config(augment_preset, image_size),
    schedule,
  )
  history = []
  for step in range(1, steps + 1):
    batch = _global(next(train_batches), ("image", "label"), data)
    if batch["label"].shape[0] != batch_size:
      raise UserError(
        f"linear evaluation got a global batch of {batch['label'].shape[0]}"
        f" examples but batch_size={batch_size} (used for the learning "
        "rate); make them agree."
      )
    state, metrics = train_step(state, frozen, batch)
    if log_fn is None:
      continue
    history.append(metrics)
    if step % log_every == 0 or step == steps:
      host = jax.device_get(history)
      history.clear()
      log_fn(step, {k: float(np.mean([h[k] for h in host])) for k in host[0]})
  return state.params


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
  replicated = NamedSharding(mesh, P())
  frozen = jax.device_put(evaluation.backbone_variables(variables), replicated)
  forward = linear_forward(model, num_classes)

  def logits_fn(v, images):
    x = augment.preprocess_eval(images, image_size=image_size)
    return forward(v["head"], {}, v["encoder"], x, False)[0]

  return classify.topk_accuracy(
    logits_fn, {"head": head_params, "encoder": frozen}, eval_batches, mesh
  )
