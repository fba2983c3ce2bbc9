"""The shared default configuration every file in `configs/` starts from.

It holds every key the library understands, so a config file is a short diff
and a misspelt `--config.key=value` override fails (config_flags locks it).
Defaults are the SimCLR v2 ImageNet recipe (the values `presets.simclr_v2`
sets; a test keeps the two in step) except where a config file says
otherwise.
"""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  """Returns the full, unlocked default config (reference ImageNet-style)."""
  c = ml_collections.ConfigDict()
  c.seed = 0

  # Data: where images come from and the fixed size the host brings them to.
  c.data = ml_collections.ConfigDict(dict(
      source="tfds",            # "builtin" | "tfds" | "folder"
      name="imagenet2012",      # tfds dataset name
      data_dir="",              # tfds data_dir, or the image-folder root
      train_split="train",
      eval_split="validation",  # "" disables held-out evaluation
      image_size=224,           # host output size; also the model input size
      builtin_train_examples=10000,
      builtin_eval_examples=2000,
      builtin_seed=0,
      shuffle_buffer=10000,
      cache=False,              # keep decoded images in host memory
      num_shards=0,             # data order = S reader shards (0: one per
                                # device); fixed S keeps the order across
                                # process and device counts
  ))

  # On-device augmentation (spec section 5); fields of augment.AugmentConfig.
  c.augment = ml_collections.ConfigDict(dict(
      crop=True,
      crop_area=(0.08, 1.0),
      crop_aspect=(3 / 4, 4 / 3),
      crop_sampler="reference",  # "reference" | "torchvision"
      flip=True,
      color_jitter_strength=1.0,
      color_jitter_prob=0.8,
      brightness="multiplicative",  # "multiplicative" (v2) | "additive" (v1)
      grayscale_prob=0.2,
      blur_prob=0.5,
      solarize_prob=0.0,
      asymmetric="",            # "" = same distribution for both views
                                # (reference); "byol" = blur 1.0/0.1,
                                # solarize 0.0/0.2 for views 1/2
  ))

  c.model = ml_collections.ConfigDict(dict(
      depth=50,
      width_multiplier=1.0,
      sk_ratio=0.0,
      se_ratio=0.0,
      cifar_stem=False,
      proj_head_layers=3,       # v1: 2, v2: 3
      proj_out_dim=128,
      bn_momentum=0.9,
      bn_epsilon=1e-5,
      half_precision=False,     # bfloat16 compute, float32 params/state/loss
      global_bn=True,           # BN statistics over the global batch (False:
                                # per device, the reference's other option)
  ))

  c.loss = ml_collections.ConfigDict(dict(
      temperature=0.1,
      hidden_norm=True,
      chunk_size=0,             # > 0: NT-Xent over candidate blocks of this
                                # many columns (bounded memory, see
                                # docs/scaling.md); must divide batch_size
  ))

  c.optim = ml_collections.ConfigDict(dict(
      base_learning_rate=0.1,
      lr_scaling="sqrt",        # "linear": base*B/256 | "sqrt": base*sqrt(B)
      warmup_epochs=10.0,
      weight_decay=1e-4,
      momentum=0.9,
      trust_coefficient=0.001,
      # The reference also decays the online head's kernel (an L2 loss
      # term); the spec's exclusion rule does not. Encoder unaffected.
      decay_supervised_head=False,
  ))

  # Multi-process runs (see simclr_jax/distributed.py); empty = automatic.
  c.distributed = ml_collections.ConfigDict(dict(
      coordinator_address="",   # "host:port" of process 0
      num_processes=0,
      process_id=-1,
      timeout_s=300,
  ))

  c.batch_size = 4096           # global batch, split over all devices
  c.epochs = 100
  c.train_steps = 0             # > 0 overrides epochs

  c.log_every_steps = 100
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 3

  # End-of-pretraining evaluation on the eval split.
  c.eval = ml_collections.ConfigDict(dict(
      enabled=True,
      batch_size=1024,
      knn_k=200,
      knn_temperature=0.1,
      linear_probe_steps=500,
      linear_probe_weight_decay=1e-4,
      compare_random_init=True,  # also evaluate a random encoder
      max_train_examples=0,      # > 0: cap the bank / probe train set
  ))
  return c
