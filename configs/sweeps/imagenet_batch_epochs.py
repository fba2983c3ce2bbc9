"""The SimCLR paper's Figure 9 sweep: ResNet-50 on ImageNet, batch size 256
to 8192 x 100 to 800 epochs (24 points; ImageNet must be prepared for tfds
as for configs/imagenet.py). On a cluster:

  python -m simclr_jax.sweep slurm configs/sweeps/imagenet_batch_epochs.py \
      --sweepdir /shared/sweeps/batch_epochs --nodes 4 --gpus_per_node 8

The learning rate follows each batch (configs/imagenet.py: LARS, linear
scaling 0.3 x batch / 256); warm-up stays 10 epochs as in the paper.
"""

from simclr_jax.sweep import product

base_config = "../imagenet.py"
points = product(
  batch_size=[256, 512, 1024, 2048, 4096, 8192], epochs=[100, 200, 400, 800]
)
