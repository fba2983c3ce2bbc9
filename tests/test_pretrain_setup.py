"""Model and optimiser builders from their config sections."""

import jax
import jax.numpy as jnp
import numpy as np

from simclr_jax import defaults
from simclr_jax.pretrain import setup as ts


def _head_update(decay_supervised_head: bool):
  c = defaults.base_config()
  c.optim.decay_supervised_head = decay_supervised_head
  params = {
    "backbone": {"conv": {"kernel": jnp.ones((3, 3, 3, 4))}},
    "head_supervised": {
      "linear": {"kernel": jnp.ones((4, 2)), "bias": jnp.ones((2,))}
    },
  }
  tx = ts.create_optimizer(c.optim, lambda step: 1.0, params)
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  return updates


def test_online_head_not_decayed_by_default():
  u = _head_update(False)
  assert float(jnp.abs(u["head_supervised"]["linear"]["kernel"]).max()) == 0
  # Backbone kernels are decayed (zero gradient still moves them).
  assert float(jnp.abs(u["backbone"]["conv"]["kernel"]).max()) > 0


def test_reference_option_decays_online_head_kernel_only():
  u = _head_update(True)
  wd = defaults.base_config().optim.weight_decay
  np.testing.assert_allclose(
    u["head_supervised"]["linear"]["kernel"], -wd * np.ones((4, 2)), rtol=1e-6
  )
  assert float(jnp.abs(u["head_supervised"]["linear"]["bias"]).max()) == 0


def test_create_model_half_precision_dtype():
  c = defaults.base_config()
  c.model.half_precision = True
  model = ts.create_model(c.model, num_classes=3)
  assert model.backbone.dtype == jnp.bfloat16
  assert model.num_classes == 3


def test_default_config_builds_reference_batch_norm():
  """The default config (and so every recipe) gives every BatchNorm of the
  model decay 0.9 and epsilon 1e-5: a running mean after one training pass
  from zero is exactly 0.1 x the batch mean."""
  c = defaults.base_config()
  assert (c.model.bn_momentum, c.model.bn_epsilon) == (0.9, 1e-5)
  c.model.depth, c.model.width_multiplier = 18, 0.125
  c.model.cifar_stem = True
  model = ts.create_model(c.model, num_classes=3)
  for module in (model.backbone, model.projection_head):
    assert (module.bn_momentum, module.bn_epsilon) == (0.9, 1e-5)
  x = jax.random.uniform(jax.random.key(0), (4, 8, 8, 3))
  variables = jax.jit(
    lambda x: model.init(jax.random.key(1, impl="rbg"), x, train=False)
  )(x)
  out, state = jax.jit(
    lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"])
  )(variables, x)
  head = variables["params"]["projection_head"]
  pre_bn = out["representation"] @ head["dense_0"]["kernel"]
  np.testing.assert_allclose(
    state["batch_stats"]["projection_head"]["bn_0"]["mean"],
    0.1 * pre_bn.mean(0),
    atol=1e-6,
  )
