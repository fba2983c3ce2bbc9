"""SimCLR pretraining: set-up, the training loop, checkpoints, final eval.

`train_and_evaluate(config, workdir)` is the whole job. Everything that can
be wrong with the user's input is checked before the workdir is touched.
"""

from __future__ import annotations

import math
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from simclr_jax import checkpointing
from simclr_jax import configlib
from simclr_jax import data as data_lib
from simclr_jax import optim
from simclr_jax import train_state as ts
from simclr_jax import train_step as step_lib
from simclr_jax import evaluation
from simclr_jax import knn
from simclr_jax import probe
from simclr_jax import results as results_lib
from simclr_jax.errors import UserError
from simclr_jax.reporting import Reporter, format_duration


def make_mesh() -> jax.sharding.Mesh:
  """A 1-D mesh named 'data' over every device of every process.

  Auto axes: jit's partitioner places intermediates, and our only explicit
  collectives live inside `shard_map` (the NT-Xent all-gather).
  """
  return jax.make_mesh(
    (jax.device_count(),),
    (step_lib.DATA_AXIS,),
    axis_types=(jax.sharding.AxisType.Auto,),
  )


def data_config(config: ml_collections.ConfigDict) -> data_lib.DataConfig:
  return data_lib.DataConfig(**config.data.to_dict())


class TrainSetup:
  """Everything the loop needs, built from the config without side effects."""

  def __init__(self, config: ml_collections.ConfigDict):
    configlib.validate(config, jax.device_count(), jax.process_count())
    self.mesh = make_mesh()
    self.data_cfg = data_config(config)
    self.view_cfgs = configlib.view_configs(config)
    self.info = data_lib.dataset_info(self.data_cfg)
    if self.info.num_train < config.batch_size:
      raise UserError(
        f"the training split has {self.info.num_train} examples, fewer than "
        f"config.batch_size={config.batch_size}; lower the batch size."
      )
    self.total_steps = optim.total_steps(
      batch_size=config.batch_size,
      num_examples=self.info.num_train,
      epochs=config.epochs,
      train_steps=config.train_steps,
    )
    self.schedule = ts.create_schedule(
      config.optim,
      batch_size=config.batch_size,
      num_examples=self.info.num_train,
      epochs=config.epochs,
      train_steps=config.train_steps,
    )
    self.model = ts.create_model(config.model, self.info.num_classes)
    self.global_bn = config.model.global_bn
    self.make_tx = lambda params: ts.create_optimizer(
      config.optim, self.schedule, params
    )
    self.init_fn = ts.make_init_fn(
      self.model, config.data.image_size, self.make_tx
    )
    self.replicated = NamedSharding(self.mesh, P())
    self.data_sharding = NamedSharding(self.mesh, P(step_lib.DATA_AXIS))
    # Shapes first (no compute, no memory): checks the model builds and gives
    # the restore target.
    self.abstract_state = ts.abstract_state(self.init_fn, self.replicated)
    # Frozen-encoder features for the monitor and the final evaluation; one
    # jitted function, so each shape compiles once.
    self.feature_fn = evaluation.make_feature_fn(
      self.model, self.mesh, config.data.image_size
    )

  def make_train_step(
    self, loss_cfg: ml_collections.ConfigDict, params: Any
  ) -> Any:
    """The jitted, state-donating pretraining step for this set-up."""
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

  def init_state(self, seed: int) -> ts.TrainState:
    init = jax.jit(self.init_fn, out_shardings=self.replicated)
    return init(jax.random.PRNGKey(seed))


def _mean_metrics(history: list[dict]) -> dict[str, float]:
  host = jax.device_get(history)
  return {k: float(np.mean([h[k] for h in host])) for k in host[0]}


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str
) -> dict[str, Any]:
  """Pretrains (resuming from `workdir` if it holds a checkpoint), evaluates,
  and returns the results written to `workdir/results.json` (schema in
  simclr_jax/results.py)."""
  start_time = time.time()
  checkpointing.check_workdir(workdir)
  signature = configlib.model_signature(config)
  checkpointing.check_compatible(workdir, signature)
  setup = TrainSetup(config)

  # From here on the workdir is written.
  ckpt = checkpointing.Checkpointer(
    workdir,
    keep=config.keep_checkpoints,
    every_steps=config.checkpoint_every_steps,
  )
  checkpointing.write_run_config(
    workdir, config.to_json_best_effort(), signature
  )
  latest = ckpt.latest_step()
  if latest is not None:
    state = ckpt.restore(setup.abstract_state)
  else:
    state = setup.init_state(config.seed)
  start_step = int(state.step)
  reporter = Reporter(
    workdir,
    total_steps=setup.total_steps,
    batch_size=config.batch_size,
    start_step=start_step,
  )
  if latest is not None:
    reporter.print(f"Resumed from {ckpt.directory} at step {latest}.")
  n_params = ts.count_params(state.params["backbone"])
  reporter.print(
    f"SimCLR: ResNet-{config.model.depth} x{config.model.width_multiplier} "
    f"({n_params:,} backbone params) on {jax.device_count()} "
    f"{jax.devices()[0].platform} device(s), {jax.process_count()} "
    f"process(es); {setup.info.num_train:,} training images, batch "
    f"{config.batch_size}, {setup.total_steps:,} steps."
  )

  train_step = setup.make_train_step(config.loss, state.params)
  batches = data_lib.prefetch_to_device(
    data_lib.train_batches(
      setup.data_cfg,
      global_batch_size=config.batch_size,
      seed=config.seed,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
      start_step=start_step,
      # 0: one reader shard per device, so the order depends on the
      # device count but never on the process count.
      num_shards=config.data.num_shards or jax.device_count(),
    ),
    setup.data_sharding,
  )

  monitor = _Monitor(config, setup)
  history: list[dict] = []
  step = start_step
  try:
    for step in range(start_step + 1, setup.total_steps + 1):
      state, metrics = train_step(state, next(batches))
      history.append(metrics)
      if step % config.log_every_steps == 0 or step == setup.total_steps:
        summary = _mean_metrics(history)
        history.clear()
        if not math.isfinite(summary["contrastive_loss"]):
          raise UserError(
            f"the loss became {summary['contrastive_loss']} by step {step}; "
            "lower config.optim.base_learning_rate or turn off "
            "config.model.half_precision, then resume from the last "
            f"checkpoint in {ckpt.directory}."
          )
        reporter.report(step, summary)
      if monitor.due(step):
        scores = monitor(state)
        reporter.write_scalars(step, scores)
        reporter.print(
          f"step {step}: kNN top-1 "
          f"{100 * scores['monitor/knn_accuracy']:.2f}% "
          "(monitor)"
        )
      ckpt.maybe_save(step, state)
    ckpt.maybe_save(step, state, force=True)
  finally:
    batches.close()
    ckpt.close()
  train_time = time.time() - start_time
  reporter.print(f"Pretraining done in {format_duration(train_time)}.")

  metrics: dict[str, Any] = {}
  if config.eval.enabled and setup.info.num_eval and setup.info.num_classes:
    metrics = _evaluate(config, setup, state, reporter)
  reporter.close()
  out = results_lib.make(
    mode="pretrain",
    metrics=metrics,
    checkpoint_dir=workdir,
    step=int(state.step),
    dataset=results_lib.dataset_summary(setup.data_cfg, setup.info),
    config=config,
    time_s=time.time() - start_time,
    details={"train_time_s": round(train_time, 1)},
  )
  results_lib.write(workdir, out)
  return out


class _Monitor:
  """kNN top-1 of the current encoder on the eval split, every so often
  during pretraining (config.eval.monitor_every_epochs), against a bank of
  the first `monitor_train_examples` training images."""

  def __init__(self, config: ml_collections.ConfigDict, setup: TrainSetup):
    e = config.eval
    self.every = 0
    if (
      e.monitor_every_epochs > 0
      and setup.info.num_eval
      and setup.info.num_classes
    ):
      self.every = max(
        1,
        round(
          e.monitor_every_epochs * setup.info.num_train / config.batch_size
        ),
      )
    self.config, self.setup = config, setup

  def due(self, step: int) -> bool:
    return bool(self.every) and step % self.every == 0

  def __call__(self, state: ts.TrainState) -> dict[str, float]:
    e, setup = self.config.eval, self.setup
    variables = {"params": state.params, "batch_stats": state.batch_stats}

    def features(split, cap=0):
      return evaluation.extract_features(
        setup.feature_fn,
        variables,
        _eval_batches(self.config, setup, split),
        setup.data_sharding,
        max_examples=cap,
      )

    bank = features(setup.data_cfg.train_split, e.monitor_train_examples)
    queries = features(setup.data_cfg.eval_split)
    k = max(e.knn_ks)
    acc = knn.knn_classify(
      *bank,
      *queries,
      num_classes=setup.info.num_classes,
      ks=(k,),
      temperature=e.knn_temperature,
      mesh=setup.mesh,
    )[f"knn_top1_k{k}"]
    return {"monitor/knn_accuracy": acc}


def _eval_batches(
  config: ml_collections.ConfigDict, setup: TrainSetup, split: str
):
  return data_lib.eval_batches(
    setup.data_cfg,
    split,
    global_batch_size=config.eval.batch_size,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
  )


def _scores(
  e: ml_collections.ConfigDict,
  num_classes: int,
  seed: int,
  mesh: jax.sharding.Mesh,
  train: tuple,
  test: tuple,
) -> dict[str, float]:
  """kNN (every k in e.knn_ks) and the logistic probe on given features."""
  knn_out = knn.knn_classify(
    *train,
    *test,
    num_classes=num_classes,
    ks=tuple(e.knn_ks),
    temperature=e.knn_temperature,
    mesh=mesh,
  )
  out = {f"knn_k{k}_accuracy": knn_out[f"knn_top1_k{k}"] for k in e.knn_ks}
  if e.linear_probe:
    out["linear_accuracy"] = probe.linear_probe(
      *train,
      *test,
      num_classes=num_classes,
      seed=seed,
      mesh=mesh,
      max_iters=e.probe_max_iters,
    )["top1"]
  return out


def online_head_accuracy(
  head_params: Any,
  features: np.ndarray,
  labels: np.ndarray,
  *,
  chunk: int = 8192,
) -> dict[str, float]:
  """Top-1 / top-5 of the online supervised head on frozen features.

  `head_params` are the 'head_supervised' params trained jointly during
  pretraining ({'linear': {'kernel', 'bias'}}); `features` are the backbone
  outputs the head sees inside `SimCLRModel`. On eval-split features (eval
  preprocessing, inference-mode BN) these are the reference's
  end-of-pretraining `label_top_1_accuracy` / `label_top_5_accuracy`.
  Computed on the host, `chunk` rows at a time; top-5 is top-min(5, C), and
  a row's top-1 hit is also a top-5 hit.
  """
  head = jax.device_get(head_params)["linear"]
  kernel = np.asarray(head["kernel"], np.float32)
  bias = np.asarray(head["bias"], np.float32)
  labels = np.asarray(labels)
  k = min(5, kernel.shape[-1])
  top1 = top5 = 0
  for i in range(0, len(labels), chunk):
    logits = np.asarray(features[i : i + chunk], np.float32) @ kernel + bias
    top = np.argsort(-logits, axis=-1, kind="stable")[:, :k]
    hits = top == labels[i : i + chunk, None]
    top1 += int(hits[:, 0].sum())
    top5 += int(hits.any(-1).sum())
  n = max(len(labels), 1)
  return {"online_head_top1": top1 / n, "online_head_top5": top5 / n}


def _evaluate(
  config: ml_collections.ConfigDict,
  setup: TrainSetup,
  state: ts.TrainState,
  reporter: Reporter,
) -> dict[str, Any]:
  """kNN and linear probe for the trained encoder, and as baselines a
  random encoder of the same architecture and (optionally) raw pixels; the
  trained row also holds the online head's top-1 / top-5 on the eval
  split."""
  e = config.eval
  feature_fn = setup.feature_fn
  train_split = setup.data_cfg.train_split

  def features(fn, variables, split):
    cap = e.max_train_examples if split == train_split else 0
    return evaluation.extract_features(
      fn,
      variables,
      _eval_batches(config, setup, split),
      setup.data_sharding,
      max_examples=cap,
    )

  def scores(fn, variables, online_head=None) -> dict[str, float]:
    test = features(fn, variables, setup.data_cfg.eval_split)
    out = _scores(
      e,
      setup.info.num_classes,
      config.seed,
      setup.mesh,
      features(fn, variables, train_split),
      test,
    )
    if online_head is not None:
      out.update(online_head_accuracy(online_head, *test))
    return out

  head = state.params.get(optim.SUPERVISED_HEAD)  # online head, if any
  reporter.print(
    f"Evaluating on '{setup.data_cfg.eval_split}' "
    f"({setup.info.num_eval:,} images): kNN (k="
    f"{', '.join(map(str, e.knn_ks))}) and linear probe on "
    "frozen features"
    + (", online supervised head" if head is not None else "")
    + "..."
  )
  trained = {"params": state.params, "batch_stats": state.batch_stats}
  results = {"trained": scores(feature_fn, trained, head)}
  if e.compare_random_init:
    random_state = setup.init_state(config.seed + 1)
    variables = evaluation.recalibrate_batch_stats(
      setup.model,
      {"params": random_state.params, "batch_stats": random_state.batch_stats},
      _eval_batches(config, setup, train_split),
      setup.mesh,
      config.data.image_size,
    )
    results["random_init"] = scores(feature_fn, variables)
  if e.compare_raw_pixels:
    results["raw_pixels"] = scores(
      evaluation.make_pixel_fn(setup.mesh, config.data.image_size), None
    )
  reporter.print(_results_table(results))
  step = int(state.step)
  for name, res in results.items():
    reporter.write_scalars(
      step, {f"eval/{name}/{k}": v for k, v in res.items()}
    )
  return results


def _results_table(results: dict[str, dict[str, float]]) -> str:
  metrics = sorted({k for r in results.values() for k in r})
  header = f"{'encoder':<12}" + "".join(f"{m:>18}" for m in metrics)
  rows = [header]
  for name, res in results.items():
    rows.append(
      f"{name:<12}"
      + "".join(
        f"{100 * res[m]:>17.2f}%" if m in res else f"{'-':>18}" for m in metrics
      )
    )
  return "\n".join(rows)
