"""SimCLR v1 and v2 as config presets: what changed between the papers.

Each function edits a config in place and returns it, so a config file reads
`presets.simclr_v2(defaults.base_config())` followed by its own recipe.

| setting | v1 | v2 |
| --- | --- | --- |
| projection head layers | 2 | 3 |
| brightness jitter | additive | multiplicative |
| weight decay | 1e-6 | 1e-4 |
| learning rate | 0.3 x B/256 | 0.1 x sqrt(B) |
| fine-tuned representation | encoder output | projection-head layer 1 |
"""

import ml_collections


def simclr_v1(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """SimCLR v1 (Chen et al., 2020a) settings."""
  config.model.proj_head_layers = 2
  config.augment.brightness = "additive"
  config.optim.weight_decay = 1e-6
  config.optim.base_learning_rate = 0.3
  config.optim.lr_scaling = "linear"
  config.finetune.head_layers = 0
  return config


def simclr_v2(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """SimCLR v2 (Chen et al., 2020b) settings."""
  config.model.proj_head_layers = 3
  config.augment.brightness = "multiplicative"
  config.optim.weight_decay = 1e-4
  config.optim.base_learning_rate = 0.1
  config.optim.lr_scaling = "sqrt"
  config.finetune.head_layers = 1
  return config
