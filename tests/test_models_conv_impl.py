"""The CPU convolution formulation equals XLA's, and is chosen only on CPUs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from simclr_jax import models
from simclr_jax.models import conv_impl

DN = ("NHWC", "HWIO", "NHWC")


@pytest.mark.parametrize(
  "size,kernel,strides,padding",
  [
    (5, 3, 1, "SAME"),
    (4, 3, 1, "SAME"),
    (7, 3, 2, ((1, 1), (1, 1))),
    (8, 1, 2, "VALID"),
    (9, 7, 2, ((3, 3), (3, 3))),
    (2, 3, 1, "SAME"),
  ],
)
def test_patches_conv_equals_lax(size, kernel, strides, padding):
  kx, kw = jax.random.split(jax.random.key(0))
  x = jax.random.normal(kx, (3, size, size, 5))
  w = jax.random.normal(kw, (kernel, kernel, 5, 6))
  want = lax.conv_general_dilated(
    x, w, (strides, strides), padding, dimension_numbers=DN
  )
  got = conv_impl.patches_conv(x, w, (strides, strides), padding)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_resolve_picks_the_cpu_path_only_on_cpu():
  assert conv_impl.resolve("auto", "cpu") == "patches_small"
  assert conv_impl.resolve("auto", "gpu") == "xla"
  assert conv_impl.resolve("auto", "tpu") == "xla"
  assert conv_impl.resolve("patches", "tpu") == "patches"
  with pytest.raises(ValueError, match="conv_impl"):
    conv_impl.resolve("fast", "cpu")


def _model(impl, **kw):
  return models.ResNet(
    depth=18, width_multiplier=0.125, cifar_stem=True, conv_impl=impl, **kw
  )


def _loss_and_grads(impl, x, variables):
  model = _model(impl)

  def loss(params, x):
    out, _ = model.apply(
      {"params": params, "batch_stats": variables["batch_stats"]},
      x,
      train=True,
      mutable=["batch_stats"],
    )
    return jnp.sum(out * jnp.linspace(-1.0, 1.0, out.shape[-1]))

  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(
    variables["params"], x
  )


@pytest.mark.parametrize("impl", ["patches_small", "patches"])
def test_resnet_gradients_equal_the_xla_path(impl):
  """Same parameters, same loss, same parameter and input gradients."""
  x = jax.random.uniform(jax.random.key(1), (8, 16, 16, 3))
  variables = _model("xla").init(jax.random.key(2), x, train=False)
  assert jax.tree.structure(
    _model(impl).init(jax.random.key(2), x, train=False)
  ) == jax.tree.structure(variables)
  (want_loss, want), (got_loss, got) = (
    _loss_and_grads(i, x, variables) for i in ("xla", impl)
  )
  np.testing.assert_allclose(got_loss, want_loss, rtol=1e-4, atol=1e-4)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    scale = float(jnp.max(jnp.abs(b))) + 1e-6
    np.testing.assert_allclose(a / scale, b / scale, atol=2e-5)


def _conv_count(impl, size):
  x = jnp.zeros((2, size, size, 3))
  model = _model(impl)
  variables = jax.eval_shape(
    lambda: model.init(jax.random.key(0), x, train=False)
  )
  jaxpr = jax.make_jaxpr(lambda v: model.apply(v, x, train=False))(variables)
  return str(jaxpr).count("conv_general_dilated")


def test_patches_small_replaces_only_small_maps():
  """The CIFAR-stem ResNet-18 has 21 convs (stem, 16 in blocks, 4
  shortcuts). At 16 px its stages see 16, 8, 4 and 2 pixels a side: all but
  the stem and the first stage (4 + shortcut) have maps of <= 64 pixels and
  leave XLA's conv; at 32 px the second stage (16x16) stays with XLA too."""
  assert conv_impl.SMALL_OUTPUT_PIXELS == 64
  assert _conv_count("xla", 16) == 21
  assert _conv_count("patches_small", 16) == 6
  assert _conv_count("patches_small", 32) == 11
  assert _conv_count("patches", 16) == 0


def test_create_model_resolves_auto_for_the_backend():
  from simclr_jax import defaults
  from simclr_jax.pretrain import setup

  config = defaults.base_config()
  assert config.model.conv_impl == "auto"
  model = setup.create_model(config.model, 10)
  assert model.backbone.conv_impl == conv_impl.resolve(
    "auto", jax.default_backend()
  )
  assert conv_impl.resolve("auto", "gpu") == "xla"
  assert conv_impl.resolve("auto", "tpu") == "xla"
  config.model.conv_impl = "xla"
  assert setup.create_model(config.model, 10).backbone.conv_impl == "xla"


def test_remat_keeps_gradients_and_recomputes_blocks():
  x = jax.random.uniform(jax.random.key(3), (4, 8, 8, 3))
  plain, remat = _model("xla"), _model("xla", remat=True)
  variables = plain.init(jax.random.key(4), x, train=False)

  def grads(model):
    def loss(params):
      out, _ = model.apply(
        {"params": params, "batch_stats": variables["batch_stats"]},
        x,
        train=True,
        mutable=["batch_stats"],
      )
      return jnp.sum(out**2)

    return jax.grad(loss), loss

  for a, b in zip(
    jax.tree.leaves(grads(remat)[0](variables["params"])),
    jax.tree.leaves(grads(plain)[0](variables["params"])),
  ):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  jaxpr = str(jax.make_jaxpr(grads(remat)[0])(variables["params"]))
  assert jaxpr.count("remat") + jaxpr.count("checkpoint") >= 8
  plain_jaxpr = str(jax.make_jaxpr(grads(plain)[0])(variables["params"]))
  assert "remat" not in plain_jaxpr and "checkpoint" not in plain_jaxpr
