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

Files that cannot be decoded are skipped and named on stderr. In Python:
`embed_images(pretrained.load_pretrained(RUN_DIR), DIR)`. With several
processes (see simclr_jax/distributed.py) every process must see DIR, each
decodes its part, and process 0 writes FILE.npz.
"""

from __future__ import annotations

import os

# TensorFlow only decodes images here: keep its start-up chatter off stderr.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Callable, Iterator, Sequence  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

from simclr_jax import checkpointing  # noqa: E402
from simclr_jax import data as data_lib  # noqa: E402
from simclr_jax import defaults  # noqa: E402
from simclr_jax import distributed  # noqa: E402
from simclr_jax import evaluation  # noqa: E402
from simclr_jax import pretrained as pretrained_lib  # noqa: E402
from simclr_jax.data import sources  # noqa: E402
from simclr_jax.errors import UserError  # noqa: E402
from simclr_jax.reporting import format_duration  # noqa: E402


@dataclasses.dataclass
class Embeddings:
  """Features of the images that decoded, plus the names of those that not."""

  filenames: list[str]  # relative to the image folder, sorted
  representation: np.ndarray  # (N, F) float32
  projection: np.ndarray | None  # (N, D) float32, if asked for
  skipped: list[tuple[str, str]]  # (relative path, reason)


def find_images(root: str) -> list[str]:
  """Sorted relative paths of every image file under `root` (recursive).

  Hidden files and folders are ignored; extensions match in any case.
  """
  if not os.path.isdir(root):
    what = "is not a directory" if os.path.exists(root) else "does not exist"
    raise UserError(f"--images {root} {what}; pass a folder of images.")
  found = []
  for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
    dirnames[:] = [d for d in dirnames if not d.startswith(".")]
    rel = os.path.relpath(dirpath, root)
    for name in filenames:
      if not name.startswith(".") and name.lower().endswith(
        sources.IMAGE_EXTENSIONS
      ):
        found.append(
          os.path.normpath(os.path.join(rel, name)).replace(os.sep, "/")
        )
  if not found:
    raise UserError(
      f"no images ({', '.join(sources.IMAGE_EXTENSIONS)}) "
      f"found under {root}; pass the folder that holds them."
    )
  return sorted(found)


def _local_batches(
  root: str, files: Sequence[str], *, global_batch: int, image_size: int
) -> Iterator[dict[str, np.ndarray]]:
  """This process's rows of every global batch: images and file indices.

  Process p decodes rows [p*L, (p+1)*L) of each global batch of B = P*L
  files (in parallel with tf.data). A file that fails to decode is dropped
  by `ignore_errors`; its row stays zeros with index -1, like padding, so
  every process yields the same number of equally sized batches.
  """
  local = global_batch // jax.process_count()
  offset = jax.process_index() * local
  num_batches = -(-len(files) // global_batch)
  mine = [
    i
    for b in range(num_batches)
    for i in range(
      b * global_batch + offset,
      min(b * global_batch + offset + local, len(files)),
    )
  ]
  paths = [os.path.join(root, files[i]) for i in mine]
  ds = tf.data.Dataset.from_tensor_slices(
    (
      tf.constant(mine, tf.int64, shape=[len(mine)]),
      tf.constant(paths, tf.string, shape=[len(paths)]),
    )
  )
  ds = ds.map(
    lambda i, path: (i, sources.decode_file(path, image_size)),
    num_parallel_calls=tf.data.AUTOTUNE,
    deterministic=True,
  )
  decoded = ds.ignore_errors().prefetch(tf.data.AUTOTUNE).as_numpy_iterator()
  pending = next(decoded, None)
  for b in range(num_batches):
    start = b * global_batch + offset
    images = np.zeros((local, image_size, image_size, 3), np.uint8)
    index = np.full((local,), -1, np.int32)
    while pending is not None and pending[0] < start + local:
      i, image = pending
      images[i - start], index[i - start] = image, i
      pending = next(decoded, None)
    yield {"image": images, "index": index}


def _projection_fn(model, mesh: jax.sharding.Mesh) -> Callable:
  """Jitted (variables, representations) -> projections, frozen BN."""
  data = NamedSharding(mesh, P("data"))

  def project(variables, representation):
    head = {
      k: v["projection_head"]
      for k, v in variables.items()
      if "projection_head" in v
    }
    return model.projection_head.apply(head, representation, train=False)

  return jax.jit(
    project, in_shardings=(NamedSharding(mesh, P()), data), out_shardings=data
  )


def _why_unreadable(path: str, image_size: int) -> str:
  try:
    sources.decode_file(tf.constant(path), image_size)
  except tf.errors.OpError as e:
    # TF wraps the reason: "{{function_node ...}} REASON [Op:DecodeImage]".
    reason = re.sub(r"\{\{.*?\}\}", "", e.message).split("[Op:")[0]
    return " ".join(reason.split())[:200] or type(e).__name__
  return "failed to decode"  # e.g. a transient read error


class _Progress:
  """A one-line progress report on stderr (process 0 only)."""

  def __init__(self, total: int, enabled: bool):
    self.total, self.enabled = total, enabled
    self.tty = sys.stderr.isatty()
    self.start = self.last = time.time()

  def update(self, seen: int, skipped: int, final: bool = False) -> None:
    """`seen` files processed so far, `skipped` of them undecodable."""
    now = time.time()
    if not self.enabled or not (final or self.tty or now - self.last >= 10):
      return
    self.last = now
    elapsed = max(now - self.start, 1e-9)
    rate = (seen - skipped) / elapsed
    tail = (
      f"took {format_duration(elapsed)}"
      if final
      else f"ETA {format_duration((self.total - seen) * elapsed / seen)}"
    )
    line = (
      f"embedding: {seen}/{self.total} files ({skipped} skipped), "
      f"{rate:.1f} img/s, {tail}"
    )
    end = "\n" if final or not self.tty else ""
    print(
      ("\r" if self.tty else "") + line, end=end, file=sys.stderr, flush=True
    )


def embed_images(
  pretrained: pretrained_lib.Pretrained,
  image_dir: str,
  *,
  batch_size: int = 256,
  projection: bool = False,
  image_size: int | None = None,
  progress: bool = False,
  files: Sequence[str] | None = None,
) -> Embeddings:
  """Encodes every image under `image_dir`; the result is on every process.

  `batch_size` is global and rounded up to a multiple of the device count
  (and down to what the image count needs). Images are brought to the
  run's host square (`data.host_size`, else its image size) and centre
  cropped and resized to its model input size, as its evaluation did;
  `image_size` overrides both sizes. `files`
  (relative paths, as `find_images` returns) saves walking the folder again.
  """
  files = list(files) if files is not None else find_images(image_dir)
  size = image_size or pretrained.image_size
  host_size = image_size or pretrained.config.data.host_size or size
  mesh = pretrained.mesh
  devices = mesh.size
  batch = min(max(1, batch_size), len(files))
  batch = -(-batch // devices) * devices
  data_sharding = NamedSharding(mesh, P("data"))
  feature_fn = evaluation.make_feature_fn(pretrained.model, mesh, size)
  project = _projection_fn(pretrained.model, mesh) if projection else None

  reps = projs = None
  done = np.zeros((len(files),), bool)
  bar = _Progress(len(files), progress and jax.process_index() == 0)
  seen = 0
  batches = data_lib.prefetch_to_device(
    _local_batches(image_dir, files, global_batch=batch, image_size=host_size),
    data_sharding,
  )
  try:
    for global_batch in batches:
      rep = feature_fn(pretrained.variables, global_batch["image"])
      outputs = {"index": global_batch["index"], "rep": rep}
      if project is not None:
        outputs["proj"] = project(pretrained.variables, rep)
      host = {
        k: np.asarray(multihost_utils.process_allgather(v, tiled=True))
        for k, v in outputs.items()
      }
      index = host["index"]
      real = index >= 0
      if reps is None:
        reps = np.zeros((len(files), host["rep"].shape[-1]), np.float32)
        if project is not None:
          projs = np.zeros((len(files), host["proj"].shape[-1]), np.float32)
      reps[index[real]] = host["rep"][real]
      if projs is not None:
        projs[index[real]] = host["proj"][real]
      done[index[real]] = True
      seen = min(seen + batch, len(files))
      bar.update(seen, seen - int(done.sum()))
  finally:
    batches.close()
  bar.update(len(files), len(files) - int(done.sum()), final=True)
  skipped = [
    (files[i], _why_unreadable(os.path.join(image_dir, files[i]), size))
    for i in np.flatnonzero(~done)
  ]
  return Embeddings(
    filenames=[f for f, ok in zip(files, done) if ok],
    representation=reps[done],
    projection=None if projs is None else projs[done],
    skipped=skipped,
  )


def check_output_path(path: str) -> None:
  """Fails early (before any compute) if `path` cannot be written."""
  full = os.path.abspath(path)
  if os.path.isdir(full):
    raise UserError(
      f"--out {path} is a directory; pass a file name such as "
      f"{os.path.join(path, 'embeddings.npz')}."
    )
  parent = os.path.dirname(full)
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise UserError(
      f"cannot write --out {path}: {parent} is a file, not a "
      "directory; choose another --out path."
    )
  target = full if os.path.exists(full) else parent
  if not os.access(target, os.W_OK):
    raise UserError(
      f"cannot write --out {path}: {target} is not writable; "
      "choose another --out path or fix its permissions."
    )


def write_npz(path: str, embeddings: Embeddings) -> None:
  """Writes the arrays atomically (process 0 only); creates parent folders."""
  if jax.process_index() != 0:
    return
  arrays = {
    "representation": embeddings.representation,
    "filenames": np.asarray(embeddings.filenames, dtype=str),
  }
  if embeddings.projection is not None:
    arrays["projection"] = embeddings.projection
  tmp = f"{path}.tmp{os.getpid()}"
  try:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(tmp, "wb") as f:
      np.savez(f, **arrays)
    os.replace(tmp, path)
  except OSError as e:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise UserError(
      f"cannot write --out {path} ({e.strerror or e}); choose "
      "another --out path."
    ) from None


class _Parser(argparse.ArgumentParser):
  """argparse whose usage errors are one `error:` line and exit code 2."""

  def error(self, message: str) -> None:  # type: ignore[override]
    _print_error(f"{message} (see --help)")
    sys.exit(2)


def _print_error(message: str) -> None:
  print(f"error: {' '.join(message.split())}", file=sys.stderr, flush=True)


def _parser() -> argparse.ArgumentParser:
  p = _Parser(
    prog="python -m simclr_jax.embed",
    description="Frozen-encoder features of a folder of images.",
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
    help="output: representation, [projection], filenames",
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
  args = argparse.Namespace(**vars(args))
  for name in ("checkpoint", "images", "out"):
    setattr(args, name, checkpointing.resolve_path(getattr(args, name)))
  if args.batch_size < 1:
    raise UserError(f"--batch_size={args.batch_size} must be at least 1.")
  if args.image_size and args.image_size < 8:
    raise UserError(
      f"--image_size={args.image_size} is too small; use at "
      "least 8 pixels (or leave it out for the run's size)."
    )
  pretrained_lib.load_run_config(args.checkpoint)
  files = find_images(args.images)
  check_output_path(args.out)
  model = pretrained_lib.load_pretrained(args.checkpoint, step=args.step)
  result = embed_images(
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
  write_npz(args.out, result)
  if jax.process_index() == 0:
    for name, reason in result.skipped:
      print(f"skipped {name}: {reason}", file=sys.stderr)
    n, features = result.representation.shape
    shapes = f"representation {n}x{features}"
    if result.projection is not None:
      shapes += f", projection {n}x{result.projection.shape[1]}"
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
  sources.hide_tf_from_accelerators()
  try:
    # Several processes: SIMCLR_* environment variables or a detected cluster.
    distributed.initialize(defaults.base_config().distributed)
    run(args)
  except UserError as e:
    _print_error(str(e))
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
