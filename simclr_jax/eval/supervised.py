"""Pieces shared by the supervised protocols (linear evaluation, fine-tuning).

Both train a classifier on one crop-and-flip view per image and report masked
top-1 / top-5 accuracy on padded eval batches; this module holds those parts
once so the two protocols cannot drift apart.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from simclr_jax import augment
from simclr_jax import sharding
from simclr_jax.augment import views
from simclr_jax.errors import UserError


def augmented_view(
  step_key: jax.Array, images: jnp.ndarray, config: augment.AugmentConfig
) -> jnp.ndarray:
  """One random view per image; keys from global example indices, so the
  result does not depend on how the batch is split over devices."""
  keys = views.example_keys(step_key, images.shape[0])[:, 0]
  return jax.vmap(lambda k, im: augment.augment_image(k, im, config=config))(
    keys, images
  )


def masked_counts(
  logits: jnp.ndarray, labels: jnp.ndarray, mask: jnp.ndarray
) -> dict[str, jnp.ndarray]:
  """Sums over the rows where `mask` (and label >= 0): cross-entropy,
  top-1 / top-min(5, C) hits, and the row count.

  Both hit counts come from the same top-k, so top5 >= top1 holds exactly,
  ties included.
  """
  mask = mask & (labels >= 0)
  safe = jnp.maximum(labels, 0)
  logits = logits.astype(jnp.float32)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, safe)
  _, top = jax.lax.top_k(logits, min(5, logits.shape[-1]))
  hits = top == safe[:, None]
  weight = mask.astype(jnp.float32)
  return {
    "loss": jnp.sum(ce * weight),
    "top1": jnp.sum(hits[:, 0] * weight),
    "top5": jnp.sum(jnp.any(hits, axis=-1) * weight),
    "count": jnp.sum(weight),
  }


def topk_accuracy(
  logits_fn: Callable[[Any, jnp.ndarray], jnp.ndarray],
  variables: Any,
  eval_batches: Iterable[dict],
  mesh: Mesh,
) -> dict[str, float]:
  """Top-1/top-5 accuracy of `logits_fn(variables, uint8 images)` over
  padded eval batches ({'image', 'label', 'mask'}, `data.eval_batches`).

  Only rows with mask True (and label >= 0) count. Returns 'top1', 'top5'
  (fractions) and 'num_examples'.
  """
  data = sharding.batch_sharding(mesh)
  replicated = sharding.replicated(mesh)

  def counts(variables, batch):
    logits = logits_fn(variables, batch["image"])
    return masked_counts(logits, batch["label"], batch["mask"])

  counts = jax.jit(
    counts, in_shardings=(replicated, data), out_shardings=replicated
  )
  total = None
  for batch in eval_batches:
    batch = sharding.to_global(
      {k: batch[k] for k in ("image", "label", "mask")}, data
    )
    c = counts(variables, batch)
    total = c if total is None else jax.tree.map(jnp.add, total, c)
  count = 0 if total is None else int(jax.device_get(total["count"]))
  if not count:
    raise UserError(
      "the evaluation batches hold no labelled examples; "
      "check config.data.eval_split"
    )
  return {
    "top1": float(total["top1"]) / count,
    "top5": float(total["top5"]) / count,
    "num_examples": count,
  }
