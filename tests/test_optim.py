"""LARS, masks and the learning-rate schedule against the reference TF2 values."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from simclr_jax import optim

# The reference's six LARS variables and where they live in our param tree.
REFERENCE_PATHS = {
  "resnet/conv2d/kernel": ("backbone", "conv2d", "kernel"),
  "resnet/batch_normalization/gamma": (
    "backbone",
    "batch_normalization",
    "scale",
  ),
  "resnet/batch_normalization/beta": (
    "backbone",
    "batch_normalization",
    "bias",
  ),
  "head_contrastive/dense/kernel": ("projection_head", "dense", "kernel"),
  "head_supervised/dense/bias": ("head_supervised", "dense", "bias"),
  "head_supervised/dense/kernel": ("head_supervised", "dense", "kernel"),
}


def to_tree(names, values):
  tree = {}
  for name, value in zip(names, values):
    *scopes, leaf = REFERENCE_PATHS[name]
    node = tree
    for scope in scopes:
      node = node.setdefault(scope, {})
    node[leaf] = value
  return tree


def get(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def run_steps(opt, params, grads):
  state = opt.init(params)
  for g in grads:
    updates, state = opt.update(g, state, params)
    params = optax.apply_updates(params, updates)
  return params


def reference_lars_inputs(meta, arrays):
  lars = meta["lars"]
  names = lars["variable_names"]
  params = to_tree(
    names, [jnp.asarray(arrays[f"lars_init{j}"]) for j in range(len(names))]
  )
  grads = [
    to_tree(
      names,
      [jnp.asarray(arrays[f"lars_grad{t}_{j}"]) for j in range(len(names))],
    )
    for t in range(lars["steps"])
  ]
  return lars, names, params, grads


def test_mask_matches_reference_exclusion_rule(reference):
  meta, _ = reference
  lars = meta["lars"]
  assert set(lars["variable_names"]) == set(REFERENCE_PATHS)
  params = to_tree(lars["variable_names"], [0.0] * 6)
  mask = optim.lars_mask(params)
  for name, path in REFERENCE_PATHS.items():
    excluded = any(word in name for word in lars["exclude"])
    assert get(mask, path) == (not excluded), name


@pytest.mark.parametrize("weight_decay", [1e-6, 1e-4])
def test_lars_matches_reference(reference, weight_decay):
  meta, arrays = reference
  lars, names, params, grads = reference_lars_inputs(meta, arrays)
  assert weight_decay in lars["weight_decays"]
  opt = optim.lars(
    lars["learning_rate"],
    params,
    weight_decay=weight_decay,
    momentum=lars["momentum"],
    trust_coefficient=lars["eeta"],
  )
  final = jax.jit(lambda p, g: run_steps(opt, p, g))(params, grads)
  for j, name in enumerate(names):
    want = arrays[f"lars_wd{weight_decay}_final{j}"]
    # Observed max relative error 1.2e-7 (one float32 ulp); no atol needed.
    np.testing.assert_allclose(
      get(final, REFERENCE_PATHS[name]), want, rtol=1e-6, atol=0, err_msg=name
    )


def test_lars_weight_decay_matters(reference):
  """The two reference decays give different kernels, so both are tested."""
  _, arrays = reference
  a, b = (arrays[f"lars_wd{wd}_final0"] for wd in ("1e-06", "0.0001"))
  assert not np.allclose(a, b, rtol=1e-6, atol=0)


def test_lars_mask_function_form_equals_tree_form(reference):
  meta, arrays = reference
  lars, _, params, grads = reference_lars_inputs(meta, arrays)
  eager = optim.lars(0.5, params, weight_decay=1e-4)
  lazy = optim.lars(0.5, None, weight_decay=1e-4)
  jax.tree.map(
    np.testing.assert_array_equal,
    run_steps(eager, params, grads),
    run_steps(lazy, params, grads),
  )


def test_supervised_head_decay_equals_reference_l2_term(reference):
  """`weight_decay_mask_fn=kernel_mask` == the reference's extra L2 loss
  `wd * ||W||^2 / 2` on the head kernel (gradient `wd * W`) under LARS."""
  meta, arrays = reference
  _, _, params, grads = reference_lars_inputs(meta, arrays)
  wd = 1e-2
  in_opt = optim.lars(
    0.5, params, weight_decay=wd, weight_decay_mask_fn=optim.kernel_mask
  )
  plain = optim.lars(0.5, params, weight_decay=wd)

  def run_with_l2(opt, p, gs):
    state = opt.init(p)
    for g in gs:
      head = g["head_supervised"]["dense"]
      head = {
        **head,
        "kernel": head["kernel"] + wd * p["head_supervised"]["dense"]["kernel"],
      }
      g = {**g, "head_supervised": {"dense": head}}
      updates, state = opt.update(g, state, p)
      p = optax.apply_updates(p, updates)
    return p

  want = run_with_l2(plain, params, grads)
  got = run_steps(in_opt, params, grads)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), got, want
  )


def test_lars_zero_kernel_gets_unit_trust_ratio():
  params = {"backbone": {"conv": {"kernel": jnp.zeros((3, 3, 2, 4))}}}
  grads = jax.tree.map(lambda x: jnp.full_like(x, 0.25), params)
  opt = optim.lars(0.5, params, weight_decay=1e-4)
  updates, _ = opt.update(grads, opt.init(params), params)
  np.testing.assert_allclose(updates["backbone"]["conv"]["kernel"], -0.125)


class _Backbone(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.Conv(8, (3, 3), use_bias=False, name="stem_conv")(x)
    x = nn.BatchNorm(use_running_average=False, name="stem_bn")(x)
    for i in range(2):
      y = nn.Conv(8, (3, 3), use_bias=False, name=f"block{i}_conv")(x)
      y = nn.BatchNorm(use_running_average=False, name=f"block{i}_bn")(y)
      x = x + y
    return jnp.mean(x, axis=(1, 2))


class _SimCLR(nn.Module):
  @nn.compact
  def __call__(self, x):
    h = _Backbone(name="backbone")(x)
    z = nn.Dense(8, use_bias=False, name="dense_0")(h)
    z = nn.BatchNorm(use_running_average=False, name="bn_0")(z)
    z = nn.Dense(4, use_bias=False, name="dense_1")(z)
    z = nn.BatchNorm(use_running_average=False, use_bias=False, name="bn_1")(z)
    logits = nn.Dense(10, name="head_supervised")(jax.lax.stop_gradient(h))
    return z, logits


def _real_looking_params():
  variables = jax.eval_shape(
    _SimCLR().init, jax.random.key(0), jnp.zeros((2, 8, 8, 3))
  )
  params = variables["params"]
  # Named as the project's models scope it: the projection head is a submodule.
  return {
    "backbone": params["backbone"],
    "projection_head": {
      k: params[k] for k in ("dense_0", "bn_0", "dense_1", "bn_1")
    },
    "head_supervised": params["head_supervised"],
  }


def test_mask_on_real_looking_tree():
  params = _real_looking_params()
  mask = optim.lars_mask(params)
  flat = {
    jax.tree_util.keystr(p): v
    for p, v in jax.tree_util.tree_flatten_with_path(mask)[0]
  }
  decayed = sorted(k for k, v in flat.items() if v)
  assert decayed == sorted(
    [
      "['backbone']['stem_conv']['kernel']",
      "['backbone']['block0_conv']['kernel']",
      "['backbone']['block1_conv']['kernel']",
      "['projection_head']['dense_0']['kernel']",
      "['projection_head']['dense_1']['kernel']",
    ]
  )
  assert all(
    not v
    for k, v in flat.items()
    if "bn" in k or "bias" in k or "head_supervised" in k
  )
  # A leading 'params' collection key is looked through.
  wrapped = optim.lars_mask({"params": params})
  assert jax.tree.leaves(wrapped) == jax.tree.leaves(mask)
  # The kernel mask also covers the supervised head's kernel, not its bias.
  kernels = optim.kernel_mask(params)
  assert kernels["head_supervised"]["kernel"]
  assert not kernels["head_supervised"]["bias"]
  assert sum(jax.tree.leaves(kernels)) == len(decayed) + 1


def test_mask_decides_by_path_not_substring():
  """Scope names that merely contain 'bias'/'head_supervised' do not count."""
  params = {
    "backbone": {"bias_free_conv": {"kernel": 0.0, "bias": 0.0}},
    "projection_head": {"head_supervised_like": {"kernel": 0.0}},
    "head_supervised": {"dense": {"kernel": 0.0}},
  }
  mask = optim.lars_mask(params)
  assert mask["backbone"]["bias_free_conv"] == {"kernel": True, "bias": False}
  assert mask["projection_head"]["head_supervised_like"]["kernel"]
  assert not mask["head_supervised"]["dense"]["kernel"]


@pytest.mark.parametrize("case_index", [0, 1, 2])
def test_schedule_matches_reference(reference, case_index):
  meta, _ = reference
  case = meta["lr_schedules"][case_index]
  args = dict(
    batch_size=case["batch_size"],
    num_examples=case["num_examples"],
    epochs=case["epochs"],
  )
  assert optim.total_steps(**args) == case["total_steps"]
  schedule = optim.learning_rate_schedule(
    base_learning_rate=case["base_learning_rate"],
    warmup_epochs=case["warmup_epochs"],
    scaling=case["scaling"],
    **args,
  )
  steps = np.asarray(case["steps"])
  want = np.asarray(case["learning_rates"])
  eager = np.array([schedule(jnp.int32(s)) for s in steps])
  jitted = np.asarray(jax.jit(jax.vmap(schedule))(jnp.asarray(steps)))
  # Eager values match the reference bit for bit; jit may fuse the float32
  # arithmetic differently (one ulp). atol only matters for the ~0 tail.
  for got in (eager, jitted):
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
  assert eager[0] == 0.0 and eager[-1] == 0.0
  # Exactly 0 from total_steps on, e.g. when a run is extended.
  assert float(schedule(case["total_steps"] + 100)) == 0.0


def test_imagenet_step_arithmetic():
  args = dict(batch_size=4096, num_examples=1_281_167)
  assert optim.total_steps(epochs=100, **args) == 31_279
  assert optim.warmup_steps(warmup_epochs=10, **args) == 3_127
  assert optim.total_steps(epochs=100, train_steps=500, **args) == 500
  # Fractional warmup epochs: floor division first, then round.
  assert optim.warmup_steps(warmup_epochs=0.5, **args) == 156
  assert optim.warmup_steps(warmup_epochs=0, **args) == 0
  assert (
    optim.total_steps(batch_size=512, num_examples=50_000, epochs=1000)
    == 97_657
  )


def test_scaled_learning_rate():
  for value in (
    optim.scaled_learning_rate(0.3, 4096, "linear"),
    optim.scaled_learning_rate(0.075, 4096, "sqrt"),
  ):
    assert math.isclose(value, 4.8, rel_tol=1e-12)
  assert math.isclose(optim.scaled_learning_rate(0.1, 4096, "sqrt"), 6.4)
  assert optim.scaled_learning_rate(1.0, 512, "linear") == 2.0
  with pytest.raises(ValueError, match="scaling"):
    optim.scaled_learning_rate(0.3, 4096, "cubic")


def test_schedule_shape():
  schedule = optim.learning_rate_schedule(
    base_learning_rate=1.0,
    batch_size=256,
    num_examples=2560,
    epochs=10,
    warmup_epochs=2,
    scaling="linear",
  )  # peak 1, warmup 20, total 101
  values = np.asarray(jax.vmap(schedule)(jnp.arange(120)))
  assert np.all(np.diff(values[:21]) > 0)
  assert values[20] == 1.0
  assert np.all(np.diff(values[20:101]) < 0)
  assert np.all(values[101:] == 0.0)
  # No warmup: starts at the peak.
  no_warmup = optim.learning_rate_schedule(
    base_learning_rate=1.0,
    batch_size=256,
    num_examples=2560,
    epochs=10,
    warmup_epochs=0,
    scaling="linear",
  )
  assert float(no_warmup(0)) == 1.0
  # Warmup longer than training: ramp, then 0.
  short = optim.learning_rate_schedule(
    base_learning_rate=1.0,
    batch_size=256,
    num_examples=2560,
    epochs=10,
    warmup_epochs=2,
    scaling="linear",
    train_steps=10,
  )
  assert math.isclose(float(short(5)), 0.25, rel_tol=1e-6)
  assert float(short(25)) == 0.0


def test_lars_with_schedule_under_jit(reference):
  """The schedule plugs into LARS; the first step (lr 0) changes nothing."""
  meta, arrays = reference
  _, _, params, grads = reference_lars_inputs(meta, arrays)
  schedule = optim.learning_rate_schedule(
    base_learning_rate=0.3,
    batch_size=4096,
    num_examples=1_281_167,
    epochs=100,
    warmup_epochs=10,
    scaling="linear",
  )
  opt = optim.lars(schedule, params, weight_decay=1e-6)
  updates, _ = jax.jit(opt.update)(grads[0], opt.init(params), params)
  assert all(
    float(jnp.max(jnp.abs(u))) == 0.0 for u in jax.tree.leaves(updates)
  )


def test_sgd_nesterov_matches_keras_formula():
  """`v = m v - lr g; w += m v - lr g`, with g += wd * w on kernels only."""
  rng = np.random.default_rng(0)
  params = {
    "head_supervised": {
      "kernel": rng.normal(size=(4, 3)),
      "bias": rng.normal(size=(3,)),
    }
  }
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
  grads = [
    jax.tree.map(
      lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), params
    )
    for _ in range(3)
  ]
  lrs = [0.1, 0.05, 0.02]
  schedule = lambda count: jnp.asarray(lrs)[count]
  wd, momentum = 1e-3, 0.9
  for given in (params, None):
    opt = optim.sgd_nesterov(
      schedule, momentum=momentum, weight_decay=wd, params=given
    )
    got = run_steps(opt, params, grads)
    for leaf in ("kernel", "bias"):
      w = np.asarray(params["head_supervised"][leaf], np.float64)
      v = np.zeros_like(w)
      for lr, g in zip(lrs, grads):
        g = np.asarray(g["head_supervised"][leaf], np.float64)
        if leaf == "kernel":
          g = g + wd * w
        v = momentum * v - lr * g
        w = w + momentum * v - lr * g
      np.testing.assert_allclose(got["head_supervised"][leaf], w, rtol=1e-5)


def test_lars_zero_gradient_norm_gets_unit_trust_ratio():
  """||g|| = 0 after weight decay: the ratio must not be |w| / 0.

  Leaf 'a' gets g = -wd * w, so its decayed gradient is exactly 0: a trust
  ratio of 1 (any finite value) adds nothing and the update is pure momentum,
  whereas an unguarded ratio (inf) would turn it into NaN. Leaf 'b' gets
  g = 0 but is decayed, so ||g|| is the norm of wd * w (taken after the decay,
  as in the reference) and the ratio is coef / wd, not 1. (With g = 0 the
  ratio only multiplies zeros, so 1 and 0 cannot be told apart.)
  """
  rng = np.random.default_rng(1)
  params = {
    name: {"kernel": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)}
    for name in ("a", "b")
  }
  lr, wd, coef, momentum = 0.5, 1e-2, 1e-3, 0.9
  opt = optim.lars(
    lr, params, weight_decay=wd, momentum=momentum, trust_coefficient=coef
  )
  state = opt.init(params)
  first = jax.tree.map(
    lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), params
  )
  u1, state = opt.update(first, state, params)
  params = optax.apply_updates(params, u1)
  w_a, w_b = params["a"]["kernel"], params["b"]["kernel"]
  second = {"a": {"kernel": -(wd * w_a)}, "b": {"kernel": jnp.zeros_like(w_b)}}
  u2, _ = opt.update(second, state, params)
  np.testing.assert_array_equal(u2["a"]["kernel"], momentum * u1["a"]["kernel"])
  np.testing.assert_allclose(
    u2["b"]["kernel"], momentum * u1["b"]["kernel"] - lr * coef * w_b, rtol=1e-5
  )
