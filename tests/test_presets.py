"""v1 / v2 presets and the configs built on them."""

import pathlib
import runpy

from simclr_jax import defaults
from simclr_jax import optim
from simclr_jax import presets

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"


def _peak_lr(c):
  return optim.scaled_learning_rate(
    c.optim.base_learning_rate, c.batch_size, c.optim.lr_scaling
  )


def test_v1_preset():
  """SimCLR v1: 2-layer head, additive brightness, wd 1e-6, 0.3 x B/256
  (4.8 at B 4096), fine-tuned from the encoder output."""
  c = presets.simclr_v1(defaults.base_config())
  assert c.model.proj_head_layers == 2
  assert c.augment.brightness == "additive"
  assert c.optim.weight_decay == 1e-6
  assert (c.optim.base_learning_rate, c.optim.lr_scaling) == (0.3, "linear")
  assert c.finetune.head_layers == 0
  c.batch_size = 4096
  assert abs(_peak_lr(c) - 4.8) < 1e-9


def test_v2_preset():
  """SimCLR v2: 3-layer head, multiplicative brightness, wd 1e-4, 0.1 x
  sqrt(B) (6.4 at B 4096), fine-tuned from projection-head layer 1."""
  c = presets.simclr_v2(defaults.base_config())
  assert c.model.proj_head_layers == 3
  assert c.augment.brightness == "multiplicative"
  assert c.optim.weight_decay == 1e-4
  assert (c.optim.base_learning_rate, c.optim.lr_scaling) == (0.1, "sqrt")
  assert c.finetune.head_layers == 1
  c.batch_size = 4096
  assert abs(_peak_lr(c) - 6.4) < 1e-9


def test_imagenet_configs_follow_their_preset():
  v1 = runpy.run_path(str(CONFIGS / "imagenet.py"))["get_config"]()
  v2 = runpy.run_path(str(CONFIGS / "imagenet_v2.py"))["get_config"]()
  assert (v1.model.depth, v1.batch_size, v1.loss.temperature) == (50, 4096, 0.1)
  assert v1.model.proj_head_layers == 2 and v2.model.proj_head_layers == 3
  assert abs(_peak_lr(v1) - 4.8) < 1e-9 and abs(_peak_lr(v2) - 6.4) < 1e-9
  steps = optim.total_steps(
    batch_size=v1.batch_size, num_examples=1281167, epochs=v1.epochs
  )
  assert steps == 31279


def test_defaults_are_the_v2_recipe():
  base = defaults.base_config()
  assert presets.simclr_v2(defaults.base_config()).to_dict() == base.to_dict()


def test_quickstart_and_cifar_keep_their_learning_rates():
  for name, lr in (("default.py", 1.0), ("cifar10.py", 2.0)):
    c = runpy.run_path(str(CONFIGS / name))["get_config"]()
    assert abs(_peak_lr(c) - lr) < 1e-9, name


def test_recipe_values():
  """The headline numbers of the CIFAR-10 README and ImageNet v1 recipes
  (tests/test_configs.py::test_recipe_constants_are_the_papers checks every
  recipe key of every config)."""
  cifar = runpy.run_path(str(CONFIGS / "cifar10.py"))["get_config"]()
  assert (cifar.model.depth, cifar.model.cifar_stem, cifar.batch_size) == (
    18,
    True,
    512,
  )
  assert (
    cifar.loss.temperature,
    cifar.augment.color_jitter_strength,
    cifar.augment.blur_prob,
    cifar.epochs,
  ) == (0.5, 0.5, 0.0, 1000)
  assert (cifar.optim.base_learning_rate, cifar.optim.lr_scaling) == (
    1.0,
    "linear",
  )
  assert (
    cifar.optim.weight_decay,
    cifar.model.proj_head_layers,
    cifar.optim.warmup_epochs,
  ) == (1e-4, 3, 10.0)
  assert (
    cifar.linear_eval.epochs,
    cifar.linear_eval.weight_decay,
    cifar.finetune.head_layers,
  ) == (100, 0.0, 0)
  imagenet = runpy.run_path(str(CONFIGS / "imagenet.py"))["get_config"]()
  assert (imagenet.optim.warmup_epochs, imagenet.epochs) == (10.0, 100)
  assert (
    imagenet.augment.color_jitter_strength,
    imagenet.augment.blur_prob,
  ) == (1.0, 0.5)
  assert (imagenet.model.cifar_stem, imagenet.data.image_size) == (False, 224)
