"""Config validation: every bad value gives a UserError that says what to do."""

import dataclasses

import pytest

from simclr_jax import configlib
from simclr_jax import defaults
from simclr_jax.errors import UserError
from helpers import ROOT


def _config(**overrides):
  c = defaults.base_config()
  for dotted, value in overrides.items():
    node = c
    *parents, leaf = dotted.split("__")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


def test_default_config_is_valid():
  configlib.validate(_config(), device_count=8)


@pytest.mark.parametrize(
  "overrides, fragment",
  [
    (dict(batch_size=100), "not divisible by the 8 devices"),
    (dict(batch_size=1), "at least 2"),
    (dict(data__source="web"), "use one of builtin, tfds, folder"),
    (dict(data__source="folder", data__data_dir=""), "data_dir"),
    (
      dict(data__source="tfds", data__name=""),
      "config.data: source 'tfds' needs a dataset name",
    ),
    (dict(model__depth=42), "use one of 18, 34, 50"),
    (dict(model__width_multiplier=0.0), "width_multiplier"),
    (dict(augment__blur_prob=1.5), "config.augment.blur_prob is a prob"),
    (dict(augment__crop_sampler="nope"), "crop_sampler must be one of"),
    (
      dict(augment__crop_area=(0.5, 0.2)),
      "crop_area must satisfy 0 < low <= high <= 1",
    ),
    (dict(optim__lr_scaling="cubic"), "'linear' or 'sqrt'"),
    (dict(loss__temperature=0.0), "loss.temperature"),
    (dict(optim__momentum=1.0), "momentum"),
    (dict(epochs=0, train_steps=0), "epochs or config.train_steps"),
    (dict(eval__batch_size=12), "eval.batch_size=12 is not divisible"),
    (dict(loss__chunk_size=1000), "chunk_size=1000 must divide"),
    (dict(loss__chunk_size=-1), "loss.chunk_size"),
    (dict(data__num_shards=-2), "config.data: num_shards must be >= 0"),
    (dict(data__num_shards=3), "config.data: num_shards=3 does not divide"),
    (
      dict(data__host_size=200),
      "config.data: host_size=200 is smaller than image_size=224",
    ),
    (
      dict(profile_steps=-1),
      "config.profile_steps=-1 must be a whole number >= 0: 0 for no "
      "profiler trace",
    ),
  ],
)
def test_bad_values_raise_user_error(overrides, fragment):
  with pytest.raises(UserError, match=None) as info:
    configlib.validate(_config(**overrides), device_count=8)
  assert fragment in str(info.value)


def test_num_shards_must_split_over_the_processes():
  configlib.validate(
    _config(data__num_shards=64), device_count=8, process_count=4
  )
  with pytest.raises(UserError) as info:
    configlib.validate(
      _config(data__num_shards=2), device_count=8, process_count=4
    )
  assert "num_shards=2 is not a multiple of the 4 processes" in str(info.value)
  with pytest.raises(UserError) as info:
    configlib.validate(
      _config(batch_size=96, data__num_shards=64),
      device_count=8,
      process_count=4,
    )
  assert "to a divisor of 96 that is a multiple of the 4" in str(info.value)


def test_divisibility_suggests_a_valid_batch():
  with pytest.raises(UserError) as info:
    configlib.validate(_config(batch_size=100), device_count=8)
  assert "--config.batch_size=104" in str(info.value)


def test_model_signature_covers_architecture():
  a = configlib.model_signature(_config())
  b = configlib.model_signature(_config(model__width_multiplier=2.0))
  assert a != b and set(a) == set(b)
  assert a == configlib.model_signature(_config(optim__weight_decay=0.1))


def test_shipped_configs_validate():
  import pathlib
  import runpy

  root = pathlib.Path(__file__).resolve().parents[1] / "configs"
  names = sorted(p.name for p in root.glob("*.py") if p.name != "__init__.py")
  assert {"default.py", "cifar10.py", "imagenet.py", "tpu_v3.py"} <= set(names)
  for name in names:
    config = runpy.run_path(str(root / name))["get_config"]()
    configlib.validate(config, device_count=8)


def test_build_gives_typed_frozen_sections_from_the_config():
  config = _config(model__depth=34, loss__chunk_size=64, eval__knn_ks=(50.0, 5))
  run = configlib.build(config, device_count=8)
  assert run.model.depth == 34 and run.loss.chunk_size == 64
  # Whole floats pass the check; the metric names need ints (knn_k50_top1).
  assert run.eval.knn.ks == (50, 5)
  assert all(type(k) is int for k in run.eval.knn.ks)
  assert run.train.batch_size == config.batch_size
  assert run.train.profile_steps == 0
  traced = configlib.build(_config(profile_steps=5), device_count=8)
  assert traced.train.profile_steps == 5
  assert run.data == configlib.data_config(config)
  assert run.views == configlib.view_configs(config)
  assert run.signature == configlib.model_signature(config)
  assert run.finetune.global_bn == config.model.global_bn
  with pytest.raises(dataclasses.FrozenInstanceError):
    run.model.depth = 50  # type: ignore[misc]


def test_sections_have_no_defaults_of_their_own():
  """defaults.base_config is the one list of defaults."""
  from simclr_jax.configlib import sections

  for cls in (
    sections.ModelConfig,
    sections.LossConfig,
    sections.OptimConfig,
    sections.TrainConfig,
    sections.EvalConfig,
    sections.RunConfig,
  ):
    defaulted = [
      f.name
      for f in dataclasses.fields(cls)
      if f.default is not dataclasses.MISSING
      or f.default_factory is not dataclasses.MISSING
    ]
    assert not defaulted, (cls.__name__, defaulted)


def test_build_checks_first():
  with pytest.raises(UserError, match="is not divisible by the 8 devices"):
    configlib.build(_config(batch_size=100), device_count=8)


def test_load_config_applies_overrides_like_the_command_line():
  c = configlib.load_config(
    str(ROOT / "configs" / "default.py"),
    {"epochs": 2, "data.image_size": 24, "eval.knn_ks": [5]},
  )
  assert (c.epochs, c.data.image_size, c.eval.knn_ks) == (2, 24, (5,))
  assert c.model.depth == 18  # the file's own values stay
  with pytest.raises(UserError, match=r"'data\.imagesize'.*data\.image_size"):
    configlib.load_config(
      str(ROOT / "configs" / "default.py"), {"data.imagesize": 1}
    )
  with pytest.raises(UserError, match="config.epochs='x'"):
    configlib.load_config(str(ROOT / "configs" / "default.py"), {"epochs": "x"})
  with pytest.raises(UserError, match="does not exist"):
    configlib.load_config("configs/nope.py")
  with pytest.raises(AttributeError):  # locked: no new keys by assignment
    c.new_key = 1
