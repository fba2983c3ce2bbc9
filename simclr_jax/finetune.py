"""Semi-supervised fine-tuning of a pretrained SimCLR network (docs/fidelity.md sections 4, 6).

The whole network trains: backbone, the first `head_layers` projection-head
layers (SimCLR v2 fine-tunes from head layer 1) and a fresh linear
classifier, with softmax cross-entropy on crop-and-flip views (augmented on
device, one key per example), BN in training mode with statistics over the
global batch (as in pretraining), and the reference recipe: LARS with the
pretraining masks (no decay or trust ratio for BN, biases and the classifier),
momentum 0.9, weight decay 0, lr 0.005 x sqrt(B), cosine decay, no warmup.
The classifier starts at zero, kernel and bias (the reference's fine-tuning
commands pass `--zero_init_logits_layer=True`), unless `zero_init_head` is
False.

The augmented view and the masked top-1/top-5 evaluation are shared with
linear evaluation (`simclr_jax/classify.py`).
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from simclr_jax import augment
from simclr_jax import classify
from simclr_jax import data as data_lib
from simclr_jax import models
from simclr_jax import optim
from simclr_jax import train_step as step_lib
from simclr_jax.errors import UserError
from simclr_jax.train_state import TrainState

DATA_AXIS = step_lib.DATA_AXIS
LogFn = Callable[[int, dict], None]


def init_variables(
  model: models.FineTuneModel,
  pretrained_variables: dict,
  *,
  image_size: int,
  seed: int = 0,
  zero_init_head: bool = True,
) -> dict:
  """Fine-tuning variables: pretrained everything but the classifier
  ('head_supervised'), which is all zeros (kernel and bias, the reference's
  `zero_init_logits_layer`) or, with `zero_init_head=False`, the Dense
  default init (kernel normal stddev 0.01, bias 0)."""
  dummy = jnp.zeros((2, image_size, image_size, 3), jnp.float32)
  fresh = jax.jit(lambda key: model.init(key, dummy, train=False))(
    jax.random.PRNGKey(seed)
  )
  if zero_init_head:
    params = dict(fresh["params"])
    params["head_supervised"] = jax.tree.map(
      jnp.zeros_like, params["head_supervised"]
    )
    fresh = dict(fresh, params=params)
  return models.init_from_pretrained(fresh, pretrained_variables)


def make_finetune_step(
  *,
  model: models.FineTuneModel,
  tx: optax.GradientTransformation,
  schedule: optax.Schedule,
  mesh: Mesh,
  image_size: int,
  global_bn: bool = True,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """Returns the jitted, state-donating step (state, batch) -> (state, metrics).

  Rows with label -1 are left out of the loss (they still shape the BN
  statistics). Metrics: loss, top1 (train batch accuracy), learning_rate,
  grad_norm.
  """
  data = NamedSharding(mesh, P(DATA_AXIS))
  replicated = NamedSharding(mesh, P())
  crop_flip = augment.make_augment_config("crop_flip", image_size)
  forward = step_lib.forward_fn(model, mesh, global_bn=global_bn)

  def step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    images, labels = batch["image"], batch["label"]
    step_key = jax.random.fold_in(state.rng, state.step)
    x = jax.lax.with_sharding_constraint(
      classify.augmented_view(step_key, images, crop_flip), data
    )

    def loss_fn(params):
      out, mutated = forward(
        {"params": params, "batch_stats": state.batch_stats}, x
      )
      sums = classify.masked_counts(
        out["logits"], labels, jnp.ones_like(labels, bool)
      )
      count = jnp.maximum(sums["count"], 1.0)
      loss = sums["loss"] / count
      return loss, (
        {"loss": loss, "top1": sums["top1"] / count},
        mutated["batch_stats"],
      )

    grads, (metrics, batch_stats) = jax.grad(loss_fn, has_aux=True)(
      state.params
    )
    return step_lib.apply_gradients(
      state, grads, batch_stats, tx=tx, schedule=schedule, metrics=metrics
    )

  return jax.jit(
    step,
    in_shardings=(replicated, data),
    out_shardings=(replicated, replicated),
    donate_argnums=(0,),
  )


def _labelled(batches: Iterable[dict]) -> Iterator[dict]:
  for batch in batches:
    yield {"image": batch["image"], "label": batch["label"]}


def finetune(
  model: models.FineTuneModel,
  variables: dict,
  batches: Iterable[dict],
  *,
  mesh: Mesh,
  steps: int,
  batch_size: int,
  image_size: int,
  base_learning_rate: float = 0.005,
  lr_scaling: str = "sqrt",
  weight_decay: float = 0.0,
  momentum: float = 0.9,
  warmup_steps: int = 0,
  seed: int = 0,
  global_bn: bool = True,
  log_fn: Optional[LogFn] = None,
  log_every: int = 100,
) -> dict:
  """Fine-tunes all of `variables` for `steps` steps; returns the new ones.

  Args:
    model: the network (`models.finetune_model`).
    variables: its {'params', 'batch_stats'}, usually from `init_variables`;
      left intact (the training state is a copy).
    batches: per-process host batches {'image': uint8 (b, S, S, 3), 'label'}
      of global size `batch_size` (e.g. `data.train_batches`); other keys are
      ignored.
    steps: optimiser steps; the cosine schedule reaches 0 at `steps`
      (`optim.total_steps` gives the reference count from epochs).
    base_learning_rate, lr_scaling: peak lr = 0.005 x sqrt(B) by default.
    warmup_steps: linear warmup steps (the reference uses none).
    log_fn: called as log_fn(step, mean metrics since the last call) every
      `log_every` steps and at the end.
  """
  if steps < 1 or log_every < 1:
    raise UserError(
      f"fine-tuning needs steps >= 1 and log_every >= 1, got "
      f"steps={steps}, log_every={log_every}"
    )
  # In step units: one "epoch" of `batch_size` examples per step.
  schedule = optim.learning_rate_schedule(
    base_learning_rate=base_learning_rate,
    batch_size=batch_size,
    num_examples=batch_size,
    epochs=steps,
    warmup_epochs=warmup_steps,
    scaling=lr_scaling,
    train_steps=steps,
  )
  params = variables["params"]
  tx = optim.lars(
    schedule, params, weight_decay=weight_decay, momentum=momentum
  )

  def init_state(params, batch_stats):
    # Copies inside jit: the state is donated at every step, and must never
    # share buffers with the caller's variables (device_put may alias them).
    copy = lambda tree: jax.tree.map(jnp.copy, tree)
    return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=copy(params),
      batch_stats=copy(batch_stats),
      opt_state=tx.init(params),
      rng=jax.random.PRNGKey(seed),
    )

  state = jax.jit(init_state, out_shardings=NamedSharding(mesh, P()))(
    params, variables.get("batch_stats", {})
  )
  step_fn = make_finetune_step(
    model=model,
    tx=tx,
    schedule=schedule,
    mesh=mesh,
    image_size=image_size,
    global_bn=global_bn,
  )
  device_batches = data_lib.prefetch_to_device(
    _labelled(batches), NamedSharding(mesh, P(DATA_AXIS))
  )
  history: list[dict] = []
  try:
    for step in range(1, steps + 1):
      batch = next(device_batches, None)
      if batch is None:
        raise UserError(
          f"the training batches ran out after {step - 1} of "
          f"{steps} steps; pass an endless iterator (e.g. "
          "data.train_batches) or fewer steps"
        )
      if batch["image"].shape[0] != batch_size:
        raise UserError(
          f"got a global batch of {batch['image'].shape[0]} "
          f"examples but batch_size={batch_size} (which sets "
          "the learning rate); make them agree"
        )
      state, metrics = step_fn(state, batch)
      history.append(metrics)
      if step % log_every == 0 or step == steps:
        host = jax.device_get(history)
        history.clear()
        summary = {k: float(np.mean([h[k] for h in host])) for k in host[0]}
        if not np.isfinite(summary["loss"]):
          raise UserError(
            f"the fine-tuning loss became {summary['loss']} by "
            f"step {step}; lower base_learning_rate"
          )
        if log_fn is not None:
          log_fn(step, summary)
  finally:
    device_batches.close()
  return {"params": state.params, "batch_stats": state.batch_stats}


def evaluate(
  model: models.FineTuneModel,
  variables: dict,
  eval_batches: Iterable[dict],
  mesh: Mesh,
  image_size: int,
) -> dict[str, float]:
  """Top-1/top-5 of the fine-tuned network, BN in inference mode, on the
  deterministic eval view (`augment.preprocess_eval`)."""

  def logits_fn(v, images):
    x = augment.preprocess_eval(images, image_size=image_size)
    return model.apply(v, x, train=False)["logits"]

  return classify.topk_accuracy(logits_fn, variables, eval_batches, mesh)
