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
linear evaluation (`simclr_jax/supervised.py`).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable, Optional

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from simclr_jax import augment
from simclr_jax import data as data_lib
from simclr_jax import models
from simclr_jax import optim
from simclr_jax import sharding
from simclr_jax.configlib.sections import FinetuneSettings, RunConfig
from simclr_jax.errors import UserError
from simclr_jax.data import subsets
from simclr_jax.eval import supervised
from simclr_jax.eval.base import EvalContext, EvalResult, restartable
from simclr_jax import reporting
from simclr_jax.training.forward import forward_fn
from simclr_jax.training import loop
from simclr_jax.training.resume import TrainerCheckpoints
from simclr_jax.training.state import (
  TrainState,
  gradient_step,
  jit_step,
  new_state,
)


LogFn = loop.LogFn


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


def _initial_state(
  variables: dict, tx: optax.GradientTransformation, seed: int, mesh: Mesh
) -> TrainState:
  """Step 0 of fine-tuning `variables`, replicated over `mesh`."""

  def init_state(params, batch_stats):
    # Copies inside jit: the state is donated at every step, and must never
    # share buffers with the caller's variables (device_put may alias them).
    copy = lambda tree: jax.tree.map(jnp.copy, tree)
    return new_state(
      copy(params), copy(batch_stats), tx, jax.random.PRNGKey(seed)
    )

  return jax.jit(init_state, out_shardings=sharding.replicated(mesh))(
    variables["params"], variables.get("batch_stats", {})
  )


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
  data = sharding.batch_sharding(mesh)
  crop_flip = augment.make_augment_config("crop_flip", image_size)
  forward = forward_fn(model, mesh, global_bn=global_bn)

  def step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    images, labels = batch["image"], batch["label"]
    step_key = jax.random.fold_in(state.rng, state.step)
    x = jax.lax.with_sharding_constraint(
      supervised.augmented_view(step_key, images, crop_flip), data
    )

    def loss_fn(params):
      out, mutated = forward(
        {"params": params, "batch_stats": state.batch_stats}, x
      )
      sums = supervised.masked_counts(
        out["logits"], labels, jnp.ones_like(labels, bool)
      )
      count = jnp.maximum(sums["count"], 1.0)
      loss = sums["loss"] / count
      return loss, (
        {"loss": loss, "top1": sums["top1"] / count},
        mutated["batch_stats"],
      )

    return gradient_step(state, loss_fn, tx=tx, schedule=schedule)

  return jit_step(step, mesh)


def finetune(
  model: models.FineTuneModel,
  variables: dict,
  batches: Iterable[dict] | Callable[[int], Iterable[dict]],
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
  checkpoints: TrainerCheckpoints | None = None,
  resume_hint: str = "run the same command again",
) -> dict:
  """Fine-tunes all of `variables` for `steps` steps; returns the new ones.

  Args:
    model, variables: the network (`models.finetune_model`) and its
      {'params', 'batch_stats'} (`init_variables`), left intact.
    batches: per-process host batches {'image': uint8 (b, S, S, 3), 'label'}
      of global size `batch_size` (`data.train_batches`), or a function of
      the steps done that returns them from there on (to resume).
    steps: optimiser steps; the cosine schedule reaches 0 at `steps`
      (`optim.total_steps` gives the reference count from epochs).
    base_learning_rate, lr_scaling: peak lr = 0.005 x sqrt(B) by default;
      `warmup_steps` of linear warmup (the reference uses none).
    log_fn: log_fn(step, mean metrics) every `log_every` steps and at the end.
    checkpoints: saves (when due, at the end, on SIGTERM/SIGINT: then
      `preemption.Interrupted`, ending with `resume_hint`) and resumes.
  """
  if steps < 1:
    raise UserError(f"fine-tuning needs steps >= 1, got steps={steps}")
  schedule = optim.step_schedule(
    base_learning_rate=base_learning_rate,
    batch_size=batch_size,
    scaling=lr_scaling,
    total_steps=steps,
    warmup_steps=warmup_steps,
  )
  tx = optim.lars(
    schedule, variables["params"], weight_decay=weight_decay, momentum=momentum
  )

  state, start = loop.start_state(
    lambda: _initial_state(variables, tx, seed, mesh),
    sharding.replicated(mesh),
    checkpoints,
  )
  step_fn = make_finetune_step(
    model=model,
    tx=tx,
    schedule=schedule,
    mesh=mesh,
    image_size=image_size,
    global_bn=global_bn,
  )
  state = loop.run_labelled(
    step_fn,
    state,
    batches,
    start=start,
    data_sharding=sharding.batch_sharding(mesh),
    checkpoints=checkpoints,
    last_step=steps,
    log_every=log_every,
    loss_key="loss",
    what="fine-tuning",
    nan_advice="lower base_learning_rate.",
    log_fn=log_fn,
    batch_size=batch_size,
    resume_hint=resume_hint,
  )
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

  return supervised.topk_accuracy(logits_fn, variables, eval_batches, mesh)


class FinetuneEvaluator:
  """Semi-supervised fine-tuning of a pretrained `SimCLRModel` on a
  stratified `label_fraction` of the training labels."""

  def __init__(self, settings: FinetuneSettings, ctx: EvalContext, model: Any):
    self.settings, self.ctx, self.model = settings, ctx, model

  def _labelled_data(self) -> tuple[Any, int, int, int]:
    """This process's shard of the labelled subset, the number of labelled
    images, the batch size (at most all of them, a multiple of the device
    count) and the step count."""
    s, ctx = self.settings, self.ctx
    shard = subsets.load_subset_shard(
      ctx.data_cfg,
      s.label_fraction,
      ctx.seed,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
    )
    num_labelled = shard.num_examples * jax.process_count()
    devices = jax.device_count()
    batch_size = min(
      s.batch_size, max(devices, num_labelled // devices * devices)
    )
    steps = optim.total_steps(
      batch_size=batch_size, num_examples=num_labelled, epochs=s.epochs
    )
    return shard, num_labelled, batch_size, steps

  def run(self, variables: dict) -> EvalResult:
    s, ctx = self.settings, self.ctx
    shard, num_labelled, batch_size, steps = self._labelled_data()
    model = models.finetune_model(
      self.model, num_classes=ctx.num_classes, head_layers=s.head_layers
    )
    start = init_variables(
      model,
      variables,
      image_size=ctx.data_cfg.image_size,
      seed=ctx.seed,
      zero_init_head=s.zero_init_head,
    )
    checkpoints = ctx.trainer_checkpoints(
      "fine-tuning", s, batch_size=batch_size, steps=steps
    )
    reporter = ctx.reporter(steps, batch_size)
    where = (
      f"head layer {s.head_layers}" if s.head_layers else "the encoder output"
    )
    ctx.print(
      f"fine-tuning on {num_labelled:,} labelled images "
      f"({s.label_fraction:g} of the labels), batch {batch_size}, "
      f"{steps:,} steps, from {where}."
    )

    batches = functools.partial(
      data_lib.shard_batches,
      [shard],
      first_index=jax.process_index(),
      num_shards=jax.process_count(),
      global_batch_size=batch_size,
      seed=ctx.seed,
      shuffle_buffer=ctx.data_cfg.shuffle_buffer,
    )
    tuned = finetune(
      model,
      start,
      restartable(lambda done: batches(start_step=done), reporter),
      mesh=ctx.mesh,
      steps=steps,
      batch_size=batch_size,
      image_size=ctx.data_cfg.image_size,
      base_learning_rate=s.base_learning_rate,
      lr_scaling=s.lr_scaling,
      weight_decay=s.weight_decay,
      momentum=s.momentum,
      warmup_steps=optim.warmup_steps(
        batch_size=batch_size,
        num_examples=num_labelled,
        warmup_epochs=s.warmup_epochs,
      ),
      seed=ctx.seed,
      global_bn=s.global_bn,
      log_fn=reporter.report if reporter else None,
      log_every=ctx.log_every,
      checkpoints=checkpoints,
      resume_hint=reporting.resume_hint("simclr_jax.downstream.run"),
    )
    metrics = evaluate(
      model,
      tuned,
      ctx.eval_batches(ctx.data_cfg.eval_split),
      ctx.mesh,
      ctx.data_cfg.image_size,
    )
    if reporter:
      reporter.close()
    return EvalResult(
      {"finetune_top1": metrics["top1"], "finetune_top5": metrics["top5"]},
      {
        "label_fraction": s.label_fraction,
        "num_labelled": num_labelled,
        "batch_size": batch_size,
        "steps": steps,
        "head_layers": s.head_layers,
      },
    )


def from_config(
  run: RunConfig, ctx: EvalContext, model: Any
) -> FinetuneEvaluator:
  """mode="finetune"."""
  return FinetuneEvaluator(run.finetune, ctx, model)
