"""ImageNet ResNet-50, SimCLR v1, on a TPU v3-32 slice (32 cores, 4 hosts).

`configs/imagenet.py` (B 4096, lr 0.3 x B/256 = 4.8, tau 0.1, 100 epochs)
plus what the slice needs. Batch arithmetic: 4096 pairs / 32 cores = 128
pairs (256 images of 224 px, both views) per core; 4 processes (one per
host) each read and feed 4096 / 4 = 1024 pairs per step. 312.8 steps per
ImageNet epoch, 31,279 steps for 100 epochs.

Memory: the reference README says B 4096 needs at least 32 TPU v3 cores,
i.e. 128 pairs fit a 16 GiB core. bfloat16 compute (`model.half_precision`)
with float32 parameters, BN statistics, loss and optimiser state. The
NT-Xent logits are small at this size (about 16 MiB per core unchunked, see
docs/scaling.md), so `loss.chunk_size` stays 0.

Preemption: a checkpoint every 1,000 steps, about 12 minutes at the
reference's "100 epochs in about 6 h" pace; rerunning the same command resumes. 32 data
shards (`data.num_shards`) keep the data order independent of the number
of hosts. The end-of-run kNN bank and probe use the first 100,000 training
images: the full split's 2048-d features (10.5 GB) would not fit one core.
Launch commands: docs/distributed.md.
"""

import pathlib
import runpy

_imagenet = runpy.run_path(str(pathlib.Path(__file__).with_name("imagenet.py")))


def get_config():
  c = _imagenet["get_config"]()
  c.model.half_precision = True
  c.data.num_shards = 32
  c.checkpoint_every_steps = 1000
  c.eval.batch_size = 4096  # 128 per core
  c.eval.max_train_examples = 100_000
  return c
