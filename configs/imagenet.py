"""ImageNet, ResNet-50: the SimCLR v1 pretraining recipe.

B 4096, LARS lr 0.3 with linear scaling (4.8), temperature 0.1, 100 epochs
with 10 warmup epochs, weight decay 1e-6, colour strength 1.0 with blur.
Expects `imagenet2012` prepared in a tfds data_dir
(`--config.data.data_dir=gs://bucket/tfds` or a local path).
"""

from simclr_jax import defaults


def get_config():
  c = defaults.base_config()
  c.model.depth = 50
  c.model.proj_head_layers = 2
  c.loss.temperature = 0.1
  c.optim.base_learning_rate = 0.3
  c.optim.lr_scaling = "linear"
  c.optim.weight_decay = 1e-6
  c.batch_size = 4096
  c.epochs = 100
  return c
