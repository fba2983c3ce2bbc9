"""The other direction: a run's weights as a TF1 name-based checkpoint.

The names are those the official code's TF1 model writes (the format of
the released checkpoints): `base_model/conv2d[_N]/kernel` and
`base_model/batch_normalization[_N]/*` numbered in network order,
`head_contrastive/nl_<j>/...`, `head_supervised/linear_layer/dense/*` and
`global_step`, so `tf.train.Saver` or `tf.train.init_from_checkpoint` in
that code restores them (optimizer slots are not written: restore with a
`variable_schema` that leaves out `Momentum`, as its fine-tuning commands
do). Written with TensorFlow's own SaveV2 op.
"""

from __future__ import annotations

import os
from typing import Any

import flax.linen as nn
import numpy as np

from simclr_jax import checkpointing
from simclr_jax.errors import UserError
from simclr_jax.tf_import import mapping

_DENSE_LEAVES = {"kernel": ("params", "kernel"), "bias": ("params", "bias")}


def _name(section: str, kind: str, index: int) -> str:
  if section == "backbone":
    base = {"conv": "conv2d", "bn": "batch_normalization"}[kind]
    return f"base_model/{base}" + (f"_{index}" if index else "")
  if section == "projection_head":
    leaf = {"dense": "dense", "bn": "batch_normalization"}[kind]
    return f"head_contrastive/nl_{index}/{leaf}"
  return "head_supervised/linear_layer/dense"


def tf1_arrays(
  model: nn.Module, variables: dict[str, Any], step: int, image_size: int = 32
) -> dict[str, np.ndarray]:
  """{TF1 variable name: value} of `variables` ({'params', 'batch_stats'}
  of `model`, a SimCLRModel)."""
  layers, _ = mapping.model_layers(model, image_size)
  out = {"global_step": np.asarray(step, np.int64)}
  for section, calls in layers.items():
    counts: dict[str, int] = {}
    for kind, path in calls:
      index = counts.get(kind, 0)
      counts[kind] = index + 1
      name = _name(section, kind, index)
      leaves = mapping.BN_LEAVES if kind == "bn" else _DENSE_LEAVES
      for tf_leaf, (collection, leaf) in leaves.items():
        node = variables.get(collection, {})
        for part in (*path, leaf):
          node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
          out[f"{name}/{tf_leaf}"] = np.asarray(node, np.float32)
  return out


def save_tf1(prefix: str, arrays: dict[str, np.ndarray]) -> None:
  """A name-based (TF1-format) checkpoint at `prefix` holding `arrays`,
  written with TensorFlow's SaveV2 op."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  names = sorted(arrays)
  tf.raw_ops.SaveV2(
    prefix=prefix,
    tensor_names=names,
    shape_and_slices=[""] * len(names),
    tensors=[tf.constant(arrays[n]) for n in names],
  )


def export_tf1(
  model: nn.Module, variables: dict[str, Any], step: int, out_dir: str
) -> str:
  """Writes `out_dir/model.ckpt-<step>` (and the `checkpoint` state file
  that `tf.train.latest_checkpoint` reads); returns the prefix."""
  out_dir = checkpointing.resolve_path(out_dir)
  if os.path.exists(out_dir) and os.listdir(out_dir):
    raise UserError(
      f"{out_dir} already exists and is not empty; export into a new folder."
    )
  arrays = tf1_arrays(model, variables, step)
  os.makedirs(out_dir, exist_ok=True)
  prefix = os.path.join(out_dir, f"model.ckpt-{step}")
  save_tf1(prefix, arrays)
  with open(os.path.join(out_dir, "checkpoint"), "w") as f:
    base = os.path.basename(prefix)
    f.write(f'model_checkpoint_path: "{base}"\n')
    f.write(f'all_model_checkpoint_paths: "{base}"\n')
  return prefix
