"""The evaluator registry behind config.mode: names, the mode check, and
every entry building an evaluator that has `run`."""

import pytest

from simclr_jax import configlib
from simclr_jax import data
from simclr_jax import sharding
from simclr_jax.eval.base import EvalContext
from simclr_jax.pretrain import setup
from simclr_jax.errors import UserError
from simclr_jax.eval import registry

from helpers import tiny_config


def test_modes_are_pretrain_and_the_evaluators():
  assert registry.NAMES == ("knn", "linear", "logistic", "finetune")
  assert registry.MODES == ("pretrain",) + registry.NAMES


def test_check_mode_names_the_valid_modes():
  for mode in registry.MODES:
    registry.check_mode(mode)
  with pytest.raises(
    UserError,
    match="'probe' is not a mode; use one of pretrain, knn, linear, logistic, finetune",
  ):
    registry.check_mode("probe")


@pytest.mark.parametrize(
  "mode, method, name",
  [
    ("knn", "sgd", "knn"),
    ("linear", "sgd", "linear"),
    ("linear", "logistic", "logistic"),
    ("logistic", "sgd", "logistic"),
    ("finetune", "logistic", "finetune"),
  ],
)
def test_mode_and_method_pick_the_evaluator(mode, method, name):
  config = tiny_config()
  config.mode, config.init_checkpoint = mode, "/run"
  config.linear_eval.method = method
  run = configlib.build(config, device_count=8)
  assert registry.evaluator_name(run) == name


def test_every_entry_builds_an_evaluator_from_its_own_section():
  config = tiny_config()
  config.linear_eval.batch_size = 48
  config.finetune.label_fraction = 0.5
  config.eval.knn_ks = (7,)
  run = configlib.build(config, device_count=8)
  info = data.DatasetInfo(num_train=128, num_eval=64, num_classes=10,
                          class_names=tuple("abcdefghij"))  # fmt: skip
  ctx = EvalContext.for_run(run, info, sharding.make_mesh())
  model = setup.create_model(run.model, info.num_classes)
  built = {name: b(run, ctx, model) for name, b in registry.EVALUATORS.items()}
  assert all(callable(getattr(e, "run", None)) for e in built.values())
  assert built["knn"].settings.ks == (7,)
  assert built["linear"].settings.batch_size == 48
  assert built["finetune"].settings.label_fraction == 0.5
  assert built["logistic"].settings.max_iters == config.eval.probe_max_iters
