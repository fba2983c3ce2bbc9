"""The architecture of an official checkpoint, read off its layer shapes.

No per-depth tables: the stem is recognised by its convs (one 7x7: the
ImageNet stem; three 3x3 of widths w/2, w/2, w: the ResNet-D stem that
SimCLRv2's selective kernels come with; one 3x3: the CIFAR stem), the block
type by the ratio of the representation to the stem width (bottlenecks end
at 32x, basic blocks at 8x), and the depth by the number of blocks that the
remaining convs make up. What cannot be read off (the selective-kernel
ratio, when every gate is at its 32-channel minimum) takes the value of the
published checkpoints, and the mapping's shape check catches a wrong one.
"""

from __future__ import annotations

from typing import Any, Mapping

from simclr_jax.errors import UserError
from simclr_jax.models.resnet import BASIC_BLOCK_DEPTHS
from simclr_jax.models.resnet import STAGE_SIZES
from simclr_jax.tf_import.reader import TFCheckpoint

# SimCLRv2's published SK models all use this ratio.
DEFAULT_SK_RATIO = 0.0625
# Keys a user may give instead of (or to check against) the inferred ones.
KEYS = (
  "depth",
  "width_multiplier",
  "sk_ratio",
  "cifar_stem",
  "proj_head_layers",
  "proj_out_dim",
  "num_classes",
)


def _kernel(layer) -> tuple[int, ...]:
  return layer.shapes["kernel"]


def _stem(convs: list) -> tuple[str, int]:
  """('imagenet' | 'resnet_d' | 'cifar', stem width)."""
  first = _kernel(convs[0])
  if first[2] != 3:
    raise UserError(
      f"the first conv {convs[0].name} {list(first)} does not take RGB "
      "input: not a SimCLR ResNet."
    )
  if first[0] == 7:
    return "imagenet", first[3]
  if first[0] == 3 and len(convs) > 3:
    second, third = _kernel(convs[1]), _kernel(convs[2])
    if second[:3] == (3, 3, first[3]) and third[:3] == (3, 3, second[3]):
      if second[3] == first[3] and third[3] == 2 * first[3]:
        return "resnet_d", third[3]
  if first[0] == 3:
    return "cifar", first[3]
  raise UserError(
    f"the first conv {convs[0].name} {list(first)} is neither a 7x7 "
    "ImageNet stem nor a 3x3 CIFAR or ResNet-D stem: not a SimCLR ResNet."
  )


def _depth(convs: int, stem_convs: int, bottleneck: bool, sk: bool) -> int:
  per_block = (5 if sk else 3) if bottleneck else 2
  blocks, rest = divmod(convs - stem_convs - 4, per_block)  # 4 shortcuts
  for depth, stages in STAGE_SIZES.items():
    if (depth not in BASIC_BLOCK_DEPTHS) == bottleneck and (
      sum(stages) == blocks and not rest
    ):
      return depth
  kind = "bottleneck" if bottleneck else "basic"
  raise UserError(
    f"the backbone's {convs} convs do not make up a ResNet of {kind} "
    f"blocks of a supported depth ({', '.join(map(str, STAGE_SIZES))})."
  )


_FLAGS = {"width_multiplier": "width"}
_VALID = {
  "depth": (
    lambda v: v in STAGE_SIZES,
    f"one of {', '.join(map(str, STAGE_SIZES))}",
  ),
  "width_multiplier": (lambda v: v > 0, "> 0"),
  "sk_ratio": (lambda v: 0 <= v < 1, "in [0, 1)"),
  "proj_head_layers": (lambda v: v >= 1, ">= 1"),
  "proj_out_dim": (lambda v: v >= 1, ">= 1"),
  "num_classes": (lambda v: v >= 0, ">= 0"),
  "cifar_stem": (lambda v: isinstance(v, bool), "True or False"),
}


def _check_given(given: Mapping[str, Any]) -> None:
  for key, value in given.items():
    ok, what = _VALID[key]
    if not ok(value):
      raise UserError(
        f"--{_FLAGS.get(key, key)}={value!r} must be {what}; fix it or "
        "leave it out to read it off the checkpoint."
      )


def infer(ckpt: TFCheckpoint, given: Mapping[str, Any] | None = None) -> dict:
  """The model keys of `ckpt` (`KEYS`), `given` ones taking precedence."""
  given = {k: v for k, v in (given or {}).items() if v is not None}
  unknown = set(given) - set(KEYS)
  if unknown:
    raise ValueError(f"unknown architecture keys {sorted(unknown)}")
  _check_given(given)
  convs = ckpt.layers("backbone", "conv")
  norms = ckpt.layers("backbone", "bn")
  if not convs or not norms:
    raise UserError(
      f"{ckpt.prefix} holds no ResNet backbone (no base_model/ or "
      "model/resnet_model/ convs and BN); is it a SimCLR checkpoint?"
    )
  stem, stem_width = _stem(convs)
  ratio = norms[-1].channels / stem_width
  if ratio not in (8, 32):
    raise UserError(
      f"the representation has {norms[-1].channels} channels for a stem of "
      f"{stem_width}: neither basic (8x) nor bottleneck (32x) ResNet blocks."
    )
  sk = stem == "resnet_d"
  bottleneck = ratio == 32
  heads = ckpt.layers("projection_head", "dense")
  supervised = ckpt.layers("head_supervised", "dense")
  inferred = {
    "depth": _depth(len(convs), 3 if sk else 1, bottleneck, sk),
    "width_multiplier": stem_width / 64,
    "sk_ratio": DEFAULT_SK_RATIO if sk else 0.0,
    "cifar_stem": stem == "cifar",
    # SimCLRv1's releases have no head: theirs becomes a fresh v1 head.
    "proj_head_layers": len(heads) or 2,
    "proj_out_dim": _kernel(heads[-1])[1] if heads else 128,
    "num_classes": _kernel(supervised[0])[1] if supervised else 0,
  }
  return {**inferred, **given}
