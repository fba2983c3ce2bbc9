"""Frozen-encoder embeddings of a folder of images (the library behind
`python -m simclr_jax.embed`, whose docstring describes the file it writes).

Every image file under a folder is decoded on the host exactly like training
data, then encoded with BN in inference mode and the evaluation
preprocessing, sharded over all devices; files that cannot be decoded are
skipped and named. Images in class sub-folders also get labels.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import tempfile
import time
from typing import Iterator, Sequence

import jax
import numpy as np
import tensorflow as tf

from simclr_jax import checkpointing
from simclr_jax import data as data_lib
from simclr_jax import encoder as encoder_lib
from simclr_jax import pretrained as pretrained_lib
from simclr_jax import sharding
from simclr_jax.data import sources
from simclr_jax.errors import UserError
from simclr_jax.eval import features as features_lib
from simclr_jax.reporting import format_duration


@dataclasses.dataclass
class Embeddings:
  """Features of the images that decoded, plus the names of those that not."""

  filenames: list[str]  # relative to the image folder, sorted
  representation: np.ndarray  # (N, F) float32
  projection: np.ndarray | None  # (N, D) float32, if asked for
  skipped: list[tuple[str, str]]  # (relative path, reason)
  # Class index of each row and the sorted class names, when every image is
  # in a class sub-folder (see `class_labels`); None otherwise.
  labels: np.ndarray | None = None  # (N,) int32
  class_names: list[str] | None = None  # (C,)


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


def class_labels(files: Sequence[str]) -> tuple[list[str], np.ndarray] | None:
  """(class names, label of each file) when the folder has classes, else None.

  The folder data source's rule for one split folder (data/sources/folder.py:
  the class is the first-level sub-folder, deeper folders count for it, names
  sorted, label = index of the name), applied to `files` (relative paths, as
  `find_images` returns) so that the folder is not walked twice. Unlike that
  source, images directly in the folder (flat or mixed) mean no labels at all
  rather than label -1 for some, so labels are all or nothing. Split folders
  are not special: for root/train/<class>/..., pass root/train.
  """
  parts = [f.split("/", 1) for f in files]
  if not parts or any(len(p) < 2 for p in parts):
    return None
  names = sorted({p[0] for p in parts})
  index = {name: i for i, name in enumerate(names)}
  return names, np.array([index[p[0]] for p in parts], np.int32)


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
  data_sharding = sharding.batch_sharding(mesh)
  feature_fn = features_lib.make_feature_fn(pretrained.model, mesh, size)
  project = (
    encoder_lib.projection_fn(pretrained.model, mesh) if projection else None
  )

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
      host = {k: sharding.to_host(v) for k, v in outputs.items()}
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
  if done.any():  # with none decoded, the caller's error says so instead
    bar.update(len(files), len(files) - int(done.sum()), final=True)
  skipped = [
    (files[i], _why_unreadable(os.path.join(image_dir, files[i]), size))
    for i in np.flatnonzero(~done)
  ]
  classes = class_labels(files)
  return Embeddings(
    filenames=[f for f, ok in zip(files, done) if ok],
    representation=reps[done],
    projection=None if projs is None else projs[done],
    skipped=skipped,
    labels=None if classes is None else classes[1][done],
    class_names=None if classes is None else classes[0],
  )


def check_output_path(path: str) -> None:
  """Fails early (before any compute) if `path` cannot be written."""
  full = os.path.abspath(path)
  if os.path.isdir(full):
    raise UserError(
      f"--out {path} is a directory; pass a file name such as "
      f"{os.path.join(path, 'embeddings.npz')}."
    )
  parent = checkpointing.nearest_existing(os.path.dirname(full), "--out")
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
  try:  # os.access says yes to root, and in /proc or /sys
    tempfile.TemporaryFile(dir=parent).close()
  except OSError as e:
    raise UserError(
      f"cannot write --out {path}: nothing can be created in {parent} "
      f"({e.strerror}); choose another --out path."
    ) from None


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
  if embeddings.labels is not None:
    arrays["labels"] = np.asarray(embeddings.labels, np.int32)
  if embeddings.class_names is not None:
    arrays["class_names"] = np.asarray(embeddings.class_names, dtype=str)
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
