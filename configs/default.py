"""CPU quickstart: SimCLR on the built-in procedural dataset, offline.

Finishes in a few minutes on 2 CPU cores and shows the trained encoder beating
a randomly initialised one by kNN accuracy (numbers in README.md).
"""

from simclr_jax import defaults


def get_config():
  c = defaults.base_config()
  c.data.source = "builtin"
  c.data.name = ""
  c.data.eval_split = "test"
  c.data.image_size = 32
  c.data.cache = True

  c.augment.color_jitter_strength = 0.5
  c.augment.blur_prob = 0.0

  c.model.depth = 18
  c.model.width_multiplier = 0.25
  c.model.cifar_stem = True
  c.model.proj_head_layers = 2

  c.loss.temperature = 0.5
  c.optim.base_learning_rate = 1.0
  c.optim.warmup_epochs = 1.0
  c.optim.weight_decay = 1e-4

  c.batch_size = 256
  c.epochs = 15
  c.log_every_steps = 20
  c.checkpoint_every_steps = 200
  c.eval.batch_size = 512
  return c
