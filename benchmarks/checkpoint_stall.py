"""The step-time hiccup of a checkpoint save, asynchronous vs synchronous.

  python benchmarks/checkpoint_stall.py [--steps 12] [--save_at 6]
      [--config.model.width_multiplier=1.0 ...]

Trains a ResNet-18 (CIFAR stem, width x1 by default: 11M parameters, about
90 MB of state with the LARS momentum) on random data and saves a
checkpoint after step `--save_at`, once with orbax's asynchronous save (the
library's default) and once synchronously, side by side in one run. Reports
the median step time and the time of the save call plus the step after it,
i.e. what the training loop loses to the save.
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
from ml_collections import config_flags  # noqa: E402

from simclr_jax import checkpointing  # noqa: E402
from simclr_jax import pretrain  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
  "config",
  os.path.join(os.path.dirname(__file__), "..", "configs", "default.py"),
)
_STEPS = flags.DEFINE_integer("steps", 12, "Steps per mode.")
_SAVE_AT = flags.DEFINE_integer("save_at", 6, "Save after this step.")


def _run(setup, step, batch, seed, async_save):
  state = setup.init_state(seed)
  state, m = step(state, batch)
  jax.block_until_ready(m)
  times, stall = [], None
  with tempfile.TemporaryDirectory() as workdir:
    ckpt = checkpointing.Checkpointer(
      workdir, keep=1, every_steps=1, async_save=async_save
    )
    for i in range(1, _STEPS.value + 1):
      t0 = time.perf_counter()
      if i == _SAVE_AT.value + 1:
        ckpt.maybe_save(i, state, force=True)
      state, m = step(state, batch)
      jax.block_until_ready(m)
      dt = time.perf_counter() - t0
      if i == _SAVE_AT.value + 1:
        stall = dt
      else:
        times.append(dt)
    t0 = time.perf_counter()
    ckpt.close()
    close_s = time.perf_counter() - t0
  return statistics.median(times), stall, close_s


def main(_):
  config = _CONFIG.value
  if "--config.model.width_multiplier" not in " ".join(os.sys.argv):
    config.model.width_multiplier = 1.0
  config.batch_size = min(config.batch_size, 32)
  setup = pretrain.TrainSetup(config)
  state = setup.init_state(config.seed)
  step = setup.make_train_step(config.loss, state.params)
  nbytes = sum(x.nbytes for x in jax.tree.leaves(state))
  size = config.data.image_size
  rng = np.random.default_rng(0)
  batch = jax.device_put(
    {
      "image": rng.integers(
        0, 256, (config.batch_size, size, size, 3), np.uint8
      ),
      "label": np.zeros((config.batch_size,), np.int32),
    },
    setup.data_sharding,
  )
  print(
    f"state {nbytes / 2**20:.0f} MiB, batch {config.batch_size}, "
    f"{size} px, {jax.default_backend()}"
  )
  print(
    "| save | median step s | save call + next step s | hiccup s | "
    "wait at close s |"
  )
  print("| --- | --- | --- | --- | --- |")
  for async_save in (True, False):
    median, stall, close_s = _run(setup, step, batch, config.seed, async_save)
    print(
      f"| {'async' if async_save else 'sync'} | {median:.3f} | "
      f"{stall:.3f} | {stall - median:.3f} | {close_s:.3f} |"
    )


if __name__ == "__main__":
  app.run(main)
