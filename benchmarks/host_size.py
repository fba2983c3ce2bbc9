"""What a host size above the model input size costs (`data.host_size`).

  python benchmarks/host_size.py [--image_size 224] [--host_sizes 224,320]
      [--batch 16] [--steps 3] [--files 256] [--depth 18]

For each host size S, side by side in one run:
- host bytes per image (uint8 S x S x 3, what is cached, batched and copied
  to the device);
- host decode + resize throughput, images/s on this machine's cores, for a
  folder of generated 500x375 JPEGs (the most common ImageNet size), through
  the library's own folder decoding;
- the on-device cost of the two augmented views (crop, resize to image_size,
  flip, jitter, grayscale, blur) of one batch, jitted;
- one full pretraining step (views + ResNet forward/backward + NT-Xent +
  LARS) of a ResNet (`--depth`, standard stem) at image_size.
Timings alternate between the sizes and report the median of `--steps`.
"""

import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
import tensorflow as tf  # noqa: E402

from simclr_jax import configlib  # noqa: E402
from simclr_jax import defaults  # noqa: E402
from simclr_jax import pretrain  # noqa: E402
from simclr_jax.augment import views  # noqa: E402
from simclr_jax.data import sources  # noqa: E402

_IMAGE_SIZE = flags.DEFINE_integer("image_size", 224, "Model input size.")
_HOST_SIZES = flags.DEFINE_list(
  "host_sizes", ["224", "320"], "Host sizes to compare (>= image_size)."
)
_BATCH = flags.DEFINE_integer("batch", 16, "Images per step (2x views).")
_STEPS = flags.DEFINE_integer("steps", 3, "Timed repetitions per size.")
_FILES = flags.DEFINE_integer("files", 256, "Generated JPEGs to decode.")
_DEPTH = flags.DEFINE_integer("depth", 18, "ResNet depth of the train step.")


def _write_jpegs(folder: str, count: int) -> list[str]:
  rng = np.random.default_rng(0)
  base = rng.integers(0, 256, (24, 32, 3), np.uint8)
  paths = []
  for i in range(count):
    # Smooth content plus noise, so the JPEGs have realistic sizes.
    image = Image.fromarray(np.roll(base, i, axis=1)).resize((500, 375))
    pixels = np.asarray(image, np.int16) + rng.integers(-20, 20, (375, 500, 3))
    path = os.path.join(folder, f"{i:05d}.jpg")
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
      path, quality=90
    )
    paths.append(path)
  return paths


def _decode_rate(paths: list[str], size: int) -> float:
  ds = tf.data.Dataset.from_tensor_slices(
    {"path": tf.constant(paths), "label": tf.zeros(len(paths), tf.int32)}
  )
  ds = sources.decode_paths(ds, size).batch(64)
  t0 = time.perf_counter()
  for _ in ds:
    pass
  return len(paths) / (time.perf_counter() - t0)


def _config(image_size: int, host_size: int, batch: int, depth: int):
  c = defaults.base_config()
  c.data.source = "builtin"
  c.data.image_size = image_size
  c.data.host_size = host_size
  c.data.builtin_train_examples = batch
  c.data.eval_split = ""
  c.model.depth = depth
  c.batch_size = batch
  c.train_steps = 10
  return c


def main(_):
  size = _IMAGE_SIZE.value
  hosts = [int(s) for s in _HOST_SIZES.value]
  batch = _BATCH.value
  rng = np.random.default_rng(0)
  with tempfile.TemporaryDirectory() as folder:
    paths = _write_jpegs(folder, _FILES.value)
    _decode_rate(paths[:32], hosts[0])  # warm tf.data up
    decode = {s: [] for s in hosts}
    for _ in range(_STEPS.value):
      for s in hosts:
        decode[s].append(_decode_rate(paths, s))

  runs = {}
  for s in hosts:
    config = _config(size, s, batch, _DEPTH.value)
    setup = pretrain.TrainSetup(config)
    state = setup.init_state(config.seed)
    step = setup.make_train_step(config.loss, state.params)
    cfgs = configlib.view_configs(config)
    two_views = jax.jit(lambda key, x, c=cfgs: views.two_views(key, x, c))
    images = rng.integers(0, 256, (batch, s, s, 3), np.uint8)
    data = jax.device_put(
      {"image": images, "label": np.zeros((batch,), np.int32)},
      setup.data_sharding,
    )
    key = jax.random.key(0)
    t0 = time.perf_counter()
    jax.block_until_ready(two_views(key, data["image"]))
    state, metrics = step(state, data)
    jax.block_until_ready(metrics)
    runs[s] = dict(
      step=step,
      state=state,
      data=data,
      two_views=two_views,
      first_s=time.perf_counter() - t0,
      views=[],
      steps=[],
    )
  for i in range(_STEPS.value):
    for s in hosts:
      r = runs[s]
      t0 = time.perf_counter()
      jax.block_until_ready(
        r["two_views"](jax.random.key(i), r["data"]["image"])
      )
      r["views"].append(time.perf_counter() - t0)
      t0 = time.perf_counter()
      r["state"], metrics = r["step"](r["state"], r["data"])
      jax.block_until_ready(metrics)
      r["steps"].append(time.perf_counter() - t0)

  print(
    f"image_size {size}, batch {batch} ({2 * batch} views), ResNet-"
    f"{_DEPTH.value}, {jax.device_count()} {jax.default_backend()} "
    f"device(s), {os.cpu_count()} host cores; medians of {_STEPS.value}"
  )
  print(
    "| host size | host bytes / image | decode + resize img/s | "
    "two views ms / batch | train step s | step vs first size |"
  )
  print("| --- | --- | --- | --- | --- | --- |")
  base = statistics.median(runs[hosts[0]]["steps"])
  for s in hosts:
    r = runs[s]
    step_s = statistics.median(r["steps"])
    print(
      f"| {s} | {s * s * 3:,} | {statistics.median(decode[s]):.0f} | "
      f"{1e3 * statistics.median(r['views']):.1f} | {step_s:.2f} | "
      f"{step_s / base:.3f} |"
    )


if __name__ == "__main__":
  app.run(main)
