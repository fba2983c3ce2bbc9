"""Reading an official SimCLR TensorFlow checkpoint into ordered layers.

Both formats the official code writes are read with TensorFlow's own
reader (`tf.train.load_checkpoint`):

* TF1 (`model.ckpt-N`, the published v1/v2 checkpoints): name-based keys
  such as `base_model/conv2d_12/kernel`, where the suffix counts creations
  of that layer type, so it gives network order per type (not sorted as
  text: `conv2d_10` comes after `conv2d_9`).
* TF2 (`ckpt-N` of the `tf2/` code): object paths such as
  `model/resnet_model/block_groups/0/layers/1/conv_relu_dropblock_layers/3/
  conv2d/kernel/.ATTRIBUTES/VARIABLE_VALUE`, whose list indices also count
  parameterless layers (gaps), and whose attribute names are ranked below
  where their text order is not the network order.

Every variable is either part of a layer (a conv or dense `kernel` with an
optional `bias`, or a BN's `gamma`/`beta`/`moving_mean`/`moving_variance`)
or matched by `IGNORED` (optimizer slots, step counters, the EMA copy that
was not chosen); anything else is a UserError naming it.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

import numpy as np

from simclr_jax import checkpointing
from simclr_jax.errors import UserError

TF2_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
EMA_PREFIX = "ema_model/"

# Sections of the network: TF1 and TF2 names -> our top-level scope.
SECTIONS = {
  "base_model": "backbone",
  "resnet_model": "backbone",
  "head_contrastive": "projection_head",
  "_projection_head": "projection_head",
  "head_supervised": "head_supervised",
  "supervised_head": "head_supervised",
}

# What is not part of the network, by pattern (docs/pretrained.md).
IGNORED = {
  r"(^|/)\.OPTIMIZER_SLOT/": "TF2 optimizer slot (momentum)",
  r"/Momentum$": "TF1 optimizer slot (momentum)",
  r"^(global_step|save_counter)(/|$)": "step counter",
  r"^_CHECKPOINTABLE_OBJECT_GRAPH$": "TF2 object graph",
  r"^optimizer/": "TF2 optimizer bookkeeping",
  r"/ExponentialMovingAverage$": "TF1 moving-average shadow variable",
}

BN_LEAVES = {"gamma", "beta", "moving_mean", "moving_variance"}
DENSE_LEAVES = {"kernel", "bias"}

# TF2 attribute names whose layers come first among their siblings: the
# projection shortcut is built before the main path of a block, the
# selective kernel's 3x3 conv before its gate convs `conv2d_0/1`.
_FIRST = {
  "shortcut_layers",
  "projection_layers",
  "conv2d_fixed_padding",
  "initial_conv_relu_max_pool",
}
_NAME = re.compile(r"^(.*?)(?:_(\d+))?$")


@dataclasses.dataclass(frozen=True)
class Layer:
  """One conv, dense or BN layer of the checkpoint."""

  name: str  # its variable prefix in the checkpoint, e.g. base_model/conv2d_3
  kind: str  # "conv" | "dense" | "bn"
  keys: dict[str, str]  # leaf ("kernel", "gamma", ...) -> checkpoint key
  shapes: dict[str, tuple[int, ...]]

  @property
  def channels(self) -> int:
    """Output channels (a BN's size)."""
    if self.kind == "bn":
      return self.shapes["moving_mean"][0]
    return self.shapes["kernel"][-1]


@dataclasses.dataclass
class TFCheckpoint:
  """A checkpoint's layers per section, in network order, and the rest."""

  prefix: str  # the path passed to TensorFlow's reader
  format: str  # "tf1" | "tf2"
  step: int  # global_step (0 if absent)
  ema: bool  # the layers are the `ema_model/` copy
  sections: dict[str, list[Layer]]  # our scope -> layers in network order
  ignored: dict[str, str]  # checkpoint key -> why it is not mapped
  reader: Any = dataclasses.field(repr=False, default=None)

  def value(self, key: str) -> np.ndarray:
    return np.asarray(self.reader.get_tensor(key))

  def layers(self, section: str, kind: str) -> list[Layer]:
    return [l for l in self.sections.get(section, []) if l.kind == kind]


def resolve_prefix(path: str) -> str:
  """The checkpoint prefix of a directory (its `checkpoint` state file), a
  prefix (`.../model.ckpt-1000`), or one of its files (`.index`, `.meta`,
  `.data-*`)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  path = checkpointing.resolve_path(path)
  if os.path.isfile(os.path.join(path, "run_config.json")):
    raise UserError(
      f"--checkpoint {path} is a simclr_jax run directory, not a "
      "TensorFlow checkpoint: use it as it is (--config.init_checkpoint, "
      "embed --checkpoint)."
    )
  if os.path.isdir(path):
    prefix = tf.train.latest_checkpoint(path)
    for saved in ("variables", "saved_model/variables"):  # a TF2 SavedModel
      if prefix is None and os.path.exists(
        os.path.join(path, saved, "variables.index")
      ):
        prefix = os.path.join(path, saved, "variables")
    if prefix is None:
      found = sorted(n for n in os.listdir(path) if n.endswith(".index"))
      if len(found) == 1:
        return os.path.join(path, found[0][: -len(".index")])
      raise UserError(
        f"--checkpoint {path}: no TensorFlow checkpoint in this folder "
        "(no 'checkpoint' state file"
        + (f", and {len(found)} .index files" if found else "")
        + "); pass the checkpoint prefix, e.g. DIR/model.ckpt-250228."
      )
    return prefix
  stripped = re.sub(r"\.(index|meta|data-\d+-of-\d+)$", "", path)
  if not os.path.exists(stripped + ".index"):
    raise UserError(
      f"--checkpoint {path}: no TensorFlow checkpoint there (no "
      f"{os.path.basename(stripped)}.index); pass the folder of a "
      "downloaded checkpoint or its prefix, e.g. DIR/model.ckpt-250228."
    )
  return stripped


def _component_key(part: str) -> tuple:
  if part.isdigit():
    return (1, int(part), "", -1)
  base, number = _NAME.match(part).groups()
  return (0 if part in _FIRST else 1, -1, base, int(number or -1))


def _layer_key(name: str) -> tuple:
  return tuple(_component_key(p) for p in name.split("/"))


def _why_ignored(key: str, ema: bool) -> str | None:
  for pattern, why in IGNORED.items():
    if re.search(pattern, key):
      return why
  if key.startswith(EMA_PREFIX) != ema:
    return "the EMA copy (--ema picks it)" if not ema else "not the EMA copy"
  return None


def _kind(name: str, leaves: dict[str, tuple[int, ...]]) -> str:
  if set(leaves) <= BN_LEAVES:
    lacking = {"gamma", "moving_mean", "moving_variance"} - set(leaves)
    if lacking:
      raise UserError(
        f"checkpoint BN layer {name} has no {', '.join(sorted(lacking))}: "
        "the checkpoint is incomplete (a partial download?)."
      )
    return "bn"
  if set(leaves) <= DENSE_LEAVES and "kernel" in leaves:
    rank = len(leaves["kernel"])
    if rank == 4 and "bias" not in leaves:
      return "conv"
    if rank == 2:
      return "dense"
  raise UserError(
    f"checkpoint layer {name} holds {', '.join(sorted(leaves))} with shapes "
    f"{', '.join(str(list(s)) for s in leaves.values())}: not a layer of the "
    "SimCLR ResNets this converter supports (bias-free convs, BN, dense "
    "heads; no squeeze-excitation)."
  )


def read_checkpoint(path: str, ema: bool = False) -> TFCheckpoint:
  """The layers of the checkpoint at `path` (see `resolve_prefix`), from
  the `ema_model/` copy if `ema`. UserError for variables this converter
  cannot place, or a missing EMA copy."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  prefix = resolve_prefix(path)
  try:
    reader = tf.train.load_checkpoint(prefix)
  except Exception as e:  # pylint: disable=broad-except
    first = str(e).strip().splitlines()[0][:300] if str(e).strip() else repr(e)
    raise UserError(
      f"--checkpoint {prefix}: TensorFlow cannot read it ({first}); "
      "download it again (a partial copy?)."
    ) from None
  shapes = reader.get_variable_to_shape_map()
  fmt = "tf2" if "_CHECKPOINTABLE_OBJECT_GRAPH" in shapes else "tf1"
  if ema and not any(k.startswith(EMA_PREFIX) for k in shapes):
    raise UserError(
      f"--ema: {prefix} has no exponential-moving-average copy (no "
      f"{EMA_PREFIX}... variables); leave out --ema."
    )
  ignored, grouped = {}, {}
  for key in sorted(shapes):
    why = _why_ignored(key, ema)
    if why is not None:
      ignored[key] = why
      continue
    name = key[len(EMA_PREFIX) :] if ema else key
    if fmt == "tf2":
      name = name.removesuffix(TF2_SUFFIX).removeprefix("model/")
    layer, _, leaf = name.rpartition("/")
    section = SECTIONS.get(layer.split("/")[0])
    if section is None or not leaf:
      raise UserError(
        f"checkpoint variable {key} {list(shapes[key])} is not part of a "
        "SimCLR model (sections: base_model/head_contrastive/head_supervised "
        "or resnet_model/_projection_head/supervised_head) nor of the "
        "ignored optimizer/step variables; is this an official SimCLR "
        "checkpoint?"
      )
    grouped.setdefault(section, {}).setdefault(layer, {})[leaf] = key
  sections = {}
  for section, layers in grouped.items():
    built = []
    for name, leaves in layers.items():
      layer_shapes = {k: tuple(shapes[v]) for k, v in leaves.items()}
      kind = _kind(name, layer_shapes)
      built.append(Layer(name, kind, leaves, layer_shapes))
    sections[section] = sorted(built, key=lambda l: _layer_key(l.name))
  step = 0
  for key in ("global_step", "global_step" + TF2_SUFFIX):
    if key in shapes:
      step = int(reader.get_tensor(key))
  return TFCheckpoint(prefix, fmt, step, ema, sections, ignored, reader)
