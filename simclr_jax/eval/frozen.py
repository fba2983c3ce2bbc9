"""The end-of-pretraining evaluation: the frozen encoder, and baselines.

Rows: the trained encoder, and as baselines a random encoder of the same
architecture (BN statistics re-estimated on data) and, optionally, the raw
pixels. Every row is judged by kNN (each k of `config.eval.knn_ks`) and,
with `config.eval.linear_probe`, the logistic regression, from one feature
extraction per split; the trained row also gets the online supervised
head's top-1 / top-5 on the eval split.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import jax
import numpy as np

from simclr_jax import optim
from simclr_jax.eval import features as features_lib
from simclr_jax.eval import knn
from simclr_jax.eval import logistic
from simclr_jax.configlib.sections import FrozenSettings, RunConfig
from simclr_jax.eval.base import EvalContext, Features
from simclr_jax.reporting import Reporter, format_duration


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


class FrozenEncoderEvaluation:
  """Trained / random / raw-pixel rows, each scored by kNN and (optionally)
  the logistic regression on one extraction of its features."""

  def __init__(
    self,
    settings: FrozenSettings,
    ctx: EvalContext,
    model: Any,
    feature_fn: Callable,
    judges: tuple[knn.KnnEvaluator, logistic.LogisticEvaluator | None],
    init_variables: Callable[[int], dict],
  ):
    self.settings, self.ctx, self.model = settings, ctx, model
    self.feature_fn = feature_fn
    self.knn, self.logistic = judges
    self.init_variables = init_variables

  def _scores(
    self, row: str, fn: Callable, variables: Any, online_head=None
  ) -> dict[str, float]:
    """One row, with a progress line before and after (the extraction and
    the probe take minutes on a CPU)."""
    self.ctx.print(f"  {row}: extracting features...")
    start = time.time()
    train, test = self.ctx.split_features(
      fn, variables, self.settings.max_train_examples
    )
    extracted = time.time()
    scores = self.score(train, test, online_head)
    self.ctx.print(
      f"  {row}: features of {len(train[0]):,} + {len(test[0]):,} images in "
      f"{format_duration(extracted - start)}, scored in "
      f"{format_duration(time.time() - extracted)}"
    )
    return scores

  def score(
    self, train: Features, test: Features, online_head: Any = None
  ) -> dict[str, float]:
    """One row: kNN top-1 per k, logistic top-1, online head (trained)."""
    by_k = self.knn.score(train, test).metrics
    out = {
      f"knn_k{k}_top1": by_k[f"knn_k{k}_top1"] for k in self.knn.settings.ks
    }
    if self.logistic is not None:
      out["linear_top1"] = self.logistic.score(train, test).metrics[
        "linear_top1"
      ]
    if online_head is not None:
      out.update(online_head_accuracy(online_head, *test))
    return out

  def run(
    self, variables: dict, reporter: Reporter, step: int
  ) -> dict[str, dict[str, float]]:
    """Scores every row, prints the table and writes `eval/<row>/<metric>`
    scalars at `step`; returns {row: metrics}."""
    ctx, s = self.ctx, self.settings
    head = variables["params"].get(optim.SUPERVISED_HEAD)  # online head
    ks = ", ".join(map(str, self.knn.settings.ks))
    reporter.print(
      f"Evaluating on '{ctx.data_cfg.eval_split}' "
      f"({ctx.info.num_eval:,} images): kNN (k={ks}) and linear probe on "
      "frozen features"
      + (", online supervised head" if head is not None else "")
      + "..."
    )
    results = {
      "trained": self._scores("trained", self.feature_fn, variables, head)
    }
    if s.compare_random_init:
      ctx.print(
        "  random_init: estimating BatchNorm statistics on train data..."
      )
      random = features_lib.recalibrate_batch_stats(
        self.model,
        self.init_variables(ctx.seed + 1),
        ctx.eval_batches(ctx.data_cfg.train_split),
        ctx.mesh,
        ctx.data_cfg.image_size,
      )
      results["random_init"] = self._scores(
        "random_init", self.feature_fn, random
      )
    if s.compare_raw_pixels:
      pixels = features_lib.make_pixel_fn(ctx.mesh, ctx.data_cfg.image_size)
      results["raw_pixels"] = self._scores("raw_pixels", pixels, None)
    reporter.print(results_table(results))
    for name, res in results.items():
      reporter.write_scalars(
        step, {f"eval/{name}/{k}": v for k, v in res.items()}
      )
    return results


def results_table(results: dict[str, dict[str, float]]) -> str:
  """The rows as a fixed-width text table of percentages."""
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


def from_config(
  run: RunConfig,
  ctx: EvalContext,
  model: Any,
  feature_fn: Callable,
  init_variables: Callable[[int], dict],
) -> FrozenEncoderEvaluation:
  """The evaluation `config.eval` describes; `init_variables(seed)` gives a
  freshly initialised model (the random-encoder row)."""
  e = run.eval
  judge = logistic.LogisticEvaluator(e.logistic, ctx, feature_fn)
  return FrozenEncoderEvaluation(
    e.frozen,
    ctx,
    model,
    feature_fn,
    (
      knn.KnnEvaluator(e.knn, ctx, feature_fn),
      judge if e.frozen.linear_probe else None,
    ),
    init_variables,
  )
