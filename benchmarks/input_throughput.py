"""Host input throughput: decoded, resized, batched images/s of one process.

  python benchmarks/input_throughput.py [--size 224] [--files 512]
      [--batch 64] [--batches 8] [--json]

Measures the library's own training input pipeline (`data.train_batches`:
read, decode, resize + centre crop to `--size`, shuffle, batch) for
- `folder`: a folder of generated 500x375 JPEGs (the most common ImageNet
  image size; smooth content plus noise, so the files have realistic sizes),
  two classes, written to a temporary directory;
- `tfds`: `tfds.testing.mock_data` ImageNet examples (tfds reading and our
  resize path, without JPEG decoding: mock examples are already pixels), a
  bound on what the tfds path adds on top of decoding.
Reports images/s for the process and per host core (`os.cpu_count()`), to
compare with the images/s one training step consumes
(benchmarks/train_step.py); benchmarks/suite.py prints the ratio.
"""

import json
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from simclr_jax import data  # noqa: E402

_SIZE = flags.DEFINE_integer("size", 224, "Side the host brings images to.")
_FILES = flags.DEFINE_integer("files", 512, "Generated JPEGs.")
_BATCH = flags.DEFINE_integer("batch", 64, "Images per batch.")
_BATCHES = flags.DEFINE_integer("batches", 8, "Timed batches (after one).")
_JSON = flags.DEFINE_bool("json", False, "Print one JSON line.")


def write_jpegs(root: str, count: int) -> None:
  """`count` 500x375 JPEGs in root/train/{a,b}/."""
  rng = np.random.default_rng(0)
  base = rng.integers(0, 256, (24, 32, 3), np.uint8)
  for i in range(count):
    folder = os.path.join(root, "train", "ab"[i % 2])
    os.makedirs(folder, exist_ok=True)
    image = Image.fromarray(np.roll(base, i, axis=1)).resize((500, 375))
    pixels = np.asarray(image, np.int16) + rng.integers(-20, 20, (375, 500, 3))
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
      os.path.join(folder, f"{i:05d}.jpg"), quality=90
    )


def rate(cfg: data.DataConfig, batch: int, batches: int) -> float:
  """Images/s of `train_batches` after its first batch (pipeline warm-up)."""
  it = data.train_batches(cfg, global_batch_size=batch, seed=0)
  next(it)
  t0 = time.perf_counter()
  for _ in range(batches):
    next(it)
  return batch * batches / (time.perf_counter() - t0)


def measure(size: int, files: int, batch: int, batches: int) -> dict:
  """Both sources' rates, per process and per core."""
  import tensorflow_datasets as tfds  # noqa: PLC0415

  cores = os.cpu_count() or 1
  results = {"size": size, "cores": cores, "batch": batch}
  with tempfile.TemporaryDirectory() as root:
    write_jpegs(root, files)
    cfg = data.DataConfig(
      source="folder",
      name="",
      data_dir=root,
      eval_split="",
      image_size=size,
      shuffle_buffer=files,
    )
    results["folder_images_per_s"] = rate(cfg, batch, batches)
  cfg = data.DataConfig(
    source="tfds",
    name="imagenet2012",
    image_size=size,
    eval_split="",
    shuffle_buffer=batch,
  )
  with tfds.testing.mock_data(num_examples=batch * (batches + 1)):
    results["tfds_mock_images_per_s"] = rate(cfg, batch, batches)
  for key in ("folder", "tfds_mock"):
    results[f"{key}_images_per_s_per_core"] = (
      results[f"{key}_images_per_s"] / cores
    )
  return results


def main(_):
  r = measure(_SIZE.value, _FILES.value, _BATCH.value, _BATCHES.value)
  if _JSON.value:
    print(json.dumps(r))
    return
  print(
    f"{r['size']} px, {r['cores']} cores: folder JPEGs "
    f"{r['folder_images_per_s']:.0f} img/s "
    f"({r['folder_images_per_s_per_core']:.0f}/core); tfds mock "
    f"{r['tfds_mock_images_per_s']:.0f} img/s"
  )


if __name__ == "__main__":
  app.run(main)
