"""Official SimCLR v1/v2 TensorFlow checkpoints -> a simclr_jax run directory.

  python -m simclr_jax.import_tf --checkpoint PATH --out RUN_DIR [--ema]
      [--config FILE] [--depth N] [--width W] [--sk_ratio R]
      [--proj_head_layers L] [--num_classes C]

PATH is a downloaded checkpoint: its folder (the `checkpoint` state file
names the prefix), the prefix (`.../model.ckpt-250228` for TF1, `.../ckpt-N`
for TF2) or one of its files. The architecture is read off the checkpoint
(the flags override or pin it); every variable is either mapped or ignored
by rule (optimizer slots, step counters, the EMA copy unless --ema), and any
other variable, or a shape that does not fit, is an error naming it.
RUN_DIR is a new folder that works everywhere a pretraining run does:

  python -m simclr_jax.main --config configs/imagenet.py --workdir DIR \
      --config.mode=linear --config.init_checkpoint=RUN_DIR
  python -m simclr_jax.embed --checkpoint RUN_DIR --images IMAGES --out e.npz

Downstream runs inherit the run's data settings: those of --config (default:
ImageNet at 224 px, or CIFAR-10 at 32 px for a CIFAR-stem model). In
Python: `simclr_jax.tf_import.convert_checkpoint(PATH, RUN_DIR)`.
docs/pretrained.md lists the published checkpoints.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from simclr_jax.errors import ArgumentParser  # noqa: E402
from simclr_jax.errors import UserError  # noqa: E402
from simclr_jax.errors import print_error  # noqa: E402

if TYPE_CHECKING:
  from simclr_jax.tf_import.convert import Converted


def _parser() -> argparse.ArgumentParser:
  p = ArgumentParser(
    prog="python -m simclr_jax.import_tf",
    description="Convert an official SimCLR TF1/TF2 checkpoint into a run "
    "directory that knn/linear/finetune, embed and load_pretrained accept.",
  )
  p.add_argument("--checkpoint", required=True, metavar="PATH")
  p.add_argument("--out", required=True, metavar="RUN_DIR", help="new folder")
  p.add_argument(
    "--ema",
    action="store_true",
    help="take the exponential-moving-average weights (ema_model/...)",
  )
  p.add_argument(
    "--config",
    metavar="FILE",
    help="config file whose data/eval/... settings the run records "
    "(default: ImageNet, or CIFAR-10 for a CIFAR stem)",
  )
  for flag, kind, what in (
    ("depth", int, "ResNet depth"),
    ("width", float, "width multiplier"),
    ("sk_ratio", float, "selective-kernel ratio (0.0625 in SimCLRv2)"),
    ("proj_head_layers", int, "projection-head layers"),
    ("num_classes", int, "supervised-head classes (0: none)"),
  ):
    p.add_argument(f"--{flag}", type=kind, help=f"{what} (default: inferred)")
  return p


def run(args: argparse.Namespace) -> Converted:
  """Checks the paths, converts, prints a summary; returns `Converted`."""
  # pylint: disable=g-import-not-at-top
  from simclr_jax import configlib
  from simclr_jax.tf_import import convert
  # pylint: enable=g-import-not-at-top

  for name in ("checkpoint", "out"):
    if not getattr(args, name):
      raise UserError(f"--{name} is empty; pass a path (see --help).")
  config = configlib.load_config(args.config) if args.config else None
  result = convert.convert_checkpoint(
    args.checkpoint,
    args.out,
    ema=args.ema,
    config=config,
    depth=args.depth,
    width_multiplier=args.width,
    sk_ratio=args.sk_ratio,
    proj_head_layers=args.proj_head_layers,
    num_classes=args.num_classes,
  )
  arch = result.architecture
  ckpt = result.checkpoint
  mapped = sum(len(l.keys) for ls in ckpt.sections.values() for l in ls)
  copy = any("EMA copy" in why for why in ckpt.ignored.values())
  print(
    f"Converted {ckpt.prefix} ({ckpt.format.upper()}, step {result.step}"
    f"{', EMA weights' if args.ema else ''}): ResNet-{arch['depth']} "
    f"{arch['width_multiplier']:g}x, sk_ratio {arch['sk_ratio']:g}, "
    f"{'CIFAR' if arch['cifar_stem'] else 'ImageNet'} stem, "
    f"{arch['proj_head_layers']}-layer projection head, "
    f"{arch['num_classes']} classes; {mapped} variables mapped, "
    f"{len(ckpt.ignored)} ignored (optimizer slots, step counters"
    f"{', the other weight copy' if copy else ''})."
  )
  if "projection_head" not in ckpt.sections:
    print(
      "note: the checkpoint has no projection head (as SimCLRv1's releases): "
      f"the run has a freshly initialised {arch['proj_head_layers']}-layer "
      "one; fine-tune from the encoder output (--config.finetune."
      "head_layers=0)."
    )
  recipe = "cifar10" if arch["cifar_stem"] else "imagenet"
  print(
    f"Run directory: {result.run_dir}; e.g. python -m simclr_jax.main "
    f"--config configs/{recipe}.py --workdir DIR --config.mode=linear "
    f"--config.init_checkpoint={result.run_dir}"
  )
  return result


def main(argv: Sequence[str] | None = None) -> int:
  """The command line; returns the exit code (2: bad input)."""
  args = _parser().parse_args(argv)
  # pylint: disable=g-import-not-at-top
  from simclr_jax.data import sources
  # pylint: enable=g-import-not-at-top

  sources.hide_tf_from_accelerators()  # TF only reads the checkpoint
  try:
    run(args)
  except UserError as e:
    print_error(str(e))
    return 2
  except KeyboardInterrupt:
    print_error("interrupted; nothing was written to --out.")
    return 130
  return 0


if __name__ == "__main__":
  sys.exit(main())
