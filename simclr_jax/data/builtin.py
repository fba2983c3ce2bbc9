"""A procedurally generated image dataset that needs no download.

Every image shows one of ten classes that are defined only by shape, geometry
or texture (a circle, a star, stripes, ...). Everything else is a nuisance
that varies strongly from image to image: foreground and background colour,
position, scale, aspect ratio, rotation, colour gradients, clutter (small
blobs and line segments, one of which may occlude the object) and pixel noise.

This is deliberate. A randomly initialised conv net mostly encodes colour and
position, and raw pixels are dominated by colour, so both do poorly here; the
colour-jitter and crop invariances that SimCLR learns are exactly what is
needed to group images by class. That makes the dataset a quick, honest check
that contrastive pretraining learns something (kNN accuracy of the pretrained
encoder vs. a random one) on a laptop-sized budget.

Generation is vectorised numpy: all per-image parameters are drawn up front
from one seeded generator, then images are rendered in chunks with signed
distance functions and one-pixel anti-aliasing, so the result is deterministic
in (num_examples, image_size, seed).
"""

from __future__ import annotations

import functools
import os

import numpy as np

CLASS_NAMES: tuple[str, ...] = (
  "circle",
  "square",
  "triangle",
  "star",
  "cross",
  "ring",
  "crescent",
  "stripes",
  "checkerboard",
  "dots",
)
NUM_CLASSES = len(CLASS_NAMES)

_NUM_CLUTTER = 4  # clutter items per image (each present with p=0.7)
_NUM_FRONT = 1  # ... of which the last ones occlude the object
_CHUNK_PIXELS = 1 << 18  # pixels rendered at once; bounds peak memory


def split_seed(seed: int, split: str) -> int:
  """Derives independent generator seeds for the train and eval sets."""
  split_id = {"train": 0, "test": 1}[split]
  return int(np.random.SeedSequence([seed, split_id]).generate_state(1)[0])


def generate(
  num_examples: int, image_size: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
  """Generates `num_examples` class-balanced images.

  Returns images uint8 (N, S, S, 3) and labels int32 (N,), deterministic in the
  arguments. The arrays are cached in-process and returned read-only.
  """
  if num_examples < 0 or image_size < 1:
    raise ValueError(f"bad sizes: {num_examples=} {image_size=}")
  return _generate_cached(int(num_examples), int(image_size), int(seed))


def export_folder(
  root: str,
  *,
  split: str = "test",
  num_examples: int = 2000,
  image_size: int = 32,
  seed: int = 0,
) -> list[str]:
  """Writes a builtin split as PNG files in class folders; returns their paths.

  The images are those the builtin data source gives for `split` ("train"
  or "test") with `builtin_seed=seed`, `num_examples` examples and host size
  `image_size`: image i of the split, of class c, is written losslessly to
  `root/<CLASS_NAMES[c]>/<i>.png` (i zero-padded to at least 5 digits).
  Class folders are made as needed (only for classes that get images);
  files of the same name are overwritten. Returns the written paths,
  relative to `root` with "/" separators and sorted, as
  `embeddings.find_images(root)` lists them. The result is a labelled image
  folder, made offline, for `embeddings.embed_images` or
  `config.data.source="folder"`.
  """
  from PIL import Image  # pylint: disable=import-outside-toplevel

  if split not in ("train", "test"):
    raise ValueError(
      f"the builtin splits are 'train' and 'test', not {split!r}"
    )
  images, labels = generate(num_examples, image_size, split_seed(seed, split))
  digits = max(5, len(str(max(num_examples - 1, 0))))
  for label in np.unique(labels):
    os.makedirs(os.path.join(root, CLASS_NAMES[label]), exist_ok=True)
  paths = []
  for i, (image, label) in enumerate(zip(images, labels)):
    path = f"{CLASS_NAMES[label]}/{i:0{digits}d}.png"
    Image.fromarray(image).save(os.path.join(root, *path.split("/")))
    paths.append(path)
  return sorted(paths)


@functools.lru_cache(maxsize=8)
def _generate_cached(n: int, size: int, seed: int):
  ss = np.random.SeedSequence(seed)
  param_seq, noise_seq = ss.spawn(2)
  params = _sample_params(np.random.default_rng(param_seq), n)
  images = np.empty((n, size, size, 3), np.uint8)
  chunk = max(1, _CHUNK_PIXELS // (size * size))
  noise_seqs = noise_seq.spawn((n + chunk - 1) // chunk)
  for i, start in enumerate(range(0, n, chunk)):
    sl = slice(start, min(n, start + chunk))
    sub = {k: v[sl] for k, v in params.items()}
    images[sl] = _render(sub, size, np.random.default_rng(noise_seqs[i]))
  labels = params["label"].astype(np.int32)
  images.flags.writeable = False
  labels.flags.writeable = False
  return images, labels


def _sample_params(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
  """Draws every per-image nuisance and class parameter."""
  u = rng.uniform
  labels = rng.permutation(np.arange(n) % NUM_CLASSES)
  bg = u(0, 1, (n, 3))
  fg = u(0, 1, (n, 3))
  # Make sure the object is visible: replace low-contrast foregrounds.
  far = np.where(bg > 0.5, u(0, 0.35, (n, 3)), u(0.65, 1, (n, 3)))
  low = np.linalg.norm(fg - bg, axis=-1) < 0.45
  fg[low] = 0.5 * fg[low] + 0.5 * far[low]
  k = _NUM_CLUTTER
  return dict(
    label=labels,
    # Object placement (image coordinates in [-1, 1]).
    cx=u(-0.3, 0.3, n),
    cy=u(-0.3, 0.3, n),
    scale=u(0.5, 0.8, n),
    aspect=np.exp(u(-0.2, 0.2, n)),
    angle=u(0, 2 * np.pi, n),
    # Colours, each with its own linear gradient.
    bg=bg,
    bg2=np.clip(bg + u(-0.3, 0.3, (n, 3)), 0, 1),
    fg=fg,
    fg2=np.clip(fg + u(-0.2, 0.2, (n, 3)), 0, 1),
    grad_angle=u(0, 2 * np.pi, n),
    # Textures: cell size / period (image units), phase.
    period=u(0.22, 0.45, n),
    phase=u(0, 1, (n, 2)),
    # Clutter: blobs or line segments, some in front of the object.
    cl_on=u(0, 1, (n, k)) < 0.7,
    cl_line=u(0, 1, (n, k)) < 0.5,
    cl_xy=u(-1, 1, (n, k, 2)),
    cl_radius=u(0.03, 0.09, (n, k)),
    cl_len=u(0.15, 0.6, (n, k)),
    cl_angle=u(0, np.pi, (n, k)),
    cl_color=u(0, 1, (n, k, 3)),
    cl_alpha=u(0.5, 1, (n, k)),
    noise=u(0.01, 0.06, n),
  )


def _render(
  p: dict[str, np.ndarray], size: int, rng: np.random.Generator
) -> np.ndarray:
  """Renders one chunk of images from their parameters."""
  n = len(p["label"])
  pix = 2.0 / size  # one pixel in image units
  coords = (np.arange(size, dtype=np.float32) + 0.5) * pix - 1.0
  x = coords[None, None, :]
  y = coords[None, :, None]

  def col(v):  # (n,) -> broadcastable against (n, S, S)
    return np.asarray(v, np.float32)[:, None, None]

  # Gradient coordinate t in [0, 1] along a random direction.
  ga = p["grad_angle"]
  t = (x * col(np.cos(ga)) + y * col(np.sin(ga))) / (2 * 2**0.5) + 0.5
  t = t[..., None]
  img = _lerp(p["bg"], p["bg2"], t)
  fg = _lerp(p["fg"], p["fg2"], 1.0 - t)

  behind = _NUM_CLUTTER - _NUM_FRONT
  for j in range(behind):
    _over(img, p["cl_color"][:, j], _clutter_alpha(p, j, x, y, pix))

  alpha = np.zeros((n, size, size), np.float32)
  for c in range(NUM_CLASSES):
    idx = np.nonzero(p["label"] == c)[0]
    if idx.size:
      sub = {k: v[idx] for k, v in p.items()}
      alpha[idx] = _class_alpha(c, sub, x, y, pix)
  fg -= img
  fg *= alpha[..., None]
  img += fg
  for j in range(behind, _NUM_CLUTTER):
    _over(img, p["cl_color"][:, j], _clutter_alpha(p, j, x, y, pix))

  noise = rng.standard_normal(img.shape, dtype=np.float32)
  noise *= np.asarray(p["noise"], np.float32)[:, None, None, None]
  img += noise
  img *= 255
  return np.clip(np.rint(img, out=img), 0, 255, out=img).astype(np.uint8)


def _lerp(a, b, t):
  a = np.asarray(a, np.float32)[:, None, None, :]
  b = np.asarray(b, np.float32)[:, None, None, :]
  return a + (b - a) * t


def _over(img, color, alpha):
  """Alpha-blends a flat colour (n, 3) over img (n, S, S, 3), in place."""
  delta = np.asarray(color, np.float32)[:, None, None] - img
  delta *= alpha[..., None]
  img += delta


def _coverage(dist, pix):
  """Anti-aliased coverage from a signed distance (negative inside)."""
  return np.clip(0.5 - dist / pix, 0.0, 1.0).astype(np.float32)


def _clutter_alpha(p, j, x, y, pix):
  """Coverage of clutter item j: a small disk or a thin line segment."""

  def col(v):
    return np.asarray(v, np.float32)[:, None, None]

  dx = x - col(p["cl_xy"][:, j, 0])
  dy = y - col(p["cl_xy"][:, j, 1])
  blob = np.sqrt(dx * dx + dy * dy) - col(p["cl_radius"][:, j])
  ca, sa = col(np.cos(p["cl_angle"][:, j])), col(np.sin(p["cl_angle"][:, j]))
  half = col(p["cl_len"][:, j] / 2)
  along = np.clip(dx * ca + dy * sa, -half, half)
  lx, ly = dx - along * ca, dy - along * sa
  line = np.sqrt(lx * lx + ly * ly) - max(pix * 0.6, 0.02)
  dist = np.where(col(p["cl_line"][:, j]), line, blob)
  return _coverage(dist, pix) * col(p["cl_on"][:, j] * p["cl_alpha"][:, j])


def _class_alpha(c, p, x, y, pix):
  """Coverage of the class-defining object (shape) or pattern (texture)."""

  def col(v):
    return np.asarray(v, np.float32)[:, None, None]

  ca, sa = col(np.cos(p["angle"])), col(np.sin(p["angle"]))
  name = CLASS_NAMES[c]
  if name in ("stripes", "checkerboard", "dots"):
    # Textures fill the whole image, rotated, with random period and phase.
    per = col(p["period"])
    u = (x * ca + y * sa) / per + col(p["phase"][:, 0])
    v = (-x * sa + y * ca) / per + col(p["phase"][:, 1])
    fu, fv = u - np.floor(u), v - np.floor(v)
    if name == "stripes":
      dist = (np.abs(fu - 0.5) - 0.25) * per
    elif name == "checkerboard":
      edge = np.minimum(0.5 - np.abs(fu - 0.5), 0.5 - np.abs(fv - 0.5)) * per
      even = (np.floor(u) + np.floor(v)) % 2 == 0
      dist = np.where(even, -edge, edge)
    else:  # dots on a lattice
      dist = (np.hypot(fu - 0.5, fv - 0.5) - 0.28) * per
    return _coverage(dist, pix)

  # Shapes: map pixels into the object's frame (unit radius).
  s = col(p["scale"])
  sx, sy = s * col(p["aspect"]), s / col(p["aspect"])
  dx, dy = x - col(p["cx"]), y - col(p["cy"])
  u = (dx * ca + dy * sa) / sx
  v = (-dx * sa + dy * ca) / sy
  r = np.sqrt(u * u + v * v)
  if name == "circle":
    dist = r - 0.9
  elif name == "square":
    dist = np.maximum(np.abs(u), np.abs(v)) - 0.72
  elif name == "triangle":
    dist = -np.inf
    for a in (np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3):
      dist = np.maximum(dist, u * np.cos(a) + v * np.sin(a))
    dist = dist - 0.5
  elif name == "star":
    k = np.arctan2(v, u) * (5 / (2 * np.pi))
    tri = 1 - 2 * np.abs(k - np.floor(k) - 0.5)  # 1 at the points
    dist = (r - (0.4 + 0.6 * tri)) * 0.7
  elif name == "cross":
    au, av = np.abs(u), np.abs(v)
    dist = np.minimum(
      np.maximum(au - 0.95, av - 0.3), np.maximum(au - 0.3, av - 0.95)
    )
  elif name == "ring":
    dist = np.abs(r - 0.7) - 0.2
  elif name == "crescent":
    dist = np.maximum(r - 0.95, 0.72 - np.hypot(u - 0.45, v))
  else:
    raise AssertionError(name)
  return _coverage(dist * s, pix)


if __name__ == "__main__":
  # Quick look: python -m simclr_jax.data.builtin /tmp/builtin.png
  import sys
  import time

  from PIL import Image

  start = time.time()
  ims, labs = generate(12000, 32, 0)
  print(f"generated {ims.shape} in {time.time() - start:.2f}s")
  rows = [ims[np.nonzero(labs == c)[0][:16]] for c in range(NUM_CLASSES)]
  grid = np.stack(rows).transpose(0, 2, 1, 3, 4).reshape(320, 512, 3)
  Image.fromarray(grid).resize((1024, 640), Image.NEAREST).save(
    sys.argv[1] if len(sys.argv) > 1 else "/tmp/builtin.png"
  )
