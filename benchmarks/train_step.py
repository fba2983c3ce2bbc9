"""Times the pretraining step (augment + forward + NT-Xent + LARS) for a config.

  python benchmarks/train_step.py --config configs/default.py [--steps 10]
      [--json] [--config.batch_size=256 ...]

Prints the first step's time (compilation included), the steady-state time
per step, images/s and views/s (two views per image), and the temporary
memory XLA's buffer assignment reserves for the step (the activations kept
for the backward pass live there, so `--config.model.remat=True` shows up
in it). `--json` prints the same as one JSON line (benchmarks/suite.py reads
it). XLA CPU flags go in XLA_FLAGS as usual.
"""

import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from simclr_jax import pretrain  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps after warm-up.")
_JSON = flags.DEFINE_bool("json", False, "Print one JSON line.")


def main(_):
  config = _CONFIG.value
  setup = pretrain.TrainSetup(config)
  state = setup.init_state(config.seed)
  step = setup.make_train_step(config.loss, state.params)
  size = config.data.host_size or config.data.image_size  # what hosts send
  rng = np.random.default_rng(0)
  batch = {
    "image": rng.integers(0, 256, (config.batch_size, size, size, 3), np.uint8),
    "label": rng.integers(0, 10, (config.batch_size,), np.int32),
  }
  batch = jax.device_put(batch, setup.data_sharding)
  t0 = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - t0
  memory = compiled.memory_analysis()
  t0 = time.perf_counter()
  state, metrics = compiled(state, batch)
  jax.block_until_ready(metrics)
  first_s = compile_s + time.perf_counter() - t0
  times = []
  for _ in range(_STEPS.value):
    t0 = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t0)
  per_step = float(np.median(times))
  result = {
    "framework": "simclr_jax",
    "backend": jax.default_backend(),
    "devices": jax.device_count(),
    "batch_size": config.batch_size,
    "image_size": config.data.image_size,
    "compile_s": compile_s,
    "first_step_s": first_s,
    "step_s": per_step,
    "step_s_min": float(np.min(times)),
    "images_per_s": config.batch_size / per_step,
    "views_per_s": 2 * config.batch_size / per_step,
    "temp_bytes": getattr(memory, "temp_size_in_bytes", None),
    "loss": float(metrics["contrastive_loss"]),
  }
  if _JSON.value:
    print(json.dumps(result))
    return
  print(
    f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r} "
    f"devices={result['devices']} batch={config.batch_size} "
    f"image={config.data.image_size} host={size} "
    f"compile_s={compile_s:.1f} first_step_s={first_s:.1f} "
    f"step_s={per_step:.3f} images_per_s={result['images_per_s']:.1f} "
    f"temp_MiB={(result['temp_bytes'] or 0) / 2**20:.0f}"
  )


if __name__ == "__main__":
  app.run(main)
