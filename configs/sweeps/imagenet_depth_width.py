"""The SimCLR paper's Figure 7 sweep: ResNet depth x width on ImageNet, 100
epochs (9 points), for accuracy vs parameters.

  python -m simclr_jax.sweep tpu configs/sweeps/imagenet_depth_width.py \
      --sweepdir ~/bucket/sweeps/depth_width --devices 32 --hosts 4
"""

from simclr_jax.sweep import product

base_config = "../imagenet.py"
points = product(
  {"model.depth": [50, 101, 152], "model.width_multiplier": [1, 2, 4]},
  epochs=[100],
)
