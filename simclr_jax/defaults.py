"""The shared default configuration every file in `configs/` starts from.

It holds every key the library understands, so a config file is a short diff
and a misspelt `--config.key=value` override fails (config_flags locks it).
Defaults are the SimCLR v2 ImageNet recipe (the values `presets.simclr_v2`
sets; a test keeps the two in step) except where a config file says
otherwise.
"""

import dataclasses

import ml_collections

from simclr_jax.data import config as data_config


def base_config() -> ml_collections.ConfigDict:
  """Returns the full, unlocked default config (reference ImageNet-style)."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  # What the run does: "pretrain" (SimCLR), or a downstream protocol on the
  # encoder of the pretraining run in `init_checkpoint` (the evaluators of
  # simclr_jax/eval/registry.py): "linear" (linear evaluation), "logistic"
  # (the same as "linear" with linear_eval.method="logistic"), "finetune"
  # (semi-supervised fine-tuning) or "knn".
  c.mode = "pretrain"
  c.init_checkpoint = ""  # pretraining run directory (downstream modes)

  # Data: where images come from, the square the host brings them to, and
  # the model input size. One definition: the fields and defaults of
  # data.DataConfig (commented there).
  c.data = ml_collections.ConfigDict(
    dataclasses.asdict(data_config.DataConfig())
  )

  # On-device augmentation (docs/fidelity.md section 5); fields of augment.AugmentConfig.
  c.augment = ml_collections.ConfigDict(
    dict(
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
      blur_sigma="per_image",  # "per_image" (ours) | "per_batch" (one sigma
      # per view and step, like the reference)
      solarize_prob=0.0,
      asymmetric="",  # "" = same distribution for both views
      # (reference); "byol" = blur 1.0/0.1,
      # solarize 0.0/0.2 for views 1/2
    )
  )

  c.model = ml_collections.ConfigDict(
    dict(
      depth=50,
      width_multiplier=1.0,
      sk_ratio=0.0,
      se_ratio=0.0,
      cifar_stem=False,
      proj_head_layers=3,  # v1: 2, v2: 3
      proj_out_dim=128,
      bn_momentum=0.9,
      bn_epsilon=1e-5,
      half_precision=False,  # bfloat16 compute, float32 params/state/loss
      global_bn=True,  # BN statistics over the global batch (False:
      # per device, the reference's other option)
      conv_impl="auto",  # how convs are computed: "auto" (CPU: "patches_small",
      # a matmul over patches for maps of <= 64 pixels; elsewhere "xla"),
      # "xla", "patches" (models/conv_impl.py); all give the same gradients
      remat=False,  # recompute each residual block in the backward pass:
      # less activation memory on accelerators (none on XLA:CPU), ~1/3 more FLOPs
    )
  )

  c.loss = ml_collections.ConfigDict(
    dict(
      temperature=0.1,
      hidden_norm=True,
      chunk_size=0,  # > 0: NT-Xent over candidate blocks of this
      # many columns (bounded memory, see
      # docs/scaling.md); must divide batch_size
    )
  )

  c.optim = ml_collections.ConfigDict(
    dict(
      base_learning_rate=0.1,
      lr_scaling="sqrt",  # "linear": base*B/256 | "sqrt": base*sqrt(B)
      warmup_epochs=10.0,
      weight_decay=1e-4,
      momentum=0.9,
      trust_coefficient=0.001,
      # The reference also decays the online head's kernel (an L2 loss
      # term); the usual exclusion rule does not. Encoder unaffected.
      decay_supervised_head=False,
    )
  )

  # Multi-process runs (see simclr_jax/distributed.py); empty = automatic.
  c.distributed = ml_collections.ConfigDict(
    dict(
      coordinator_address="",  # "host:port" of process 0
      num_processes=0,
      process_id=-1,
      timeout_s=300,
    )
  )

  c.batch_size = 4096  # global batch, split over all devices
  c.epochs = 100
  c.train_steps = 0  # > 0 overrides epochs

  c.log_every_steps = 100
  # Also the checkpoints of fine-tuning and SGD linear evaluation (in their
  # own --workdir), which resume from them as pretraining does.
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 3
  # Re-running a finished pretraining prints its results.json instead of
  # recomputing it (unless config.eval or data.eval_split changed); True
  # evaluates the final checkpoint again.
  c.reevaluate = False
  # > 0: a profiler trace of that many pretraining steps, from the first
  # report on (no compilation), in <workdir>/profile for TensorBoard's
  # profile plugin or Perfetto.
  c.profile_steps = 0

  # Evaluation of the frozen encoder: at the end of pretraining (trained vs
  # random encoder, optionally raw pixels), mode="knn", and a periodic kNN
  # monitor during pretraining.
  c.eval = ml_collections.ConfigDict(
    dict(
      enabled=True,
      batch_size=1024,
      knn_ks=(200, 20),  # every k from one search; cosine similarity
      knn_temperature=0.1,  # votes weighted by exp(sim / temperature)
      linear_probe=True,  # end of pretraining: logistic-regression
      # probe (L2 chosen on a validation split)
      probe_max_iters=1000,  # L-BFGS iterations per fit of that probe
      compare_random_init=True,  # also evaluate a random encoder
      compare_raw_pixels=False,  # also evaluate raw pixels as features
      max_train_examples=0,  # > 0: cap the bank / probe train set
      monitor_every_epochs=0.0,  # > 0: kNN top-1 on the eval split every so
      # many epochs of pretraining (monitor/...)
      monitor_train_examples=10000,  # bank size of that monitor
    )
  )

  # mode="linear": linear classifier on the frozen encoder (BN in inference
  # mode). "sgd" is the paper's protocol (crop + flip, SGD Nesterov, lr 0.1 x
  # B/256, cosine decay, no warm-up); "logistic" extracts features once and
  # fits a multinomial logistic regression, choosing its L2 strength on a
  # validation split of `val_fraction` of the training data.
  c.linear_eval = ml_collections.ConfigDict(
    dict(
      method="sgd",  # "sgd" | "logistic"
      epochs=90,
      batch_size=4096,
      base_learning_rate=0.1,
      lr_scaling="linear",
      momentum=0.9,
      weight_decay=1e-6,  # 0 for CIFAR in the paper
      decay_bias=True,  # "sgd": decay the head's bias too (the
      # reference's L2 term covers it)
      zero_init_head=True,  # "sgd": head kernel and bias start at 0, as
      # in the reference's downstream commands
      val_fraction=0.1,  # "logistic": held out to pick the L2 strength
    )
  )

  # mode="finetune": the whole network from the pretrained weights, on a
  # stratified `label_fraction` of the labels (ImageNet: the official 1% /
  # 10% subsets); docs/fidelity.md section 6.
  c.finetune = ml_collections.ConfigDict(
    dict(
      label_fraction=0.1,  # 1.0 = all labels
      head_layers=1,  # projection-head layers kept below the
      # classifier: 1 for v2 (from head layer 1),
      # 0 for v1 (from the encoder output)
      epochs=60,
      batch_size=1024,
      base_learning_rate=0.005,
      lr_scaling="sqrt",
      momentum=0.9,
      weight_decay=0.0,
      warmup_epochs=0.0,
      zero_init_head=True,  # classifier kernel and bias start at 0, as
      # in the reference's fine-tuning commands
    )
  )
  return c
