"""ImageNet ResNet-50, SimCLR v1, on 4 nodes x 8 GPUs (32 GPUs, B 4096).

`configs/gpu_8.py` spread over four nodes; the recipe and the data order
(32 shards) are the same. Batch arithmetic: 4096 pairs / 32 GPUs = 128
pairs (256 images of 224 px) per GPU, and 128 images per GPU in the
evaluation (eval.batch_size 4096). With one process per node (4 processes)
each reads and feeds 4096 / 4 = 1024 pairs per step; with one process per
GPU (32 processes) each feeds 128. Both layouts are in docs/distributed.md.
312.8 steps per ImageNet epoch, 31,279 for 100 epochs.

Memory: 128 pairs per device is what the reference README's "B 4096
needs 32+ TPU v3 cores" puts on a 16 GiB core, a quarter of gpu_8.py's load, so GPUs
smaller than 80 GB are in reach (not measured with this code). BN
statistics and NT-Xent negatives span all 32 GPUs. Processes wait up to 10
minutes for each other at start-up (nodes of one job can come up minutes
apart).
"""

import pathlib
import runpy

_gpu_8 = runpy.run_path(str(pathlib.Path(__file__).with_name("gpu_8.py")))


def get_config():
  c = _gpu_8["get_config"]()
  c.distributed.timeout_s = 600
  return c
