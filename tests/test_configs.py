"""Every shipped config validates for the hardware it is meant for, the
distributed recipes agree with the numbers and commands in
docs/distributed.md; configs/folder_cpu.py runs end to end in
tests/test_readme_commands.py (the README's command)."""

import pathlib
import re
import runpy

import pytest

from simclr_jax import configlib
from simclr_jax import defaults
from simclr_jax import optim
from simclr_jax.errors import UserError

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
DOC = ROOT / "docs" / "distributed.md"
IMAGENET_TRAIN = 1281167

# (devices, processes) layouts each config is meant to run on.
LAYOUTS = {
  "default.py": [(1, 1), (8, 1)],
  "cifar10.py": [(1, 1), (8, 1)],
  "cifar10_cpu.py": [(1, 1)],
  "folder_cpu.py": [(1, 1)],
  "imagenet.py": [(8, 1), (32, 4)],
  "imagenet_v2.py": [(8, 1), (32, 4)],
  "tpu_v3.py": [(32, 4)],
  "tpu_v3_8.py": [(8, 1)],
  "tpu_v3_32.py": [(32, 4)],
  "gpu_8.py": [(8, 1)],
  "gpu_multinode.py": [(32, 4), (32, 32)],
}

# Rows of the batch-arithmetic table in docs/distributed.md:
# (config, label suffix, global B, devices, per device, processes,
#  per process, host batch, steps / epoch, steps for 100 epochs).
TABLE = [
  ("tpu_v3_8.py", "", 1024, 8, 128, 1, 1024, "147 MiB", "1251.1", 125114),
  ("tpu_v3_32.py", "", 4096, 32, 128, 4, 1024, "147 MiB", "312.8", 31279),
  ("gpu_8.py", "", 4096, 8, 512, 1, 4096, "588 MiB", "312.8", 31279),
  ("gpu_multinode.py", "", 4096, 32, 128, 4, 1024, "147 MiB", "312.8", 31279),
  (
    "gpu_multinode.py",
    ", one process per GPU",
    4096,
    32,
    128,
    32,
    128,
    "18 MiB",
    "312.8",
    31279,
  ),
]
RECIPES = ("tpu_v3_8.py", "tpu_v3_32.py", "gpu_8.py", "gpu_multinode.py")


def _load(name):
  return runpy.run_path(str(CONFIGS / name))["get_config"]()


def _flat(d, prefix=""):
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[prefix + k] = v
  return out


def _changed(config, base) -> dict:
  """Keys whose value differs between two configs, with the new value."""
  a, b = _flat(config.to_dict()), _flat(base.to_dict())
  assert set(a) == set(b)
  return {k: a[k] for k in a if a[k] != b[k]}


def _peak_lr(c):
  return optim.scaled_learning_rate(
    c.optim.base_learning_rate, c.batch_size, c.optim.lr_scaling
  )


def test_every_config_has_a_layout():
  names = {p.name for p in CONFIGS.glob("*.py") if p.name != "__init__.py"}
  assert names == set(LAYOUTS), "add new configs to LAYOUTS"


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_config_validates_for_its_layouts(name):
  c = _load(name)
  for devices, processes in LAYOUTS[name]:
    configlib.validate(c, device_count=devices, process_count=processes)
    assert c.eval.batch_size % processes == 0
    if c.data.num_shards:
      assert c.data.num_shards % processes == 0
      assert c.batch_size % c.data.num_shards == 0


def test_validate_rejects_a_recipe_on_the_wrong_device_count():
  with pytest.raises(UserError, match="24 devices"):
    configlib.validate(
      _load("gpu_multinode.py"), device_count=24, process_count=4
    )


@pytest.mark.parametrize("name", RECIPES)
def test_recipes_are_resnet50_imagenet_v1_in_bfloat16(name):
  c = _load(name)
  assert c.model.depth == 50 and c.model.width_multiplier == 1.0
  assert c.model.proj_head_layers == 2 and c.loss.temperature == 0.1
  assert c.model.half_precision and c.model.global_bn
  assert (c.data.name, c.data.image_size, c.epochs) == (
    "imagenet2012",
    224,
    100,
  )
  assert c.data.num_shards == 32
  assert 0 < c.checkpoint_every_steps <= 1000
  assert c.eval.max_train_examples == 100_000


def test_recipes_batch_and_learning_rate():
  for name in ("tpu_v3_32.py", "gpu_8.py", "gpu_multinode.py"):
    c = _load(name)
    assert c.batch_size == 4096, name
    assert abs(_peak_lr(c) - 4.8) < 1e-9, name
  v3_8 = _load("tpu_v3_8.py")
  assert v3_8.batch_size == 1024  # 128 per core, as on the v3-32
  assert abs(_peak_lr(v3_8) - 2.4) < 1e-9
  v3_8.batch_size = 4096  # the same rule gives the v1 recipe's lr at 4096
  assert abs(_peak_lr(v3_8) - 4.8) < 1e-9


# ---------------------------------------------------------------------------
# Recipe constants, written out from the papers and the reference's README
# commands (never read from a config): a changed recipe value in a config
# file, in simclr_jax/presets.py or in simclr_jax/defaults.py fails here.

# SimCLR v1 ImageNet pretraining (paper; reference README): ResNet-50, B
# 4096, LARS (momentum 0.9, trust coefficient 1e-3), lr 0.3 x B/256, 10
# warm-up epochs, wd 1e-6, tau 0.1, 100 epochs, 2-layer 128-d head; colour
# strength 1.0 (p 0.8, additive brightness in v1), grayscale 0.2, blur 0.5;
# crop area 0.08-1, aspect 3/4-4/3.
PRETRAIN_V1 = {
  "model.depth": 50,
  "model.width_multiplier": 1.0,
  "model.sk_ratio": 0.0,
  "model.cifar_stem": False,
  "model.proj_head_layers": 2,
  "model.proj_out_dim": 128,
  "data.image_size": 224,
  "batch_size": 4096,
  "epochs": 100,
  "train_steps": 0,
  "optim.base_learning_rate": 0.3,
  "optim.lr_scaling": "linear",
  "optim.warmup_epochs": 10.0,
  "optim.weight_decay": 1e-6,
  "optim.momentum": 0.9,
  "optim.trust_coefficient": 0.001,
  "loss.temperature": 0.1,
  "loss.hidden_norm": True,
  "augment.color_jitter_strength": 1.0,
  "augment.color_jitter_prob": 0.8,
  "augment.brightness": "additive",
  "augment.grayscale_prob": 0.2,
  "augment.blur_prob": 0.5,
  "augment.solarize_prob": 0.0,
  "augment.crop_area": (0.08, 1.0),
  "augment.crop_aspect": (3 / 4, 4 / 3),
  "augment.asymmetric": "",
}
# SimCLR v2: 3-layer head, multiplicative brightness, wd 1e-4, lr 0.1 x
# sqrt(B), 800 epochs; the rest as v1.
PRETRAIN_V2 = dict(
  PRETRAIN_V1,
  **{
    "model.proj_head_layers": 3,
    "augment.brightness": "multiplicative",
    "optim.weight_decay": 1e-4,
    "optim.base_learning_rate": 0.1,
    "optim.lr_scaling": "sqrt",
    "epochs": 800,
  },
)
# CIFAR-10 (reference README command): ResNet-18 CIFAR stem at 32 px, B 512,
# lr 1.0 x B/256, wd 1e-4, tau 0.5, colour strength 0.5, no blur, 1000
# epochs, the flags' defaults otherwise (3-layer head, 10 warm-up epochs,
# multiplicative brightness).
PRETRAIN_CIFAR = dict(
  PRETRAIN_V1,
  **{
    "model.depth": 18,
    "model.cifar_stem": True,
    "model.proj_head_layers": 3,
    "data.image_size": 32,
    "batch_size": 512,
    "epochs": 1000,
    "optim.base_learning_rate": 1.0,
    "optim.weight_decay": 1e-4,
    "loss.temperature": 0.5,
    "augment.color_jitter_strength": 0.5,
    "augment.brightness": "multiplicative",
    "augment.blur_prob": 0.0,
  },
)
# Linear evaluation (paper; README commands): SGD Nesterov momentum 0.9, lr
# 0.1 x B/256, no warm-up (none exists in the protocol), head zero-
# initialised, L2 over the head's kernel and bias; ImageNet 90 epochs at B
# 4096 with wd 1e-6, CIFAR-10 100 epochs at B 512 with wd 0.
LINEAR_IMAGENET = {
  "linear_eval.method": "sgd",
  "linear_eval.epochs": 90,
  "linear_eval.batch_size": 4096,
  "linear_eval.base_learning_rate": 0.1,
  "linear_eval.lr_scaling": "linear",
  "linear_eval.momentum": 0.9,
  "linear_eval.weight_decay": 1e-6,
  "linear_eval.decay_bias": True,
  "linear_eval.zero_init_head": True,
}
LINEAR_CIFAR = dict(
  LINEAR_IMAGENET,
  **{
    "linear_eval.epochs": 100,
    "linear_eval.batch_size": 512,
    "linear_eval.weight_decay": 0.0,
  },
)
# Semi-supervised fine-tuning (v2 paper; README): LARS momentum 0.9, lr
# 0.005 x sqrt(B), wd 0, no warm-up, B 1024, 60 epochs, zero-initialised
# classifier, from head layer 1 in v2 (the encoder output in v1).
FINETUNE_V2 = {
  "finetune.epochs": 60,
  "finetune.batch_size": 1024,
  "finetune.base_learning_rate": 0.005,
  "finetune.lr_scaling": "sqrt",
  "finetune.momentum": 0.9,
  "finetune.weight_decay": 0.0,
  "finetune.warmup_epochs": 0.0,
  "finetune.zero_init_head": True,
  "finetune.head_layers": 1,
}
FINETUNE_V1 = dict(FINETUNE_V2, **{"finetune.head_layers": 0})
# configs/cifar10.py fine-tunes from the encoder output at B 512 (the
# reference has no CIFAR-10 fine-tuning command).
FINETUNE_CIFAR = dict(FINETUNE_V1, **{"finetune.batch_size": 512})
IMAGENET_V1 = {**PRETRAIN_V1, **LINEAR_IMAGENET, **FINETUNE_V1}
# The compute recipes: the v1 recipe, in bfloat16; tpu_v3_8.py keeps 128
# pairs per core (B 1024) and the README's square-root rule for small
# batches, 0.075 x sqrt(B) (= 4.8 at B 4096, 2.4 at B 1024).
COMPUTE = {
  "model.half_precision": True,
  "model.global_bn": True,
  "data.num_shards": 32,
}
RECIPE_VALUES = {
  "cifar10.py": {**PRETRAIN_CIFAR, **LINEAR_CIFAR, **FINETUNE_CIFAR},
  "imagenet.py": IMAGENET_V1,
  "imagenet_v2.py": {**PRETRAIN_V2, **LINEAR_IMAGENET, **FINETUNE_V2},
  "tpu_v3_32.py": {**IMAGENET_V1, **COMPUTE},
  "tpu_v3.py": {**IMAGENET_V1, **COMPUTE},
  "gpu_8.py": {**IMAGENET_V1, **COMPUTE},
  "gpu_multinode.py": {**IMAGENET_V1, **COMPUTE},
  "tpu_v3_8.py": {
    **IMAGENET_V1,
    **COMPUTE,
    "batch_size": 1024,
    "optim.base_learning_rate": 0.075,
    "optim.lr_scaling": "sqrt",
  },
}
# Peak learning rates (pretraining, linear evaluation, fine-tuning), as the
# papers / README state them.
PEAK_LR = {
  "cifar10.py": (2.0, 0.2, 0.005 * 512**0.5),
  "imagenet.py": (4.8, 1.6, 0.16),
  "imagenet_v2.py": (6.4, 1.6, 0.16),
  "tpu_v3_32.py": (4.8, 1.6, 0.16),
  "tpu_v3.py": (4.8, 1.6, 0.16),
  "gpu_8.py": (4.8, 1.6, 0.16),
  "gpu_multinode.py": (4.8, 1.6, 0.16),
  "tpu_v3_8.py": (2.4, 1.6, 0.16),
}
# Keys a recipe config may set beyond RECIPE_VALUES: data location, host
# pipeline sizing and bookkeeping, which no paper fixes.
BOOKKEEPING = {
  "data.name",
  "data.eval_split",
  "data.cache",
  "data.host_size",
  "log_every_steps",
  "checkpoint_every_steps",
  "eval.batch_size",
  "eval.max_train_examples",
  "distributed.timeout_s",
}


@pytest.mark.parametrize("name", sorted(RECIPE_VALUES))
def test_recipe_constants_are_the_papers(name):
  c = _load(name)
  flat = _flat(c.to_dict())
  want = RECIPE_VALUES[name]
  got = {k: flat[k] for k in want}
  assert got == want, {k: (got[k], v) for k, v in want.items() if got[k] != v}
  pretrain, linear, finetune = PEAK_LR[name]
  assert _peak_lr(c) == pytest.approx(pretrain, rel=1e-9)
  le, ft = c.linear_eval, c.finetune
  assert optim.scaled_learning_rate(
    le.base_learning_rate, le.batch_size, le.lr_scaling
  ) == pytest.approx(linear, rel=1e-9)
  assert optim.scaled_learning_rate(
    ft.base_learning_rate, ft.batch_size, ft.lr_scaling
  ) == pytest.approx(finetune, rel=1e-9)
  # Whatever else the file sets is bookkeeping, not an unchecked recipe value.
  extra = set(_changed(c, defaults.base_config())) - set(want) - BOOKKEEPING
  assert not extra, extra


def test_recipes_are_small_diffs_of_the_imagenet_config():
  imagenet = _load("imagenet.py")
  common = {
    "model.half_precision": True,
    "data.num_shards": 32,
    "eval.batch_size": 4096,
    "eval.max_train_examples": 100_000,
  }
  assert _changed(_load("tpu_v3_32.py"), imagenet) == common
  assert _changed(_load("gpu_8.py"), imagenet) == dict(
    common, checkpoint_every_steps=500
  )
  assert _changed(_load("gpu_multinode.py"), _load("gpu_8.py")) == {
    "distributed.timeout_s": 600
  }
  assert _changed(_load("tpu_v3_8.py"), _load("tpu_v3_32.py")) == {
    "batch_size": 1024,
    "optim.base_learning_rate": 0.075,
    "optim.lr_scaling": "sqrt",
    "eval.batch_size": 1024,
  }
  assert _load("tpu_v3.py").to_dict() == _load("tpu_v3_32.py").to_dict()


@pytest.mark.parametrize("row", TABLE, ids=lambda r: r[0] + r[1])
def test_batch_arithmetic_matches_config_and_docs(row):
  (
    name,
    suffix,
    batch,
    devices,
    per_device,
    processes,
    per_process,
    host_batch,
    per_epoch,
    steps,
  ) = row
  c = _load(name)
  assert (devices, processes) in LAYOUTS[name]
  assert c.batch_size == batch
  assert batch // devices == per_device and batch % devices == 0
  assert batch // processes == per_process and batch % processes == 0
  assert f"{per_process * 224 * 224 * 3 / 2**20:.0f} MiB" == host_batch
  assert f"{IMAGENET_TRAIN / batch:.1f}" == per_epoch
  assert (
    optim.total_steps(
      batch_size=batch, num_examples=IMAGENET_TRAIN, epochs=c.epochs
    )
    == steps
  )
  label = f"| `configs/{name}`{suffix} |"
  rows = [
    l
    for l in DOC.read_text().splitlines()
    if l.startswith(label) and l.count("|") == 10
  ]
  assert len(rows) == 1, label
  cells = [x.strip() for x in rows[0].split("|")[2:-1]]
  assert cells == [
    str(batch),
    str(devices),
    str(per_device),
    str(processes),
    str(per_process),
    host_batch,
    per_epoch,
    str(steps),
  ]


def test_doc_config_paths_exist():
  paths = set(re.findall(r"--config[ =](\S+\.py)", DOC.read_text()))
  assert {f"configs/{n}" for n in RECIPES} <= paths
  for path in paths:
    assert (ROOT / path).is_file(), path


def test_doc_config_overrides_are_real_keys():
  keys = set(re.findall(r"--config\.([a-z_.]+)=", DOC.read_text()))
  assert "distributed.coordinator_address" in keys
  flat = _flat(defaults.base_config().to_dict())
  for key in keys:
    assert key in flat, key


def test_doc_environment_variables_are_read_by_the_code():
  source = (ROOT / "simclr_jax" / "distributed.py").read_text()
  names = set(re.findall(r"SIMCLR_[A-Z_]+", DOC.read_text()))
  assert names == {
    "SIMCLR_COORDINATOR_ADDRESS",
    "SIMCLR_NUM_PROCESSES",
    "SIMCLR_PROCESS_ID",
  }
  for name in names | {
    "SLURM_NTASKS",
    "OMPI_COMM_WORLD_SIZE",
    "TPU_WORKER_HOSTNAMES",
  }:
    assert name in source, name


@pytest.mark.parametrize(
  "name",
  [
    "imagenet.py",
    "imagenet_v2.py",
    "tpu_v3_8.py",
    "tpu_v3_32.py",
    "gpu_8.py",
    "gpu_multinode.py",
  ],
)
def test_imagenet_crops_read_from_a_larger_host_square(name):
  """The reference crops full-resolution ImageNet images and downsamples;
  these configs read 224 px views from 320 px host squares (fidelity D1),
  while the small-image recipes keep host size = image size."""
  c = _load(name)
  assert (c.data.image_size, c.data.host_size) == (224, 320)
  for small in ("cifar10.py", "cifar10_cpu.py", "default.py"):
    assert _load(small).data.host_size == 0


# ---------------------------------------------------------------------------
# configs/folder_cpu.py: the user's own images on a CPU.


def test_folder_cpu_is_cpu_sized_and_evaluates():
  """The sizes that keep ~10,000 images to 10-15 minutes on 2 cores, and
  the end-of-run table of trained, random and raw-pixel rows."""
  c = _load("folder_cpu.py")
  assert (c.data.source, c.data.host_size) == ("folder", 0)
  assert c.data.data_dir == "data/images"  # git ignores data/
  assert c.data.image_size <= 32
  assert (c.model.depth, c.model.cifar_stem) == (18, True)
  assert c.model.width_multiplier <= 0.25 and not c.model.half_precision
  steps = optim.total_steps(
    batch_size=c.batch_size, num_examples=10_000, epochs=c.epochs
  )
  assert 100 <= steps <= 200, steps
  assert c.data.eval_split and c.data.eval_split != c.data.train_split
  e = c.eval
  assert e.enabled and e.linear_probe and e.monitor_every_epochs == 0
  assert e.compare_random_init and e.compare_raw_pixels
