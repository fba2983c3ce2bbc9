"""ImageNet ResNet-50, SimCLR v1, on one machine with 8 GPUs (one process).

`configs/imagenet.py` (B 4096, lr 0.3 x B/256 = 4.8, tau 0.1, 100 epochs)
plus what the node needs. Batch arithmetic: 4096 pairs / 8 GPUs = 512 pairs
(1024 images of 224 px) per GPU; the single process reads and feeds all
4096 pairs per step. 312.8 steps per ImageNet epoch, 31,279 for 100 epochs.

Memory: 512 pairs per device is four times the 128 pairs that the
reference README's "B 4096 needs 32+ TPU v3 cores" puts on a 16 GiB core, so plan on 80 GB
GPUs (A100 80GB, H100, H200); this was not measured with this code. With
smaller GPUs use more of them (configs/gpu_multinode.py: 128 per GPU).
bfloat16 compute (`model.half_precision`; Ampere or newer) with float32
parameters, BN statistics, loss and optimiser state. BN statistics span
all 8 GPUs (`model.global_bn`, the default).

A checkpoint every 500 steps (1.6% of the run); 32 data shards keep the
data order equal to the 32-device recipes, so the run can move to
configs/gpu_multinode.py and back. The end-of-run kNN bank and probe use
the first 100,000 training images, as on TPU. Launch: docs/distributed.md.
"""

import pathlib
import runpy

_imagenet = runpy.run_path(str(pathlib.Path(__file__).with_name("imagenet.py")))


def get_config():
  c = _imagenet["get_config"]()
  c.model.half_precision = True
  c.data.num_shards = 32
  c.checkpoint_every_steps = 500
  c.eval.batch_size = 4096  # 512 per GPU (inference, one view)
  c.eval.max_train_examples = 100_000
  return c
