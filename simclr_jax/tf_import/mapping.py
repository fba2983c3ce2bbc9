"""Checkpoint layers -> the variables of our `SimCLRModel`, by structure.

Our layers are listed in the order the model calls them (recorded while
`init` is traced), the checkpoint's in network order (`reader`); within
each section (backbone, projection head, supervised head) the i-th conv,
BN and dense layer of one are the i-th of the other. The layouts agree
(HWIO conv kernels, [in, out] dense kernels), so values copy unchanged:
gamma/beta -> scale/bias, moving_mean/moving_variance -> the
`batch_stats` mean/var. Every shape is checked; a difference is a
UserError naming both variables.
"""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from simclr_jax.errors import UserError
from simclr_jax.tf_import.reader import Layer
from simclr_jax.tf_import.reader import TFCheckpoint

SECTIONS = ("backbone", "projection_head", "head_supervised")
_KINDS = {nn.Conv: "conv", nn.BatchNorm: "bn", nn.Dense: "dense"}
# A checkpoint BN leaf -> (collection, our leaf name); conv and dense
# leaves (kernel, bias) keep their names in "params".
BN_LEAVES = {
  "gamma": ("params", "scale"),
  "beta": ("params", "bias"),
  "moving_mean": ("batch_stats", "mean"),
  "moving_variance": ("batch_stats", "var"),
}


def model_layers(
  model: nn.Module, image_size: int
) -> tuple[dict[str, list[tuple[str, tuple[str, ...]]]], Any]:
  """({section: [(kind, module path)] in call order}, abstract variables)."""
  calls: list[tuple[str, tuple[str, ...]]] = []

  def record(next_fun, args, kwargs, context):
    kind = _KINDS.get(type(context.module))
    if context.method_name == "__call__" and kind:
      path = tuple(context.module.path)
      if (kind, path) not in calls:
        calls.append((kind, path))
    return next_fun(*args, **kwargs)

  x = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
  with nn.intercept_methods(record):
    abstract = jax.eval_shape(
      lambda: model.init(jax.random.key(0), x, train=False)
    )
  sections: dict[str, list] = {s: [] for s in SECTIONS}
  for kind, path in calls:
    sections[path[0]].append((kind, path))
  return sections, flax.core.unfreeze(abstract)


def _targets(kind: str, layer: Layer) -> dict[str, tuple[str, str]]:
  """Checkpoint leaf -> (collection, our leaf name)."""
  if kind == "bn":
    return {k: v for k, v in BN_LEAVES.items() if k in layer.keys}
  return {k: ("params", k) for k in layer.keys}


def _pairs(
  ckpt: TFCheckpoint, ours: dict[str, list], section: str, kind: str
) -> list[tuple[tuple[str, ...], Layer]]:
  mine = [path for k, path in ours[section] if k == kind]
  theirs = ckpt.layers(section, kind)
  if len(mine) != len(theirs):
    extra = theirs[len(mine) :]
    missing = mine[len(theirs) :]
    detail = (
      f"first unmatched in the checkpoint: {extra[0].name}"
      if extra
      else f"first without a checkpoint layer: {'/'.join(missing[0])}"
    )
    raise UserError(
      f"the checkpoint's {section} has {len(theirs)} {kind} layers, the "
      f"model built for it {len(mine)} ({detail}); pass the architecture "
      "(--depth, --width, --sk_ratio, --proj_head_layers, --num_classes) "
      "if it was inferred wrongly."
    )
  return list(zip(mine, theirs))


def fresh_head(model: nn.Module, seed: int = 0) -> dict[tuple, np.ndarray]:
  """A newly initialised projection head, as flat {(collection, *path):
  value}: for checkpoints released without one (SimCLRv1)."""
  dim = model.backbone.feature_dim
  head = model.projection_head.init(
    jax.random.key(seed), jnp.zeros((1, dim), jnp.float32), train=False
  )
  return {
    (c, "projection_head", *path): np.asarray(v)
    for c, tree in flax.core.unfreeze(head).items()
    for path, v in flax.traverse_util.flatten_dict(tree).items()
  }


def convert_variables(
  ckpt: TFCheckpoint, model: nn.Module, image_size: int
) -> dict[str, Any]:
  """{'params', 'batch_stats'} of `model`, as numpy, from `ckpt` (with a
  fresh projection head if it has none)."""
  ours, abstract = model_layers(model, image_size)
  extra = set(ckpt.sections) - {s for s in SECTIONS if ours[s]}
  if extra:
    raise UserError(
      f"the checkpoint has a {sorted(extra)[0]} section the model lacks; "
      "pass --num_classes to match its supervised head."
    )
  out: dict[str, dict] = {}
  flat = {
    c: flax.traverse_util.flatten_dict(abstract.get(c, {}))
    for c in ("params", "batch_stats")
  }
  filled = set()
  fresh = "projection_head" not in ckpt.sections
  for section in SECTIONS:
    if section == "projection_head" and fresh:
      continue  # filled below
    for kind in ("conv", "bn", "dense"):
      for path, layer in _pairs(ckpt, ours, section, kind):
        for leaf, (collection, name) in _targets(kind, layer).items():
          where = (*path, name)
          want = flat[collection].get(where)
          have = layer.shapes[leaf]
          if want is None or tuple(want.shape) != have:
            ours_text = "absent" if want is None else list(want.shape)
            raise UserError(
              f"checkpoint variable {layer.keys[leaf]} {list(have)} does not "
              f"fit {collection}/{'/'.join(where)} ({ours_text}); pass the "
              "architecture (--depth, --width, --sk_ratio, "
              "--proj_head_layers) if it was inferred wrongly."
            )
          value = ckpt.value(layer.keys[leaf]).astype(np.float32)
          out.setdefault(collection, {})[where] = value
          filled.add((collection, where))
  if fresh:
    for (c, *where), value in fresh_head(model).items():
      out.setdefault(c, {})[tuple(where)] = value
      filled.add((c, tuple(where)))
  unfilled = [(c, w) for c in flat for w in flat[c] if (c, w) not in filled]
  if unfilled:
    c, w = unfilled[0]
    raise UserError(
      f"the checkpoint has no value for {c}/{'/'.join(w)} (and "
      f"{len(unfilled) - 1} more), e.g. a BN without beta where the model "
      "has one; it does not match this architecture."
    )
  return {c: flax.traverse_util.unflatten_dict(v) for c, v in out.items()}
