"""Frozen-encoder features for evaluation: extraction, BN recalibration, kNN.

Used at the end of pretraining (trained vs random encoder vs raw pixels), by
the kNN monitor and by the downstream protocols. Features are computed
sharded over the mesh; kNN runs in query and bank chunks (`knn.py`); the
logistic-regression probe is `probe.py`.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from simclr_jax import augment
from simclr_jax import data as data_lib
from simclr_jax import knn


def backbone_variables(variables: dict) -> dict:
  """The encoder's own {'params', 'batch_stats'} out of SimCLRModel variables."""
  return {
    "params": variables["params"]["backbone"],
    "batch_stats": variables["batch_stats"]["backbone"],
  }


def make_feature_fn(model: Any, mesh: Mesh, image_size: int) -> Callable:
  """Returns jitted (variables, uint8 images) -> representations (frozen BN)."""
  data = NamedSharding(mesh, P("data"))
  replicated = NamedSharding(mesh, P())

  def features(variables, images):
    x = augment.preprocess_eval(images, image_size=image_size)
    return model.backbone.apply(backbone_variables(variables), x, train=False)

  return jax.jit(features, in_shardings=(replicated, data), out_shardings=data)


def make_pixel_fn(mesh: Mesh, image_size: int) -> Callable:
  """Like `make_feature_fn` with the identity encoder: the eval-preprocessed
  pixels, flattened (the raw-pixel baseline; `variables` is ignored)."""
  data = NamedSharding(mesh, P("data"))

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
    global_batch = data_lib.to_global(batch, sharding)
    f = feature_fn(variables, global_batch["image"])
    f = np.asarray(multihost_utils.process_allgather(f, tiled=True))
    lab = np.asarray(
      multihost_utils.process_allgather(global_batch["label"], tiled=True)
    )
    m = np.asarray(
      multihost_utils.process_allgather(
        jax.make_array_from_process_local_data(sharding, mask), tiled=True
      )
    )
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
  data = NamedSharding(mesh, P("data"))
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
    stats = batch_stats(variables, data_lib.to_global(batch, data)["image"])
    total = stats if total is None else jax.tree.map(jnp.add, total, stats)
    count += 1
  if not count:
    return variables
  mean = jax.tree.map(lambda t: t / count, total)
  return dict(
    variables, batch_stats=dict(variables["batch_stats"], backbone=mean)
  )


def knn_accuracy(
  train_x: np.ndarray,
  train_y: np.ndarray,
  test_x: np.ndarray,
  test_y: np.ndarray,
  *,
  num_classes: int,
  k: int = 200,
  temperature: float = 0.1,
  chunk: int = 1024,
) -> float:
  """Top-1 of cosine kNN with votes weighted by exp(similarity / temperature).

  `chunk` is the query chunk; the bank is streamed in chunks too (knn.py).
  """
  scores = knn.knn_classify(
    train_x,
    train_y,
    test_x,
    test_y,
    num_classes=num_classes,
    ks=(k,),
    temperature=temperature,
    query_chunk=chunk,
  )
  return scores[f"knn_top1_k{k}"]
