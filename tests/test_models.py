"""Tests for simclr_jax.models: ResNet encoder, heads and the SimCLR model.

Parameter counts are checked against the reference TF2 implementation with
jax.eval_shape (no compute); everything that runs uses ResNet-18 at width
0.25 on 32x32 inputs.
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

from simclr_jax.models import ProjectionHead, ResNet, SimCLRModel
from simclr_jax.models import resnet as resnet_lib

# The project's shared/ folder sits beside the checkout (../shared).
REFERENCE_JSON = (pathlib.Path(__file__).resolve().parents[2] / "shared" /
                  "reference" / "simclr_reference.json")

BATCH = 4
NUM_CLASSES = 10


def _key(seed: int = 0) -> jax.Array:
  """RBG keys: jitted inits of whole ResNets compile several times faster."""
  return jax.random.key(seed, impl="rbg")


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _flat(tree):
  return flax.traverse_util.flatten_dict(flax.core.unfreeze(tree))


def _small_model(dtype=jnp.float32, num_layers=2) -> SimCLRModel:
  return SimCLRModel(
      backbone=ResNet(depth=18, width_multiplier=0.25, cifar_stem=True,
                      dtype=dtype),
      projection_head=ProjectionHead(num_layers=num_layers, out_dim=16,
                                     dtype=dtype),
      num_classes=NUM_CLASSES)


@pytest.fixture(scope="module")
def images():
  return jax.random.uniform(jax.random.key(1), (BATCH, 32, 32, 3))


@pytest.fixture(scope="module")
def small(images):
  model = _small_model()
  variables = jax.jit(lambda x: model.init(_key(), x, train=False))(images)
  return model, variables


def _reference_counts():
  if not REFERENCE_JSON.exists():
    return [pytest.param(None, marks=pytest.mark.skip(
        reason=f"reference JSON not found at {REFERENCE_JSON}"))]
  with open(REFERENCE_JSON) as f:
    return json.load(f)["resnet_param_counts"]


@pytest.mark.parametrize(
    "case", _reference_counts(),
    ids=lambda c: c and (
        f"r{c['depth']}_w{c['width_multiplier']}_sk{c['sk_ratio']}"
        f"{'_cifar' if c['cifar_stem'] else ''}"))
def test_param_counts_match_reference(case):
  model = ResNet(depth=case["depth"], width_multiplier=case["width_multiplier"],
                 sk_ratio=case["sk_ratio"], cifar_stem=case["cifar_stem"])
  size = case["image_size"]
  shapes = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)),
                         train=False))
  assert _count(shapes["params"]) == case["trainable_params"]
  assert _count(shapes["batch_stats"]) == case["bn_moving_stats"]
  assert model.feature_dim == case["feature_dim"]
  out = jax.eval_shape(
      lambda v: model.apply(v, jnp.zeros((2, size, size, 3)), train=False),
      shapes)
  assert out.shape == (2, case["feature_dim"]) and out.dtype == jnp.float32


@pytest.mark.parametrize("depth,width,expected", [
    (18, 1, 512), (34, 2, 1024), (50, 1, 2048), (200, 1, 2048),
    (50, 0.25, 512), (18, 0.25, 128)])
def test_feature_dim(depth, width, expected):
  assert ResNet(depth=depth, width_multiplier=width).feature_dim == expected


def test_invalid_depth_names_valid_depths():
  with pytest.raises(ValueError, match="18, 34, 50, 101, 152, 200"):
    ResNet(depth=42)


@pytest.mark.parametrize("cifar_stem,sk_ratio,size", [
    (True, 0.0, 32), (False, 0.0, 64), (False, 0.0625, 64), (False, 0.0, 33)])
def test_output_shapes(cifar_stem, sk_ratio, size):
  for depth in (18, 50):
    model = ResNet(depth=depth, width_multiplier=0.25, cifar_stem=cifar_stem,
                   sk_ratio=sk_ratio)
    x = jnp.zeros((3, size, size, 3))
    out = jax.eval_shape(
        lambda: model.init_with_output(jax.random.key(0), x, train=True))[0]
    assert out.shape == (3, model.feature_dim)
    assert out.dtype == jnp.float32


def test_stem_spatial_sizes():
  """7x7/2 conv + 3x3/2 max-pool takes 224 to 56; the CIFAR stem keeps 32."""
  for cifar_stem, size, expected in ((False, 224, 56), (True, 32, 32),
                                     (False, 225, 57)):
    model = ResNet(depth=18, width_multiplier=0.25, cifar_stem=cifar_stem)
    _, state = jax.eval_shape(
        lambda: model.init_with_output(
            jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False,
            capture_intermediates=lambda mdl, _: mdl.name == "stage1_block1"))
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
        x, variables["params"]["kernel"], (2, 2),
        ((before, after), (before, after)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
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
          jax.random.key(0), jnp.zeros((1, 33, 33, 3)))[0])
  assert y.shape == (1, 33, 33, 4)


class _Shortcut(nn.Module):
  """projection_shortcut with an identity norm, so its output is checkable."""
  strides: int

  @nn.compact
  def __call__(self, x):
    identity_norm = lambda name: (lambda y: y)
    return resnet_lib.projection_shortcut(x, 4, self.strides, True,
                                          identity_norm, jnp.float32)


@pytest.mark.parametrize("strides", [1, 2])
def test_resnet_d_shortcut_average_pool(strides):
  """2x2 avg pool, 1x1 conv; stride 1 skips the padding, stride 2 counts it."""
  x = np.asarray(jax.random.normal(jax.random.key(7), (1, 5, 5, 3)))
  module = _Shortcut(strides)
  variables = module.init(_key(), x)
  y = module.apply(variables, x)
  padded = np.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
  valid = np.pad(np.ones_like(x), ((0, 0), (0, 1), (0, 1), (0, 0)))
  window_sum = sum(padded[:, i:i + 5, j:j + 5] for i in (0, 1) for j in (0, 1))
  window_count = sum(valid[:, i:i + 5, j:j + 5] for i in (0, 1) for j in (0, 1))
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


def test_parameter_tree_layout_and_leaf_names(small):
  _, variables = small
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
  assert not [p for p in backbone if p[-1] == "bias" and p[:-1] not in
              {m[1:] for m in bn_modules if m[0] == "backbone"}]


def test_last_bn_of_each_basic_block_starts_at_zero(small):
  params = small[1]["params"]["backbone"]
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
  block = resnet_lib.BottleneckBlock(filters=8, strides=2, use_projection=True,
                                     norm=norm, sk_ratio=sk_ratio)
  x = jnp.zeros((2, 8, 8, 16))
  params = jax.jit(lambda x: block.init(_key(), x))(x)["params"]
  expected_modules = {"conv1", "bn1", "conv3", "bn3", "shortcut_conv",
                      "shortcut_bn"}
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


@pytest.mark.parametrize("num_layers", [2, 3])
def test_projection_head_structure(num_layers):
  head = ProjectionHead(num_layers=num_layers, out_dim=128)
  x = jax.random.normal(jax.random.key(3), (8, 512))
  variables = jax.jit(lambda x: head.init(_key(), x, train=False))(x)
  params = variables["params"]
  assert sorted(params) == sorted(
      [f"dense_{j}" for j in range(num_layers)] +
      [f"bn_{j}" for j in range(num_layers)])
  for j in range(num_layers):
    out = 128 if j == num_layers - 1 else 512
    assert set(params[f"dense_{j}"]) == {"kernel"}
    assert params[f"dense_{j}"]["kernel"].shape == (512, out)
    expected_bn = {"scale"} if j == num_layers - 1 else {"scale", "bias"}
    assert set(params[f"bn_{j}"]) == expected_bn
  assert abs(float(jnp.std(params["dense_0"]["kernel"])) - 0.01) < 5e-4

  (z, hiddens), state = jax.jit(lambda v, x: head.apply(
      v, x, train=True, return_hiddens=True, mutable=["batch_stats"]))(
          variables, x)
  # Flax momentum convention: ra = 0.9 * ra + 0.1 * batch statistic.
  pre_bn = x @ params["dense_0"]["kernel"]
  stats = state["batch_stats"]["bn_0"]
  np.testing.assert_allclose(stats["mean"], 0.1 * pre_bn.mean(0), atol=1e-6)
  np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * pre_bn.var(0),
                             rtol=1e-4)
  assert z.shape == (8, 128) and z.dtype == jnp.float32
  assert len(hiddens) == num_layers
  assert hiddens[0].shape == (8, 512)
  assert float(jnp.min(hiddens[0])) >= 0.0  # middle layers end in ReLU
  assert float(jnp.min(z)) < 0.0  # the last one does not
  np.testing.assert_array_equal(hiddens[-1], z)


def test_forward_outputs(small, images):
  model, variables = small
  out = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images)
  assert set(out) == {"representation", "projection", "logits"}
  assert out["representation"].shape == (BATCH, 128)
  assert out["projection"].shape == (BATCH, 16)
  assert out["logits"].shape == (BATCH, NUM_CLASSES)
  for value in out.values():
    assert value.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(value)))


def test_no_supervised_head_when_num_classes_is_zero(images):
  model = SimCLRModel(ResNet(depth=18, width_multiplier=0.25, cifar_stem=True),
                      ProjectionHead(), num_classes=0)
  out, variables = jax.eval_shape(
      lambda: model.init_with_output(jax.random.key(0), images, train=False))
  assert "logits" not in out
  assert set(variables["params"]) == {"backbone", "projection_head"}


def test_supervised_head_does_not_reach_backbone(small, images):
  model, variables = small
  class_weights = jax.random.normal(jax.random.key(5), (BATCH, NUM_CLASSES))

  def supervised_loss(params):
    out, _ = model.apply({**variables, "params": params}, images, train=True,
                         mutable=["batch_stats"])
    return jnp.sum(out["logits"] * class_weights), out["representation"]

  grads, representation = jax.jit(jax.grad(supervised_loss, has_aux=True))(
      variables["params"])
  for leaf in jax.tree.leaves(grads["backbone"]):
    np.testing.assert_array_equal(leaf, 0.0)
  for leaf in jax.tree.leaves(grads["projection_head"]):
    np.testing.assert_array_equal(leaf, 0.0)
  # The head is a plain Dense on the representation: dL/dW = h^T dL/dlogits.
  head = grads["head_supervised"]["linear"]
  np.testing.assert_allclose(head["kernel"], representation.T @ class_weights,
                             rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(head["bias"], class_weights.sum(0), rtol=1e-5)
  assert float(jnp.abs(head["kernel"]).sum()) > 0


def test_batch_stats_update_only_in_training(small, images):
  model, variables = small

  @jax.jit
  def run(v, x):
    _, train_state = model.apply(v, x, train=True, mutable=["batch_stats"])
    _, eval_state = model.apply(v, x, train=False, mutable=["batch_stats"])
    return train_state["batch_stats"], eval_state["batch_stats"]

  trained, evaluated = run(variables, images)
  old = _flat(variables["batch_stats"])
  new = _flat(trained)
  for path, leaf in _flat(evaluated).items():
    np.testing.assert_array_equal(leaf, old[path])
  changed = [p for p in new if not np.array_equal(new[p], old[p])]
  assert len(changed) == len(new)


def test_bfloat16_compute_float32_params_and_outputs(small, images):
  model = _small_model(dtype=jnp.bfloat16)
  shapes = jax.eval_shape(lambda: model.init(_key(), images, train=False))
  for leaf in jax.tree.leaves(shapes):
    assert leaf.dtype == jnp.float32
  # Params do not depend on the compute dtype, so reuse the f32 ones.
  variables = small[1]
  out, state = jax.jit(
      lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(
          variables, images)
  for value in out.values():
    assert value.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(value)))
  for leaf in jax.tree.leaves(state):
    assert leaf.dtype == jnp.float32
  jaxpr = str(jax.make_jaxpr(lambda x: model.apply(variables, x,
                                                   train=False))(images))
  conv_lines = [l for l in jaxpr.splitlines() if "conv_general_dilated" in l]
  dot_lines = [l for l in jaxpr.splitlines() if "dot_general" in l]
  assert conv_lines and all("bf16" in l for l in conv_lines)
  # Projection head dense layers run in bf16; the linear-eval head in f32.
  assert sum("bf16" in l for l in dot_lines) == 2
  assert len(dot_lines) == 3


def test_squeeze_excitation_params():
  model = ResNet(depth=18, width_multiplier=0.25, se_ratio=0.25,
                 cifar_stem=True)
  shapes = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)),
                         train=False))["params"]
  se = shapes["stage2_block1"]["se"]  # filters 32 -> squeeze 8
  assert se["reduce"]["kernel"].shape == (1, 1, 32, 8)
  assert se["reduce"]["bias"].shape == (8,)
  assert se["expand"]["kernel"].shape == (1, 1, 8, 32)
  plain = ResNet(depth=18, width_multiplier=0.25, cifar_stem=True)
  plain_shapes = jax.eval_shape(
      lambda: plain.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)),
                         train=False))["params"]
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
  sharded = jax.jit(jax.shard_map(
      lambda v, xs: apply(synced, v, xs), mesh=mesh,
      in_specs=(P(), P("data")), out_specs=(P("data"), P())))
  got_z, got_state = sharded(variables, x)
  np.testing.assert_allclose(got_z, want_z, rtol=1e-4, atol=1e-5)
  for got, want in zip(jax.tree.leaves(got_state), jax.tree.leaves(want_state)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  # The ResNet forwards the axis name to every BN (traces under shard_map).
  backbone = ResNet(depth=18, width_multiplier=0.125, cifar_stem=True,
                    bn_axis_name="data")
  images = jax.device_put(jnp.zeros((n, 8, 8, 3)),
                          NamedSharding(mesh, P("data")))
  bb_vars = jax.eval_shape(
      lambda: backbone.init(jax.random.key(0), images, train=False))
  jaxpr = str(jax.make_jaxpr(jax.shard_map(
      lambda v, xs: backbone.apply(v, xs, train=True, mutable=["batch_stats"]),
      mesh=mesh, in_specs=(P(), P("data")), out_specs=(P("data"), P())))(
          bb_vars, images))
  num_bn = len({path[:-1] for path in _flat(bb_vars["batch_stats"])})
  assert num_bn == 21  # stem + 2 per block + 4 projection shortcuts
  assert jaxpr.count("psum") >= num_bn


def test_bottleneck_stride_sits_on_the_3x3_conv():
  """ResNet v1.5: the 1x1 conv keeps the size, the 3x3 conv downsamples."""
  model = ResNet(depth=50, width_multiplier=0.125)
  x = jnp.zeros((1, 64, 64, 3))
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0, impl="rbg"), x, train=False))
  _, state = jax.eval_shape(
      lambda v: model.apply(v, x, train=False, capture_intermediates=True,
                            mutable=["intermediates"]), variables)
  block = state["intermediates"]["stage2_block1"]
  conv1 = block["conv1"]["__call__"][0].shape
  conv2 = block["conv2"]["__call__"][0].shape
  assert conv1[1:3] == (16, 16)     # stage-1 resolution (64 / 4)
  assert conv2[1:3] == (8, 8)       # halved by the 3x3 conv


def test_batch_norm_settings_are_the_reference():
  for module in (ResNet(), ProjectionHead()):
    assert module.bn_momentum == 0.9 and module.bn_epsilon == 1e-5


# ------------------------------------------------------------ fine-tuning ---

from simclr_jax.errors import UserError  # noqa: E402
from simclr_jax.models import finetune_model  # noqa: E402
from simclr_jax.models import init_from_pretrained  # noqa: E402


def _perturbed(variables, images, model):
  """'Pretrained' variables: noisy params and non-trivial BN statistics."""
  _, state = jax.jit(lambda v, x: model.apply(
      v, x, train=True, mutable=["batch_stats"]))(variables, images)
  leaves, treedef = jax.tree.flatten(variables["params"])
  keys = jax.random.split(jax.random.key(9), len(leaves))
  noisy = [x + 0.05 * jax.random.normal(k, x.shape) for k, x in
           zip(keys, leaves)]
  return {"params": jax.tree.unflatten(treedef, noisy),
          "batch_stats": state["batch_stats"]}


@pytest.fixture(scope="module")
def pretrained_v2(images):
  model = _small_model(num_layers=3)
  variables = jax.jit(lambda x: model.init(_key(), x, train=False))(images)
  return model, _perturbed(variables, images, model)


def _finetune_variables(pretrained, images, head_layers):
  model, variables = pretrained
  ft = finetune_model(model, num_classes=7, head_layers=head_layers)
  fresh = jax.jit(lambda x: ft.init(_key(3), x, train=False))(images)
  return ft, fresh, init_from_pretrained(fresh, variables)


@pytest.mark.parametrize("head_layers", [0, 1, 2])
def test_finetune_head_layers_representation(pretrained_v2, images,
                                             head_layers):
  """head_layers=0: backbone output; k: the pretrained head's hidden k-1."""
  model, variables = pretrained_v2
  ft, _, ft_vars = _finetune_variables(pretrained_v2, images, head_layers)

  @jax.jit
  def both(pv, fv, x):
    rep = model.apply(pv, x, train=False)["representation"]
    _, hiddens = model.projection_head.apply(
        {c: pv[c]["projection_head"] for c in pv}, rep, train=False,
        return_hiddens=True)
    return rep, hiddens, ft.apply(fv, x, train=False)

  rep, hiddens, out = both(variables, ft_vars, images)
  want = hiddens[head_layers - 1] if head_layers else rep
  np.testing.assert_allclose(out["representation"], want, rtol=1e-5,
                             atol=1e-6)
  assert out["logits"].shape == (BATCH, 7)
  head = _flat(ft_vars["params"]).keys()
  layers = {p[1] for p in head if p[0] == "projection_head"}
  assert layers == ({f"dense_{j}" for j in range(head_layers)}
                    | {f"bn_{j}" for j in range(head_layers)})


def test_init_from_pretrained_copies_exactly(pretrained_v2, images):
  _, variables = pretrained_v2
  _, fresh, ft_vars = _finetune_variables(pretrained_v2, images, 1)
  for collection in ("params", "batch_stats"):
    got, src, init = (_flat(v[collection]) for v in (ft_vars, variables,
                                                     fresh))
    assert got.keys() == init.keys()
    for path, leaf in got.items():
      if path[0] == "head_supervised":
        np.testing.assert_array_equal(leaf, init[path])  # fresh classifier
      else:
        np.testing.assert_array_equal(leaf, src[path])
  copied = [p for p in _flat(ft_vars["params"]) if p[0] == "projection_head"]
  assert sorted(copied) == [("projection_head", "bn_0", "bias"),
                            ("projection_head", "bn_0", "scale"),
                            ("projection_head", "dense_0", "kernel")]
  # The supervised head is trained fully: gradients reach the backbone.
  ft = finetune_model(pretrained_v2[0], num_classes=7, head_layers=1)
  grads = jax.grad(lambda p: ft.apply({**ft_vars, "params": p}, images,
                                      train=False)["logits"].sum())(
                                          ft_vars["params"])
  assert float(jnp.abs(grads["backbone"]["stem_conv"]["kernel"]).sum()) > 0


def test_init_from_pretrained_names_mismatches(pretrained_v2, images):
  _, variables = pretrained_v2
  wider = SimCLRModel(
      backbone=ResNet(depth=18, width_multiplier=0.5, cifar_stem=True),
      projection_head=ProjectionHead(num_layers=3, out_dim=16),
      num_classes=0)
  ft = finetune_model(wider, num_classes=3, head_layers=1)
  fresh = jax.eval_shape(lambda: ft.init(_key(), images, train=False))
  with pytest.raises(UserError, match=r"shapes differ \(pretrained vs "
                     r"fine-tuning\): params/backbone/\S+ \([\d, ]*16,?\) vs "
                     r"\([\d, ]*32,?\), .* and \d+ more\); build"):
    init_from_pretrained(fresh, variables)
  deeper = SimCLRModel(
      backbone=ResNet(depth=34, width_multiplier=0.25, cifar_stem=True),
      projection_head=ProjectionHead(num_layers=3), num_classes=0)
  fresh = jax.eval_shape(lambda: finetune_model(
      deeper, num_classes=3, head_layers=0).init(_key(), images, train=False))
  with pytest.raises(UserError, match="missing in the pretrained weights: "
                     "params/backbone/stage1_block3"):
    init_from_pretrained(fresh, variables)
  with pytest.raises(UserError, match="no 'params/backbone'"):
    init_from_pretrained(fresh, {})
  with pytest.raises(UserError, match=r"head_layers=4 must be in \[0, 3\]"):
    finetune_model(pretrained_v2[0], num_classes=3, head_layers=4)
