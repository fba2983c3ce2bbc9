"""Frozen-encoder features for evaluation: extraction and BN recalibration.

Used at the end of pretraining (trained vs random encoder vs raw pixels), by
the kNN monitor and by the downstream protocols. Features are computed
sharded over the mesh and gathered to the host; kNN (`knn.py`) and the
logistic regression (`logistic.py`) then judge them.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding

from simclr_jax import augment
from simclr_jax import sharding as sharding_lib


def backbone_variables(variables: dict) -> dict:
  """The encoder's own {'params', 'batch_stats'} out of SimCLRModel variables."""
  return {
    "params": variables["params"]["backbone"],
    "batch_stats": variables["batch_stats"]["backbone"],
  }


def make_feature_fn(model: Any, mesh: Mesh, image_size: int) -> Callable:
  """Returns jitted (variables, uint8 images) -> representations (frozen BN)."""
  data = sharding_lib.batch_sharding(mesh)
  replicated = sharding_lib.replicated(mesh)

  def features(variables, images):
    x = augment.preprocess_eval(images, image_size=image_size)
    return model.backbone.apply(backbone_variables(variables), x, train=False)

  return jax.jit(features, in_shardings=(replicated, data), out_shardings=data)


def make_pixel_fn(mesh: Mesh, image_size: int) -> Callable:
  """Like `make_feature_fn` with the identity encoder: the eval-preprocessed
  pixels, flattened (the raw-pixel baseline; `variables` is ignored)."""
  data = sharding_lib.batch_sharding(mesh)

  def pixels(variables, images):
    del variables
    x = augment.preprocess_eval(images, image_size=image_size)
    return x.reshape(x.shape[0], -1).astype(jnp.float32)

  return jax.jit(pixels, in_shardings=(None, data), out_shardings=data)


def extract_features(
  feature_fn: Callable,
  variables: dict,
  batches: Iterable[dict],
  sharding: NamedSharding,
  max_examples: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
  """Runs the encoder over `batches`; returns host (features, labels).

  With `max_examples > 0`, stops reading once that many real examples are
  in (every process stops at the same batch: the count is global) and
  returns exactly the first `max_examples`.
  """
  feats, labels = [], []
  total = 0
  for batch in batches:
    mask = batch.pop("mask")
    global_batch = sharding_lib.to_global(batch, sharding)
    f = sharding_lib.to_host(feature_fn(variables, global_batch["image"]))
    lab = sharding_lib.to_host(global_batch["label"])
    m = sharding_lib.to_host(sharding_lib.to_global({"m": mask}, sharding)["m"])
    feats.append(f[m])
    labels.append(lab[m])
    total += int(m.sum())
    if max_examples and total >= max_examples:
      break
  x, y = np.concatenate(feats), np.concatenate(labels)
  return (x[:max_examples], y[:max_examples]) if max_examples else (x, y)


def recalibrate_batch_stats(
  model: Any,
  variables: dict,
  batches: Iterable[dict],
  mesh: Mesh,
  image_size: int,
  max_batches: int = 20,
) -> dict:
  """Re-estimates BN running statistics on data (for the random encoder).

  A freshly initialised network has running mean 0 / variance 1, which says
  nothing about real activations. This averages the batch statistics of up
  to `max_batches` full batches (padded batches are skipped), with no trace
  of the initial values left, so the random baseline gets a fair
  inference-mode encoder.
  """
  data = sharding_lib.batch_sharding(mesh)
  backbone = model.backbone.clone(bn_momentum=0.0)  # stats = this batch

  @jax.jit
  def batch_stats(variables, images):
    x = augment.preprocess_eval(images, image_size=image_size)
    _, mutated = backbone.apply(
      backbone_variables(variables), x, train=True, mutable=["batch_stats"]
    )
    return mutated["batch_stats"]

  total, count = None, 0
  for batch in batches:
    if count == max_batches:
      break
    if not batch.pop("mask").all():
      continue
    stats = batch_stats(variables, sharding_lib.to_global(batch, data)["image"])
    total = stats if total is None else jax.tree.map(jnp.add, total, stats)
    count += 1
  if not count:
    return variables
  mean = jax.tree.map(lambda t: t / count, total)
  return dict(
    variables, batch_stats=dict(variables["batch_stats"], backbone=mean)
  )
