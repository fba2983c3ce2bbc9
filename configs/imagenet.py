"""ImageNet, ResNet-50: the SimCLR v1 pretraining recipe.

v1 preset (2-layer head, additive brightness, wd 1e-6, lr 0.3 x B/256 = 4.8
at B 4096) with temperature 0.1, 100 epochs and 10 warm-up epochs, colour
strength 1.0 with blur. Expects `imagenet2012` prepared in a tfds data_dir
(`--config.data.data_dir=/path/to/tensorflow_datasets`).
"""

from simclr_jax import defaults
from simclr_jax import presets


def get_config():
  c = presets.simclr_v1(defaults.base_config())
  c.model.depth = 50
  # Crops read from a 320 px square and downsample to 224, as the
  # reference's crops of full-resolution images do (docs/fidelity.md D1).
  c.data.host_size = 320
  c.loss.temperature = 0.1
  c.batch_size = 4096
  c.epochs = 100
  return c
