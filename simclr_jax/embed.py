"""Embeddings export: a folder of images -> frozen-encoder features in an npz.

  python -m simclr_jax.embed --checkpoint RUN_DIR --images DIR --out FILE.npz \
      [--batch_size 256] [--projection] [--image_size N] [--step S]

RUN_DIR is the --workdir of a pretraining run (latest checkpoint unless
--step). Every .jpg/.jpeg/.png/.bmp/.gif under DIR (any depth, any case) is
decoded on the host exactly like training data (grayscale -> RGB, alpha
dropped, shorter side resized to the run's image size or --image_size, centre
crop), then encoded with BN in inference mode and the evaluation
preprocessing, sharded over all devices. FILE.npz holds

  representation  (N, F) float32   encoder output (the features to use)
  projection      (N, D) float32   projection-head output, with --projection
  filenames       (N,) str         paths relative to DIR, sorted
  labels          (N,) int32       class index of each row, if DIR has classes
  class_names     (C,) str         sorted class names, if DIR has classes

DIR has classes when every image is inside a sub-folder of DIR: the class of
an image is its first-level sub-folder (deeper folders count for it), as for
the `folder` data source's split folders, and row r is of class
class_names[labels[r]] (class names of every image file found, so the
indices are those of a training run on DIR even if files are skipped). With
any image directly in DIR there are no labels. Split folders are not special
(DIR/train/<class>/... has the classes "train", ...): pass DIR/train.

Files that cannot be decoded are skipped and named on stderr. In Python:
`embed_images(pretrained.load_pretrained(RUN_DIR), DIR)`. With several
processes (see simclr_jax/distributed.py) every process must see DIR, each
decodes its part, and process 0 writes FILE.npz.

JAX, TensorFlow and the modules that import them load after the arguments
are parsed (and the re-exported names below on first use), so `--help` and
usage errors return at once.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import TYPE_CHECKING, Any, Sequence

# TensorFlow only decodes images here: keep its start-up chatter off stderr.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from simclr_jax.errors import ArgumentParser  # noqa: E402
from simclr_jax.errors import UserError  # noqa: E402
from simclr_jax.errors import print_error  # noqa: E402

if TYPE_CHECKING:
  from simclr_jax.embeddings import Embeddings

# Re-exported from simclr_jax.embeddings, which imports JAX and TensorFlow:
# loaded on first use (module __getattr__).
_EXPORTS = (
  "Embeddings",
  "check_output_path",
  "embed_images",
  "find_images",
  "write_npz",
)

__all__ = sorted([*_EXPORTS, "main", "run"])


def __getattr__(name: str) -> Any:
  if name not in _EXPORTS:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  value = getattr(importlib.import_module("simclr_jax.embeddings"), name)
  globals()[name] = value
  return value


def __dir__() -> list[str]:
  return sorted(set(globals()) | set(_EXPORTS))


def _parser() -> argparse.ArgumentParser:
  p = ArgumentParser(
    prog="python -m simclr_jax.embed",
    description="Frozen-encoder features of a folder of images, in an npz: "
    "representation (N, F), filenames (N,), projection (N, D) with "
    "--projection, and labels (N,) with class_names (C,) when every image "
    "is in a sub-folder of DIR (the class: its first-level sub-folder).",
  )
  p.add_argument(
    "--checkpoint",
    required=True,
    metavar="RUN_DIR",
    help="--workdir of a pretraining run",
  )
  p.add_argument(
    "--images",
    required=True,
    metavar="DIR",
    help="folder searched recursively for images",
  )
  p.add_argument(
    "--out",
    required=True,
    metavar="FILE.npz",
    help="output: representation, [projection], filenames, [labels, "
    "class_names] (labels when every image is in a class sub-folder)",
  )
  p.add_argument(
    "--batch_size",
    type=int,
    default=256,
    help="global batch (rounded up to the device count)",
  )
  p.add_argument(
    "--projection",
    action="store_true",
    help="also store the projection-head output",
  )
  p.add_argument(
    "--image_size",
    type=int,
    default=0,
    help="resize to N px instead of the run's image size",
  )
  p.add_argument(
    "--step",
    type=int,
    default=None,
    help="checkpoint step (default: the latest)",
  )
  return p


def run(args: argparse.Namespace) -> Embeddings:
  """Checks the input cheaply, then loads, embeds and writes.

  The three paths may be relative to the current directory or start with
  `~`; messages name them resolved.
  """
  # pylint: disable=g-import-not-at-top
  import jax

  from simclr_jax import checkpointing
  from simclr_jax import embeddings
  from simclr_jax import pretrained as pretrained_lib
  from simclr_jax.configlib import checks
  # pylint: enable=g-import-not-at-top

  args = argparse.Namespace(**vars(args))
  for name in ("checkpoint", "images", "out"):
    if not getattr(args, name):  # "" would resolve to nothing, not "."
      raise UserError(f"--{name} is empty; pass a path (see --help).")
    setattr(args, name, checkpointing.resolve_path(getattr(args, name)))
  if args.batch_size < 1:
    raise UserError(f"--batch_size={args.batch_size} must be at least 1.")
  low, high = checks.MIN_IMAGE_SIZE, checks.MAX_IMAGE_SIZE
  if args.image_size and not low <= args.image_size <= high:
    what = "small" if args.image_size < low else "large"
    bound = f"least {low}" if args.image_size < low else f"most {high}"
    raise UserError(
      f"--image_size={args.image_size} is too {what}; use at {bound} "
      "pixels (or leave it out for the run's size)."
    )
  pretrained_lib.load_run_config(args.checkpoint)
  files = embeddings.find_images(args.images)
  embeddings.check_output_path(args.out)
  model = pretrained_lib.load_pretrained(args.checkpoint, step=args.step)
  result = embeddings.embed_images(
    model,
    args.images,
    batch_size=args.batch_size,
    projection=args.projection,
    image_size=args.image_size or None,
    progress=True,
    files=files,
  )
  if not result.filenames:
    raise UserError(
      f"none of the {len(files)} image files under "
      f"{args.images} could be decoded (e.g. "
      f"{result.skipped[0][0]}: {result.skipped[0][1]}); "
      "check that they are valid images."
    )
  embeddings.write_npz(args.out, result)
  if jax.process_index() == 0:
    for name, reason in result.skipped:
      print(f"skipped {name}: {reason}", file=sys.stderr)
    n, features = result.representation.shape
    shapes = f"representation {n}x{features}"
    if result.projection is not None:
      shapes += f", projection {n}x{result.projection.shape[1]}"
    if result.class_names is not None:
      shapes += f", labels of {len(result.class_names)} classes"
    else:
      shapes += ", no labels: not every image is in a class sub-folder"
    print(
      f"Embedded {n} images, skipped {len(result.skipped)} unreadable; "
      f"wrote {args.out} ({shapes}) from step {model.step} of "
      f"{args.checkpoint}.",
      flush=True,
    )
  return result


def main(argv: Sequence[str] | None = None) -> int:
  """The command line; returns the exit code (2: bad input)."""
  args = _parser().parse_args(argv)
  # pylint: disable=g-import-not-at-top
  from simclr_jax import defaults
  from simclr_jax import distributed
  from simclr_jax.data import sources
  # pylint: enable=g-import-not-at-top

  sources.hide_tf_from_accelerators()
  try:
    # Several processes: SIMCLR_* environment variables or a detected cluster.
    distributed.initialize(defaults.base_config().distributed)
    run(args)
  except UserError as e:
    print_error(str(e))
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
