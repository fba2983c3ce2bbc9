"""The two augmented views of each image that SimCLR contrasts.

Keys come from each example's global index in the batch, so the views do not
depend on how the batch is split over devices or processes. By default both
views use the same augmentation distribution (the reference); `asymmetric=
"byol"` gives the BYOL-style pair that later SimCLR re-implementations often
use: view 1 always blurred and never solarized, view 2 rarely blurred and
sometimes solarized. With `blur_sigma="per_batch"` the blurred images of a
view share one sigma per step, drawn from the step key (reference-like).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from simclr_jax.augment.color import sample_blur_sigma
from simclr_jax.augment.config import AugmentConfig
from simclr_jax.augment.pipeline import augment_image, batch_key
from simclr_jax.errors import UserError

# name -> ((blur_prob, solarize_prob) of view 1, same for view 2);
# "" keeps the configured values for both views.
ASYMMETRIC_VIEWS: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
  "byol": ((1.0, 0.0), (0.1, 0.2)),
}


def view_configs(
  config: AugmentConfig,
  asymmetric: str = "",
) -> tuple[AugmentConfig, AugmentConfig]:
  """The augmentation settings of view 1 and view 2."""
  if not asymmetric:
    return config, config
  if asymmetric not in ASYMMETRIC_VIEWS:
    raise UserError(
      f"config.augment.asymmetric={asymmetric!r} is unknown; "
      f"use '' (symmetric, the reference) or one of "
      f"{', '.join(repr(k) for k in ASYMMETRIC_VIEWS)}."
    )
  return tuple(
    dataclasses.replace(config, blur_prob=blur, solarize_prob=sol)
    for blur, sol in ASYMMETRIC_VIEWS[asymmetric]
  )


def example_keys(step_key: jax.Array, num_examples: int) -> jax.Array:
  """One key per (example, view): shape (N, 2, ...), from global indices."""

  def per_example(i):
    return jax.random.split(jax.random.fold_in(step_key, i))

  return jax.vmap(per_example)(jnp.arange(num_examples))


def batch_blur_sigmas(
  step_key: jax.Array,
  configs: tuple[AugmentConfig, AugmentConfig],
) -> tuple[jnp.ndarray | None, jnp.ndarray | None]:
  """The sigma each view shares over the global batch, None per image.

  Drawn from `batch_key(step_key)` split like an example's key, so
  it depends on the step only: not on the batch size, nor on how the batch
  is split over devices.
  """
  keys = jax.random.split(batch_key(step_key))
  return tuple(
    sample_blur_sigma(keys[v])
    if c.blur_prob > 0 and c.blur_sigma == "per_batch"
    else None
    for v, c in enumerate(configs)
  )


def two_views(
  step_key: jax.Array,
  images: jnp.ndarray,
  configs: tuple[AugmentConfig, AugmentConfig],
) -> jnp.ndarray:
  """(N,H,W,3) uint8 -> (2N,S,S,3) float32, rows [x0v1, x0v2, x1v1, ...].

  Interleaving keeps each example's two views on the same device, so the
  reshape never moves data between devices. A view whose config has
  `blur_sigma="per_batch"` blurs with one sigma per step (`batch_blur_sigmas`).
  """
  n = images.shape[0]
  keys = example_keys(step_key, n)
  sigmas = batch_blur_sigmas(step_key, configs)
  views = [
    jax.vmap(
      lambda k, im, c=c, s=s: augment_image(k, im, config=c, batch_sigma=s)
    )(keys[:, v], images)
    for v, (c, s) in enumerate(zip(configs, sigmas))
  ]
  stacked = jnp.stack(views, axis=1)  # (N, 2, S, S, 3)
  return stacked.reshape((2 * n,) + stacked.shape[2:])
