"""Times the pretraining step (augment + forward + NT-Xent + LARS) for a config.

  python benchmarks/train_step.py --config configs/default.py [--steps 10]
      [--config.batch_size=256 ...]

Prints compile time and steady-state images/s. XLA CPU flags go in XLA_FLAGS
as usual (e.g. XLA_FLAGS=--xla_cpu_use_onednn=true) to compare backends.
"""

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
  state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(_STEPS.value):
    state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  per_step = (time.perf_counter() - t0) / _STEPS.value
  print(
    f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r} "
    f"devices={jax.device_count()} batch={config.batch_size} "
    f"image={config.data.image_size} host={size} first_step_s={compile_s:.1f} step_s={per_step:.3f} "
    f"images_per_s={config.batch_size / per_step:.1f}"
  )


if __name__ == "__main__":
  app.run(main)
