"""The ResNet encoder: reference parameter counts, stems, padding, blocks,
selective kernels, BatchNorm settings and global BN across devices.

Parameter counts are checked against the reference TF2 implementation with
jax.eval_shape (no compute); everything that runs uses ResNet-18 at width
0.25 on 32x32 inputs (the `small_model` fixture of conftest.py).
"""

import functools
import json
import pathlib

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from simclr_jax.models import ProjectionHead, ResNet
from simclr_jax.models import resnet as resnet_lib

# Golden values of the reference TF2 code, kept in the repository (the
# same file the `reference` fixture of conftest.py reads; parametrisation
# needs it at collection time).
REFERENCE_JSON = (
  pathlib.Path(__file__).resolve().parent
  / "data"
  / "reference"
  / "simclr_reference.json"
)


def _key(seed: int = 0) -> jax.Array:
  """RBG keys: jitted inits of whole ResNets compile several times faster."""
  return jax.random.key(seed, impl="rbg")


def _flat(tree):
  return flax.traverse_util.flatten_dict(flax.core.unfreeze(tree))


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _reference_counts():
  with open(REFERENCE_JSON) as f:
    return json.load(f)["resnet_param_counts"]


@pytest.mark.parametrize(
  "case",
  _reference_counts(),
  ids=lambda c: (
    c
    and (
      f"r{c['depth']}_w{c['width_multiplier']}_sk{c['sk_ratio']}"
      f"{'_cifar' if c['cifar_stem'] else ''}"
    )
  ),
)
def test_param_counts_match_reference(case):
  model = ResNet(
    depth=case["depth"],
    width_multiplier=case["width_multiplier"],
    sk_ratio=case["sk_ratio"],
    cifar_stem=case["cifar_stem"],
  )
  size = case["image_size"]
  shapes = jax.eval_shape(
    lambda: model.init(
      jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False
    )
  )
  assert _count(shapes["params"]) == case["trainable_params"]
  assert _count(shapes["batch_stats"]) == case["bn_moving_stats"]
  assert model.feature_dim == case["feature_dim"]
  out = jax.eval_shape(
    lambda v: model.apply(v, jnp.zeros((2, size, size, 3)), train=False), shapes
  )
  assert out.shape == (2, case["feature_dim"]) and out.dtype == jnp.float32


@pytest.mark.parametrize(
  "depth,width,expected",
  [
    (18, 1, 512),
    (34, 2, 1024),
    (50, 1, 2048),
    (200, 1, 2048),
    (50, 0.25, 512),
    (18, 0.25, 128),
  ],
)
def test_feature_dim(depth, width, expected):
  assert ResNet(depth=depth, width_multiplier=width).feature_dim == expected


def test_invalid_depth_names_valid_depths():
  with pytest.raises(ValueError, match="18, 34, 50, 101, 152, 200"):
    ResNet(depth=42)


@pytest.mark.parametrize(
  "cifar_stem,sk_ratio,size",
  [(True, 0.0, 32), (False, 0.0, 64), (False, 0.0625, 64), (False, 0.0, 33)],
)
def test_output_shapes(cifar_stem, sk_ratio, size):
  for depth in (18, 50):
    model = ResNet(
      depth=depth,
      width_multiplier=0.25,
      cifar_stem=cifar_stem,
      sk_ratio=sk_ratio,
    )
    x = jnp.zeros((3, size, size, 3))
    out = jax.eval_shape(
      lambda: model.init_with_output(jax.random.key(0), x, train=True)
    )[0]
    assert out.shape == (3, model.feature_dim)
    assert out.dtype == jnp.float32


def test_stem_spatial_sizes():
  """7x7/2 conv + 3x3/2 max-pool takes 224 to 56; the CIFAR stem keeps 32."""
  for cifar_stem, size, expected in (
    (False, 224, 56),
    (True, 32, 32),
    (False, 225, 57),
  ):
    model = ResNet(depth=18, width_multiplier=0.25, cifar_stem=cifar_stem)
    _, state = jax.eval_shape(
      lambda: model.init_with_output(
        jax.random.key(0),
        jnp.zeros((1, size, size, 3)),
        train=False,
        capture_intermediates=lambda mdl, _: mdl.name == "stage1_block1",
      )
    )
    (block1_out,) = state["intermediates"]["stage1_block1"]["__call__"]
    assert block1_out.shape == (1, expected, expected, 16)


@pytest.mark.parametrize("kernel,size", [(3, 32), (3, 33), (7, 225), (1, 33)])
def test_conv_fixed_padding_stride2(kernel, size):
  """Stride 2: pad (k-1)//2 before and the rest after, independent of size."""
  conv = resnet_lib.conv_fixed_padding(4, kernel, strides=2)
  before = (kernel - 1) // 2
  after = kernel - 1 - before

  @jax.jit
  def run(x):
    variables = conv.init(_key(), x)
    expected = jax.lax.conv_general_dilated(
      x,
      variables["params"]["kernel"],
      (2, 2),
      ((before, after), (before, after)),
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    return conv.apply(variables, x), expected

  y, expected = run(jax.random.normal(jax.random.key(2), (1, size, size, 3)))
  out_size = (size - 1) // 2 + 1  # == ceil(size / 2) for every kernel size
  assert y.shape == (1, out_size, out_size, 4)
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_conv_fixed_padding_stride1_is_same():
  assert resnet_lib.fixed_padding(3, 1) == "SAME"
  assert resnet_lib.fixed_padding(7, 2) == ((3, 3), (3, 3))
  assert resnet_lib.fixed_padding(2, 2) == ((0, 1), (0, 1))
  y = jax.eval_shape(
    lambda: resnet_lib.conv_fixed_padding(4, 3).init_with_output(
      jax.random.key(0), jnp.zeros((1, 33, 33, 3))
    )[0]
  )
  assert y.shape == (1, 33, 33, 4)


class _Shortcut(nn.Module):
  """projection_shortcut with an identity norm, so its output is checkable."""

  strides: int

  @nn.compact
  def __call__(self, x):
    identity_norm = lambda name: lambda y: y
    return resnet_lib.projection_shortcut(
      x, 4, self.strides, True, identity_norm, resnet_lib.conv_fixed_padding
    )


@pytest.mark.parametrize("strides", [1, 2])
def test_resnet_d_shortcut_average_pool(strides):
  """2x2 avg pool, 1x1 conv; stride 1 skips the padding, stride 2 counts it."""
  x = np.asarray(jax.random.normal(jax.random.key(7), (1, 5, 5, 3)))
  module = _Shortcut(strides)
  variables = module.init(_key(), x)
  y = module.apply(variables, x)
  padded = np.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
  valid = np.pad(np.ones_like(x), ((0, 0), (0, 1), (0, 1), (0, 0)))
  window_sum = sum(
    padded[:, i : i + 5, j : j + 5] for i in (0, 1) for j in (0, 1)
  )
  window_count = sum(
    valid[:, i : i + 5, j : j + 5] for i in (0, 1) for j in (0, 1)
  )
  if strides == 1:
    pooled = window_sum / window_count
  else:
    pooled = window_sum[:, ::2, ::2] / 4.0
  kernel = np.asarray(variables["params"]["shortcut_conv"]["kernel"])[0, 0]
  assert y.shape == (1, 5 if strides == 1 else 3, 5 if strides == 1 else 3, 4)
  np.testing.assert_allclose(y, pooled @ kernel, rtol=1e-5, atol=1e-5)


def test_conv_init_is_variance_scaling_fan_in():
  conv = resnet_lib.conv_fixed_padding(256, 3)
  kernel = conv.init(_key(), jnp.zeros((1, 8, 8, 64)))["params"]["kernel"]
  fan_in = 3 * 3 * 64
  assert abs(float(jnp.std(kernel)) * np.sqrt(fan_in) - 1.0) < 0.03
  # Truncated at 2 stddev of the underlying (un-corrected) normal.
  assert float(jnp.max(jnp.abs(kernel))) < 2.0 / 0.8796 / np.sqrt(fan_in) + 1e-6


def test_parameter_tree_layout_and_leaf_names(small_model):
  _, variables = small_model
  params, stats = variables["params"], variables["batch_stats"]
  assert set(params) == {"backbone", "projection_head", "head_supervised"}
  assert set(stats) == {"backbone", "projection_head"}
  bn_modules = {path[:-1] for path in _flat(stats)}
  assert all(path[-1] in ("mean", "var") for path in _flat(stats))
  for path, leaf in _flat(params).items():
    assert leaf.dtype == jnp.float32, path
    if path[:-1] in bn_modules:
      assert path[-1] in ("scale", "bias"), path
      assert leaf.ndim == 1, path
    else:
      assert path[-1] in ("kernel", "bias"), path
      expected_ndims = (1,) if path[-1] == "bias" else (2, 4)
      assert leaf.ndim in expected_ndims, path
  # Convs of the backbone are bias-free.
  backbone = _flat(params["backbone"])
  assert not [
    p
    for p in backbone
    if p[-1] == "bias"
    and p[:-1] not in {m[1:] for m in bn_modules if m[0] == "backbone"}
  ]


def test_last_bn_of_each_basic_block_starts_at_zero(small_model):
  params = small_model[1]["params"]["backbone"]
  blocks = [k for k in params if k.startswith("stage")]
  assert len(blocks) == sum(resnet_lib.STAGE_SIZES[18])
  for path, leaf in _flat(params).items():
    if path[-1] != "scale":
      continue
    if path[0].startswith("stage") and path[1] == "bn2":
      np.testing.assert_array_equal(leaf, 0.0)
    else:
      np.testing.assert_array_equal(leaf, 1.0)


@pytest.mark.parametrize("sk_ratio", [0.0, 0.0625])
def test_last_bn_of_bottleneck_starts_at_zero(sk_ratio):
  norm = functools.partial(nn.BatchNorm, use_running_average=True)
  block = resnet_lib.BottleneckBlock(
    filters=8, strides=2, use_projection=True, norm=norm, sk_ratio=sk_ratio
  )
  x = jnp.zeros((2, 8, 8, 16))
  params = jax.jit(lambda x: block.init(_key(), x))(x)["params"]
  expected_modules = {
    "conv1",
    "bn1",
    "conv3",
    "bn3",
    "shortcut_conv",
    "shortcut_bn",
  }
  expected_modules |= {"sk_conv"} if sk_ratio else {"conv2", "bn2"}
  assert set(params) == expected_modules
  for path, leaf in _flat(params).items():
    if path[-1] == "scale":
      np.testing.assert_array_equal(leaf, 0.0 if path[0] == "bn3" else 1.0)
  if sk_ratio:
    sk = params["sk_conv"]
    assert sk["conv"]["kernel"].shape == (3, 3, 8, 16)  # two 3x3 paths
    # The gate pools the sum of the two paths: 8 -> max(int(8 * r), 32).
    assert sk["reduce"]["kernel"].shape == (1, 1, 8, 32)
    assert sk["expand"]["kernel"].shape == (1, 1, 32, 16)


def test_squeeze_excitation_params():
  model = ResNet(
    depth=18, width_multiplier=0.25, se_ratio=0.25, cifar_stem=True
  )
  shapes = jax.eval_shape(
    lambda: model.init(
      jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False
    )
  )["params"]
  se = shapes["stage2_block1"]["se"]  # filters 32 -> squeeze 8
  assert se["reduce"]["kernel"].shape == (1, 1, 32, 8)
  assert se["reduce"]["bias"].shape == (8,)
  assert se["expand"]["kernel"].shape == (1, 1, 8, 32)
  plain = ResNet(depth=18, width_multiplier=0.25, cifar_stem=True)
  plain_shapes = jax.eval_shape(
    lambda: plain.init(
      jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False
    )
  )["params"]
  per_stage = [int(64 * 0.25 * 2**s) for s in range(4)]
  extra = sum(2 * (2 * f * (f // 4) + f // 4 + f) for f in per_stage)
  assert _count(shapes) - _count(plain_shapes) == extra


def test_global_bn_across_devices_matches_full_batch():
  """bn_axis_name under shard_map gives the same result as one big batch."""
  n = jax.device_count()
  mesh = jax.make_mesh((n,), ("data",))
  x = jax.random.normal(jax.random.key(6), (2 * n, 32))
  local = ProjectionHead(num_layers=3, out_dim=8)
  synced = ProjectionHead(num_layers=3, out_dim=8, bn_axis_name="data")
  variables = local.init(jax.random.key(0), x, train=False)

  def apply(model, v, xs):
    return model.apply(v, xs, train=True, mutable=["batch_stats"])

  want_z, want_state = apply(local, variables, x)
  x = jax.device_put(x, NamedSharding(mesh, P("data")))
  sharded = jax.jit(
    jax.shard_map(
      lambda v, xs: apply(synced, v, xs),
      mesh=mesh,
      in_specs=(P(), P("data")),
      out_specs=(P("data"), P()),
    )
  )
  got_z, got_state = sharded(variables, x)
  np.testing.assert_allclose(got_z, want_z, rtol=1e-4, atol=1e-5)
  for got, want in zip(jax.tree.leaves(got_state), jax.tree.leaves(want_state)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  # The ResNet forwards the axis name to every BN (traces under shard_map).
  backbone = ResNet(
    depth=18, width_multiplier=0.125, cifar_stem=True, bn_axis_name="data"
  )
  model_images = jax.device_put(
    jnp.zeros((n, 8, 8, 3)), NamedSharding(mesh, P("data"))
  )
  bb_vars = jax.eval_shape(
    lambda: backbone.init(jax.random.key(0), model_images, train=False)
  )
  jaxpr = str(
    jax.make_jaxpr(
      jax.shard_map(
        lambda v, xs: backbone.apply(
          v, xs, train=True, mutable=["batch_stats"]
        ),
        mesh=mesh,
        in_specs=(P(), P("data")),
        out_specs=(P("data"), P()),
      )
    )(bb_vars, model_images)
  )
  num_bn = len({path[:-1] for path in _flat(bb_vars["batch_stats"])})
  assert num_bn == 21  # stem + 2 per block + 4 projection shortcuts
  assert jaxpr.count("psum") >= num_bn


def test_bottleneck_stride_sits_on_the_3x3_conv():
  """ResNet v1.5: the 1x1 conv keeps the size, the 3x3 conv downsamples."""
  model = ResNet(depth=50, width_multiplier=0.125)
  x = jnp.zeros((1, 64, 64, 3))
  variables = jax.eval_shape(
    lambda: model.init(jax.random.key(0, impl="rbg"), x, train=False)
  )
  _, state = jax.eval_shape(
    lambda v: model.apply(
      v, x, train=False, capture_intermediates=True, mutable=["intermediates"]
    ),
    variables,
  )
  block = state["intermediates"]["stage2_block1"]
  conv1 = block["conv1"]["__call__"][0].shape
  conv2 = block["conv2"]["__call__"][0].shape
  assert conv1[1:3] == (16, 16)  # stage-1 resolution (64 / 4)
  assert conv2[1:3] == (8, 8)  # halved by the 3x3 conv


def test_batch_norm_settings_are_the_reference():
  for module in (ResNet(), ProjectionHead()):
    assert module.bn_momentum == 0.9 and module.bn_epsilon == 1e-5
