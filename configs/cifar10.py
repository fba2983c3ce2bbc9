"""CIFAR-10, ResNet-18 with the CIFAR stem: the reference README recipe.

B 512, LARS lr 1.0 (linear scaling), temperature 0.5, colour strength 0.5,
no blur, 1000 epochs; reference linear eval is about 91%. Reads tfds
`cifar10` by default; for the JPEG folder layout use
`--config.data.source=folder --config.data.data_dir=/path/to/cifar10`.
"""

from simclr_jax import defaults


def get_config():
  c = defaults.base_config()
  c.data.name = "cifar10"
  c.data.eval_split = "test"
  c.data.image_size = 32
  c.data.cache = True

  c.augment.color_jitter_strength = 0.5
  c.augment.blur_prob = 0.0

  c.model.depth = 18
  c.model.cifar_stem = True
  c.model.proj_head_layers = 2

  c.loss.temperature = 0.5
  c.optim.base_learning_rate = 1.0
  c.optim.lr_scaling = "linear"
  c.optim.weight_decay = 1e-6

  c.batch_size = 512
  c.epochs = 1000
  c.log_every_steps = 100
  c.checkpoint_every_steps = 5000

  # Downstream protocols (--config.mode=linear|finetune|knn): the paper's
  # CIFAR linear evaluation has no weight decay; a 2-layer head fine-tunes
  # from the encoder output, as in SimCLR v1.
  c.linear_eval.batch_size = 512
  c.linear_eval.weight_decay = 0.0
  c.finetune.head_layers = 0
  c.finetune.batch_size = 512
  return c
