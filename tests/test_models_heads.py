"""Projection head, online supervised head, the SimCLR model's outputs and
fine-tuning networks built from a pretrained one.

Everything runs ResNet-18 at width 0.25 on 32x32 inputs (the `small_model`
and `model_images` fixtures of conftest.py).
"""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simclr_jax.errors import UserError
from simclr_jax.models import ProjectionHead, ResNet, SimCLRModel
from simclr_jax.models import finetune_model, init_from_pretrained

BATCH = 4  # rows of the model_images fixture
NUM_CLASSES = 10  # online head of the small_model fixture


def _key(seed: int = 0) -> jax.Array:
  """RBG keys: jitted inits of whole ResNets compile several times faster."""
  return jax.random.key(seed, impl="rbg")


def _flat(tree):
  return flax.traverse_util.flatten_dict(flax.core.unfreeze(tree))


@pytest.mark.parametrize("num_layers", [2, 3])
def test_projection_head_structure(num_layers):
  head = ProjectionHead(num_layers=num_layers, out_dim=128)
  x = jax.random.normal(jax.random.key(3), (8, 512))
  variables = jax.jit(lambda x: head.init(_key(), x, train=False))(x)
  params = variables["params"]
  assert sorted(params) == sorted(
    [f"dense_{j}" for j in range(num_layers)]
    + [f"bn_{j}" for j in range(num_layers)]
  )
  for j in range(num_layers):
    out = 128 if j == num_layers - 1 else 512
    assert set(params[f"dense_{j}"]) == {"kernel"}
    assert params[f"dense_{j}"]["kernel"].shape == (512, out)
    expected_bn = {"scale"} if j == num_layers - 1 else {"scale", "bias"}
    assert set(params[f"bn_{j}"]) == expected_bn
  assert abs(float(jnp.std(params["dense_0"]["kernel"])) - 0.01) < 5e-4

  (z, hiddens), state = jax.jit(
    lambda v, x: head.apply(
      v, x, train=True, return_hiddens=True, mutable=["batch_stats"]
    )
  )(variables, x)
  # Flax momentum convention: ra = 0.9 * ra + 0.1 * batch statistic.
  pre_bn = x @ params["dense_0"]["kernel"]
  stats = state["batch_stats"]["bn_0"]
  np.testing.assert_allclose(stats["mean"], 0.1 * pre_bn.mean(0), atol=1e-6)
  np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * pre_bn.var(0), rtol=1e-4)
  assert z.shape == (8, 128) and z.dtype == jnp.float32
  assert len(hiddens) == num_layers
  assert hiddens[0].shape == (8, 512)
  assert float(jnp.min(hiddens[0])) >= 0.0  # middle layers end in ReLU
  assert float(jnp.min(z)) < 0.0  # the last one does not
  np.testing.assert_array_equal(hiddens[-1], z)


def test_forward_outputs(small_model, model_images):
  model, variables = small_model
  out = jax.jit(lambda v, x: model.apply(v, x, train=False))(
    variables, model_images
  )
  assert set(out) == {"representation", "projection", "logits"}
  assert out["representation"].shape == (BATCH, 128)
  assert out["projection"].shape == (BATCH, 16)
  assert out["logits"].shape == (BATCH, NUM_CLASSES)
  for value in out.values():
    assert value.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(value)))


def test_no_supervised_head_when_num_classes_is_zero(model_images):
  model = SimCLRModel(
    ResNet(depth=18, width_multiplier=0.25, cifar_stem=True),
    ProjectionHead(),
    num_classes=0,
  )
  out, variables = jax.eval_shape(
    lambda: model.init_with_output(jax.random.key(0), model_images, train=False)
  )
  assert "logits" not in out
  assert set(variables["params"]) == {"backbone", "projection_head"}


def test_supervised_head_does_not_reach_backbone(small_model, model_images):
  model, variables = small_model
  class_weights = jax.random.normal(jax.random.key(5), (BATCH, NUM_CLASSES))

  def supervised_loss(params):
    out, _ = model.apply(
      {**variables, "params": params},
      model_images,
      train=True,
      mutable=["batch_stats"],
    )
    return jnp.sum(out["logits"] * class_weights), out["representation"]

  grads, representation = jax.jit(jax.grad(supervised_loss, has_aux=True))(
    variables["params"]
  )
  for leaf in jax.tree.leaves(grads["backbone"]):
    np.testing.assert_array_equal(leaf, 0.0)
  for leaf in jax.tree.leaves(grads["projection_head"]):
    np.testing.assert_array_equal(leaf, 0.0)
  # The head is a plain Dense on the representation: dL/dW = h^T dL/dlogits.
  head = grads["head_supervised"]["linear"]
  np.testing.assert_allclose(
    head["kernel"], representation.T @ class_weights, rtol=1e-4, atol=1e-5
  )
  np.testing.assert_allclose(head["bias"], class_weights.sum(0), rtol=1e-5)
  assert float(jnp.abs(head["kernel"]).sum()) > 0


def test_batch_stats_update_only_in_training(small_model, model_images):
  model, variables = small_model

  @jax.jit
  def run(v, x):
    _, train_state = model.apply(v, x, train=True, mutable=["batch_stats"])
    _, eval_state = model.apply(v, x, train=False, mutable=["batch_stats"])
    return train_state["batch_stats"], eval_state["batch_stats"]

  trained, evaluated = run(variables, model_images)
  old = _flat(variables["batch_stats"])
  new = _flat(trained)
  for path, leaf in _flat(evaluated).items():
    np.testing.assert_array_equal(leaf, old[path])
  changed = [p for p in new if not np.array_equal(new[p], old[p])]
  assert len(changed) == len(new)


def test_bfloat16_compute_float32_params_and_outputs(
  small_model, model_images, small_model_factory
):
  model = small_model_factory(dtype=jnp.bfloat16)
  shapes = jax.eval_shape(lambda: model.init(_key(), model_images, train=False))
  for leaf in jax.tree.leaves(shapes):
    assert leaf.dtype == jnp.float32
  # Params do not depend on the compute dtype, so reuse the f32 ones.
  variables = small_model[1]
  out, state = jax.jit(
    lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"])
  )(variables, model_images)
  for value in out.values():
    assert value.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(value)))
  for leaf in jax.tree.leaves(state):
    assert leaf.dtype == jnp.float32
  jaxpr = str(
    jax.make_jaxpr(lambda x: model.apply(variables, x, train=False))(
      model_images
    )
  )
  conv_lines = [l for l in jaxpr.splitlines() if "conv_general_dilated" in l]
  dot_lines = [l for l in jaxpr.splitlines() if "dot_general" in l]
  assert conv_lines and all("bf16" in l for l in conv_lines)
  # Projection head dense layers run in bf16; the linear-eval head in f32.
  assert sum("bf16" in l for l in dot_lines) == 2
  assert len(dot_lines) == 3


def _perturbed(variables, model_images, model):
  """'Pretrained' variables: noisy params and non-trivial BN statistics."""
  _, state = jax.jit(
    lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"])
  )(variables, model_images)
  leaves, treedef = jax.tree.flatten(variables["params"])
  keys = jax.random.split(jax.random.key(9), len(leaves))
  noisy = [
    x + 0.05 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)
  ]
  return {
    "params": jax.tree.unflatten(treedef, noisy),
    "batch_stats": state["batch_stats"],
  }


@pytest.fixture(scope="module")
def pretrained_v2(model_images, small_model_factory):
  model = small_model_factory(num_layers=3)
  variables = jax.jit(lambda x: model.init(_key(), x, train=False))(
    model_images
  )
  return model, _perturbed(variables, model_images, model)


def _finetune_variables(pretrained, model_images, head_layers):
  model, variables = pretrained
  ft = finetune_model(model, num_classes=7, head_layers=head_layers)
  fresh = jax.jit(lambda x: ft.init(_key(3), x, train=False))(model_images)
  return ft, fresh, init_from_pretrained(fresh, variables)


@pytest.mark.parametrize("head_layers", [0, 1, 2])
def test_finetune_head_layers_representation(
  pretrained_v2, model_images, head_layers
):
  """head_layers=0: backbone output; k: the pretrained head's hidden k-1."""
  model, variables = pretrained_v2
  ft, _, ft_vars = _finetune_variables(pretrained_v2, model_images, head_layers)

  @jax.jit
  def both(pv, fv, x):
    rep = model.apply(pv, x, train=False)["representation"]
    _, hiddens = model.projection_head.apply(
      {c: pv[c]["projection_head"] for c in pv},
      rep,
      train=False,
      return_hiddens=True,
    )
    return rep, hiddens, ft.apply(fv, x, train=False)

  rep, hiddens, out = both(variables, ft_vars, model_images)
  want = hiddens[head_layers - 1] if head_layers else rep
  np.testing.assert_allclose(out["representation"], want, rtol=1e-5, atol=1e-6)
  assert out["logits"].shape == (BATCH, 7)
  head = _flat(ft_vars["params"]).keys()
  layers = {p[1] for p in head if p[0] == "projection_head"}
  assert layers == (
    {f"dense_{j}" for j in range(head_layers)}
    | {f"bn_{j}" for j in range(head_layers)}
  )


def test_init_from_pretrained_copies_exactly(pretrained_v2, model_images):
  _, variables = pretrained_v2
  _, fresh, ft_vars = _finetune_variables(pretrained_v2, model_images, 1)
  for collection in ("params", "batch_stats"):
    got, src, init = (_flat(v[collection]) for v in (ft_vars, variables, fresh))
    assert got.keys() == init.keys()
    for path, leaf in got.items():
      if path[0] == "head_supervised":
        np.testing.assert_array_equal(leaf, init[path])  # fresh classifier
      else:
        np.testing.assert_array_equal(leaf, src[path])
  copied = [p for p in _flat(ft_vars["params"]) if p[0] == "projection_head"]
  assert sorted(copied) == [
    ("projection_head", "bn_0", "bias"),
    ("projection_head", "bn_0", "scale"),
    ("projection_head", "dense_0", "kernel"),
  ]
  # The supervised head is trained fully: gradients reach the backbone.
  ft = finetune_model(pretrained_v2[0], num_classes=7, head_layers=1)
  grads = jax.grad(
    lambda p: ft.apply({**ft_vars, "params": p}, model_images, train=False)[
      "logits"
    ].sum()
  )(ft_vars["params"])
  assert float(jnp.abs(grads["backbone"]["stem_conv"]["kernel"]).sum()) > 0


def test_init_from_pretrained_names_mismatches(pretrained_v2, model_images):
  _, variables = pretrained_v2
  wider = SimCLRModel(
    backbone=ResNet(depth=18, width_multiplier=0.5, cifar_stem=True),
    projection_head=ProjectionHead(num_layers=3, out_dim=16),
    num_classes=0,
  )
  ft = finetune_model(wider, num_classes=3, head_layers=1)
  fresh = jax.eval_shape(lambda: ft.init(_key(), model_images, train=False))
  with pytest.raises(
    UserError,
    match=r"shapes differ \(pretrained vs "
    r"fine-tuning\): params/backbone/\S+ \([\d, ]*16,?\) vs "
    r"\([\d, ]*32,?\), .* and \d+ more\); build",
  ):
    init_from_pretrained(fresh, variables)
  deeper = SimCLRModel(
    backbone=ResNet(depth=34, width_multiplier=0.25, cifar_stem=True),
    projection_head=ProjectionHead(num_layers=3),
    num_classes=0,
  )
  fresh = jax.eval_shape(
    lambda: finetune_model(deeper, num_classes=3, head_layers=0).init(
      _key(), model_images, train=False
    )
  )
  with pytest.raises(
    UserError,
    match="missing in the pretrained weights: params/backbone/stage1_block3",
  ):
    init_from_pretrained(fresh, variables)
  with pytest.raises(UserError, match="no 'params/backbone'"):
    init_from_pretrained(fresh, {})
  with pytest.raises(UserError, match=r"head_layers=4 must be in \[0, 3\]"):
    finetune_model(pretrained_v2[0], num_classes=3, head_layers=4)
