"""Batch size x epochs on real CIFAR-10 at 16 px, on a 2-core CPU (about 32
minutes for all six points; docs/scaling.md has the report).

  python -m simclr_jax.sweep run configs/sweeps/cifar10_cpu_batch_epochs.py \
      --sweepdir runs/sweeps/cifar10_cpu
  python -m simclr_jax.sweep report runs/sweeps/cifar10_cpu

The paper's Figure 9 layout (accuracy vs epochs, a line per batch size) at
a CPU's scale. The learning rate follows the batch (linear scaling, as in
the base config). The end-of-run evaluation uses a 10,000-image kNN bank
and probe set and skips the random-encoder and raw-pixel rows, so that
evaluation stays a small part of each point.
"""

from simclr_jax.sweep import product

base_config = "../cifar10_cpu.py"
points = product(batch_size=[128, 256, 512], epochs=[1, 2])


def derive(point):
  del point  # the same for every point
  return {
    "eval.compare_random_init": False,
    "eval.compare_raw_pixels": False,
    "eval.max_train_examples": 10000,
    "eval.monitor_every_epochs": 0.5,
    "eval.monitor_train_examples": 5000,
  }
