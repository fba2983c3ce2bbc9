"""ImageNet, ResNet-50 (optionally SK / wider): the SimCLR v2 recipe.

v2 preset (3-layer head, multiplicative brightness, wd 1e-4, lr 0.1 x
sqrt(B) = 6.4 at B 4096), temperature 0.1, 800 epochs as in the v2 paper.
For the selective-kernel models use `--config.model.sk_ratio=0.0625`
(and `--config.model.width_multiplier=2` etc.).
"""

from simclr_jax import defaults
from simclr_jax import presets


def get_config():
  c = presets.simclr_v2(defaults.base_config())
  c.model.depth = 50
  # Crops read from a 320 px square and downsample to 224, as the
  # reference's crops of full-resolution images do (docs/fidelity.md D1).
  c.data.host_size = 320
  c.loss.temperature = 0.1
  c.batch_size = 4096
  c.epochs = 800
  return c
