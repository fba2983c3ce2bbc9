"""The train step on 8 simulated devices equals the 1-device computation;
its BN statistics and online probe equal a hand computation on both views;
global and per-device BN match hand-computed statistics."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from simclr_jax import augment
from simclr_jax.pretrain import setup as ts
from simclr_jax.pretrain import step as step_lib
from simclr_jax.augment import views
from helpers import tiny_config


def _tiny_config() -> ml_collections.ConfigDict:
  """helpers.tiny_config's model and schedule, with the rates these tests pin."""
  c = tiny_config()
  c.optim.base_learning_rate = 1.0
  c.optim.weight_decay = 1e-6
  return c


def _build(
  mesh: Mesh,
  num_classes: int = 4,
  image_size: int = 16,
  half_precision: bool = False,
  view_cfgs=None,
  global_bn: bool = True,
):
  c = _tiny_config()
  c.model.half_precision = half_precision
  schedule = ts.create_schedule(
    c.optim, batch_size=16, num_examples=64, epochs=10, train_steps=0
  )
  model = ts.create_model(c.model, num_classes)
  make_tx = lambda p: ts.create_optimizer(c.optim, schedule, p)
  init = ts.make_init_fn(model, image_size, make_tx)
  state = jax.jit(init, out_shardings=NamedSharding(mesh, P()))(
    jax.random.PRNGKey(0)
  )
  aug = augment.AugmentConfig(image_size=image_size, blur_prob=0.5)
  if view_cfgs is None:
    view_cfgs = views.view_configs(aug, "byol" if half_precision else "")
  step = step_lib.make_train_step(
    model=model,
    tx=make_tx(state.params),
    view_cfgs=view_cfgs,
    temperature=0.5,
    hidden_norm=True,
    mesh=mesh,
    schedule=schedule,
    num_classes=num_classes,
    global_bn=global_bn,
  )
  return state, step


def _batch(mesh: Mesh, n: int = 16, size: int = 16) -> dict:
  rng = np.random.default_rng(0)
  batch = {
    "image": rng.integers(0, 256, (n, size, size, 3), np.uint8),
    "label": rng.integers(0, 4, (n,), np.int32),
  }
  sharding = NamedSharding(mesh, P("data"))
  return {k: jax.device_put(v, sharding) for k, v in batch.items()}


def _run(mesh: Mesh, steps: int = 2, global_bn: bool = True):
  state, step = _build(mesh, global_bn=global_bn)
  metrics = []
  for _ in range(steps):
    state, m = step(state, _batch(mesh))
    metrics.append(jax.device_get(m))
  return jax.device_get(state), metrics


@pytest.fixture(scope="module")
def one_and_eight():
  one = Mesh(np.array(jax.devices()[:1]), ("data",))
  eight = Mesh(np.array(jax.devices()), ("data",))
  return _run(one), _run(eight)


def test_loss_and_metrics_match_across_device_counts(one_and_eight):
  (_, m1), (_, m8) = one_and_eight
  for a, b in zip(m1, m8):
    for key in (
      "contrastive_loss",
      "contrast_acc",
      "contrast_entropy",
      "probe_loss",
      "learning_rate",
    ):
      np.testing.assert_allclose(
        a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key
      )


def test_params_and_batch_stats_match_across_device_counts(one_and_eight):
  (s1, _), (s8, _) = one_and_eight
  assert int(s1.step) == int(s8.step) == 2
  # BN statistics over the global batch: identical whatever the split.
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
    s1.batch_stats,
    s8.batch_stats,
  )
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
    s1.params,
    s8.params,
  )


def test_step_changes_encoder_and_bn_stats(one_and_eight):
  mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
  state0, _ = _build(mesh)
  state0 = jax.device_get(state0)
  (s1, m1), _ = one_and_eight
  moved = jax.tree.map(
    lambda a, b: float(np.abs(a - b).max()),
    state0.params["backbone"],
    s1.params["backbone"],
  )
  assert max(jax.tree_util.tree_leaves(moved)) > 0
  stats = jax.tree.map(
    lambda a, b: float(np.abs(a - b).max()), state0.batch_stats, s1.batch_stats
  )
  assert min(jax.tree_util.tree_leaves(stats)) > 0
  # At init the loss is close to 2 ln(2N - 1) for N = 16.
  assert abs(m1[0]["contrastive_loss"] - 2 * np.log(31)) < 1.0


def test_augmentation_keys_depend_on_the_step():
  """Same params, same batch, step counter 0 or 1: the loss (computed before
  the update, so blind to the learning rate) differs only if the views do."""
  mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
  crop_flip = augment.make_augment_config("crop_flip", 16)  # cheap to compile
  state, step = _build(mesh, view_cfgs=(crop_flip, crop_flip))
  state = jax.device_get(state)  # the step donates its input
  batch = _batch(mesh)
  losses = [
    float(
      step(state.replace(step=np.asarray(s, state.step.dtype)), batch)[1][
        "contrastive_loss"
      ]
    )
    for s in (0, 1, 0)
  ]
  np.testing.assert_allclose(losses[2], losses[0], rtol=1e-6)  # same views
  assert abs(losses[1] - losses[0]) > 1e-3


def test_half_precision_step_keeps_float32_state_and_loss():
  mesh = Mesh(np.array(jax.devices()[:2]), ("data",))
  state, step = _build(mesh, half_precision=True)
  state, metrics = step(state, _batch(mesh))
  assert metrics["contrastive_loss"].dtype == jnp.float32
  assert np.isfinite(float(metrics["contrastive_loss"]))
  for leaf in jax.tree_util.tree_leaves(
    (state.params, state.batch_stats, state.opt_state)
  ):
    assert leaf.dtype in (jnp.float32, jnp.int32), leaf.dtype


def _eqns(jaxpr):
  """Every equation of a jaxpr, recursing into the jaxprs it calls (jit,
  shard_map, custom_vjp, remat, scan...)."""
  for eqn in jaxpr.eqns:
    yield eqn
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        inner = getattr(sub, "jaxpr", sub)
        if isinstance(inner, jax.extend.core.Jaxpr):
          yield from _eqns(inner)


@pytest.mark.parametrize("half_precision", [True, False])
def test_half_precision_dtypes_inside_the_step(half_precision):
  """Inside the jitted step (not just its outputs): with half_precision the
  backbone's convolutions and matmuls take bfloat16 operands, while the
  NT-Xent similarity matmul and every reduction of a float input stay
  float32; without it, nothing is bfloat16."""
  mesh = Mesh(np.array(jax.devices()[:2]), ("data",))
  state, step = _build(mesh, half_precision=half_precision)
  eqns = list(_eqns(jax.make_jaxpr(step)(state, _batch(mesh)).jaxpr))
  heavy = [
    e
    for e in eqns
    if e.primitive.name in ("dot_general", "conv_general_dilated")
  ]
  bf16 = [e for e in heavy if e.invars[0].aval.dtype == jnp.bfloat16]
  # The similarity logits (aa, ab, ba, bb): each device's 8 images against
  # all 16 of the global batch, forward and backward.
  logits = [e for e in heavy if e.outvars[0].aval.shape == (8, 16)]
  assert len(logits) >= 4 and all(
    e.outvars[0].aval.dtype == jnp.float32 for e in logits
  )
  sums = [
    e
    for e in eqns
    if e.primitive.name == "reduce_sum"
    and jnp.issubdtype(e.invars[0].aval.dtype, jnp.floating)
  ]
  if half_precision:
    assert len(bf16) > len(heavy) // 2, (len(bf16), len(heavy))
    assert all(e.outvars[0].aval.dtype == jnp.float32 for e in sums)
  else:
    assert not bf16
    assert not [
      e for e in eqns for v in e.outvars if v.aval.dtype == jnp.bfloat16
    ]


# Deterministic but very different views: view 1 is the image itself, view 2
# its solarisation (x >= 0.5 -> 1 - x), so both can be built by hand.
_PLAIN = augment.make_augment_config("none", 16)
_SOLARIZED = augment.make_augment_config("none", 16, solarize_prob=1.0)


@pytest.fixture(scope="module")
def distinct_views_step():
  """One step on 1 device with the two views above, and the same forward
  pass done by hand: (state before, state after, metrics, labels, views x
  [x0v1, x0v2, x1v1, ...], hand outputs, hand batch_stats)."""
  mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
  state, step = _build(mesh, view_cfgs=(_PLAIN, _SOLARIZED))
  before = jax.device_get(state)  # the step donates `state`
  batch = _batch(mesh)
  after, metrics = step(state, batch)
  batch = jax.device_get(batch)
  plain = batch["image"].astype(np.float32) / 255.0
  solarized = np.where(plain < 0.5, plain, 1.0 - plain)
  x = np.stack([plain, solarized], axis=1).reshape((-1,) + plain.shape[1:])
  model = ts.create_model(_tiny_config().model, 4)
  out, mutated = jax.jit(
    lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"])
  )({"params": before.params, "batch_stats": before.batch_stats}, x)
  return (
    before,
    jax.device_get(after),
    jax.device_get(metrics),
    batch["label"],
    x,
    jax.device_get(out),
    jax.device_get(mutated["batch_stats"]),
  )


def test_bn_statistics_cover_both_views_together(distinct_views_step):
  before, after, _, _, x, _, hand_stats = distinct_views_step
  momentum = _tiny_config().model.bn_momentum
  kernel = before.params["backbone"]["stem_conv"]["kernel"]

  def stem_stats(images):
    y = np.asarray(
      jax.lax.conv_general_dilated(
        jnp.asarray(images),
        kernel,
        (1, 1),
        "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
      ),
      np.float64,
    )
    return y.mean(axis=(0, 1, 2)), y.var(axis=(0, 1, 2))

  both = stem_stats(x)
  old = before.batch_stats["backbone"]["stem_bn"]
  new = after.batch_stats["backbone"]["stem_bn"]
  for i, name in enumerate(("mean", "var")):
    want = momentum * old[name] + (1 - momentum) * both[i]
    np.testing.assert_allclose(
      new[name], want, rtol=1e-4, atol=1e-6, err_msg=name
    )
  # The check has teeth: one view alone, or per-view statistics averaged,
  # would give clearly different running statistics.
  one, two = stem_stats(x[0::2]), stem_stats(x[1::2])
  for i in range(2):
    assert np.abs(one[i] - both[i]).max() > 1e-2 * np.abs(both[i]).max()
  assert np.abs((one[1] + two[1]) / 2 - both[1]).max() > 1e-2 * both[1].max()
  # Every BN layer: as one training-mode pass over all 2N views.
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
    after.batch_stats,
    hand_stats,
  )


def test_online_probe_trains_on_both_views(distinct_views_step):
  before, after, metrics, labels, _, out, _ = distinct_views_step
  c = _tiny_config()
  schedule = ts.create_schedule(
    c.optim, batch_size=16, num_examples=64, epochs=10, train_steps=0
  )
  head = {"head_supervised": before.params["head_supervised"]}
  tx = ts.create_optimizer(c.optim, schedule, head)

  def probe(rows, row_labels):
    """Probe loss on the given rows of the representation, and the change
    of the head kernel made by a first LARS step on its gradient."""

    def loss_fn(head):
      linear = head["head_supervised"]["linear"]
      logits = out["representation"][rows] @ linear["kernel"] + linear["bias"]
      return optax.softmax_cross_entropy_with_integer_labels(
        logits, row_labels
      ).mean()

    loss, grads = jax.value_and_grad(loss_fn)(head)
    updates, _ = tx.update(grads, tx.init(head), head)
    return loss, np.asarray(updates["head_supervised"]["linear"]["kernel"])

  every = slice(None)
  loss, update = probe(every, np.repeat(labels, 2))  # rows [x0v1, x0v2, ...]
  np.testing.assert_allclose(metrics["probe_loss"], loss, rtol=1e-5)
  # The probe's only gradient is this loss's (stop-gradient features).
  moved = (
    after.params["head_supervised"]["linear"]["kernel"]
    - before.params["head_supervised"]["linear"]["kernel"]
  )
  np.testing.assert_allclose(
    moved, update, rtol=1e-3, atol=1e-3 * np.abs(update).max()
  )
  # View 1 alone, or labels paired with the wrong rows, would train it
  # differently.
  for rows, row_labels in (
    (slice(0, None, 2), labels),
    (every, np.tile(labels, 2)),
  ):
    _, other = probe(rows, row_labels)
    assert np.abs(other - update).max() > 0.1 * np.abs(update).max()


class _DenseBN(nn.Module):
  """Dense + BN: small enough to compute the BN statistics by hand."""

  @nn.compact
  def __call__(self, x, train):
    h = nn.Dense(3, use_bias=False, kernel_init=nn.initializers.normal(1.0))(x)
    return nn.BatchNorm(
      use_running_average=not train, momentum=0.9, epsilon=1e-5
    )(h)


@pytest.mark.parametrize("global_bn", [True, False])
def test_forward_bn_statistics_match_hand_computation(global_bn):
  mesh = jax.make_mesh(
    (8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,)
  )
  model = _DenseBN()
  x = np.random.default_rng(0).normal(size=(32, 5)).astype(np.float32)
  x[::4] += 3.0 * np.arange(8)[:, None]  # each device's rows differ
  variables = model.init(jax.random.PRNGKey(0), x[:2], train=False)
  fwd = jax.jit(step_lib.forward_fn(model, mesh, global_bn=global_bn))
  xs = jax.device_put(x, NamedSharding(mesh, P("data")))
  out, mutated = fwd(variables, xs)

  h = x @ np.asarray(variables["params"]["Dense_0"]["kernel"])
  groups = [h] if global_bn else np.split(h, 8)
  means = np.stack([g.mean(0) for g in groups])
  variances = np.stack([g.var(0) for g in groups])
  expected_out = np.concatenate(
    [(g - m) / np.sqrt(v + 1e-5) for g, m, v in zip(groups, means, variances)]
  )
  np.testing.assert_allclose(out, expected_out, rtol=1e-4, atol=1e-4)
  stats = mutated["batch_stats"]["BatchNorm_0"]
  # Running stats: 0.9 * init + 0.1 * (mean over devices of their batch stats).
  np.testing.assert_allclose(
    stats["mean"], 0.1 * means.mean(0), rtol=1e-5, atol=1e-6
  )
  np.testing.assert_allclose(
    stats["var"], 0.9 + 0.1 * variances.mean(0), rtol=1e-5
  )
  # The two modes really differ on this batch.
  other = jax.jit(step_lib.forward_fn(model, mesh, global_bn=not global_bn))(
    variables, xs
  )
  assert not np.allclose(
    other[1]["batch_stats"]["BatchNorm_0"]["var"], stats["var"], rtol=1e-3
  )


def test_per_device_bn_gradient_equals_per_group_model():
  """global_bn=False: parameter gradients through shard_map equal those of
  the plain model applied to each device's rows separately."""
  mesh = jax.make_mesh(
    (8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,)
  )
  model = _DenseBN()
  x = np.random.default_rng(1).normal(size=(32, 5)).astype(np.float32)
  x += np.repeat(np.arange(8.0), 4)[:, None]
  variables = model.init(jax.random.PRNGKey(0), x[:2], train=False)
  target = np.random.default_rng(2).normal(size=(32, 3)).astype(np.float32)
  fwd = step_lib.forward_fn(model, mesh, global_bn=False)

  def sharded_loss(params):
    out, _ = fwd({**variables, "params": params}, x)
    return jnp.mean((out - target) ** 2)

  def grouped_loss(params):
    outs = [
      model.apply(
        {**variables, "params": params}, g, train=True, mutable=["batch_stats"]
      )[0]
      for g in np.split(x, 8)
    ]
    return jnp.mean((jnp.concatenate(outs) - target) ** 2)

  got = jax.jit(jax.value_and_grad(sharded_loss))(variables["params"])
  want = jax.value_and_grad(grouped_loss)(variables["params"])
  np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
  np.testing.assert_allclose(
    got[1]["Dense_0"]["kernel"],
    want[1]["Dense_0"]["kernel"],
    rtol=1e-4,
    atol=1e-6,
  )


def test_per_device_bn_step_uses_its_own_statistics():
  """global_bn=False reaches the model: on 8 devices (4 view rows each) the
  running variances differ from global BN and the loss stays finite."""
  eight = Mesh(np.array(jax.devices()), ("data",))
  local, m_local = _run(eight, steps=1, global_bn=False)
  shared, m_shared = _run(eight, steps=1, global_bn=True)
  assert np.isfinite(m_local[0]["contrastive_loss"])
  assert m_local[0]["contrastive_loss"] != m_shared[0]["contrastive_loss"]
  var = lambda s: s.batch_stats["backbone"]["stem_bn"]["var"]
  assert not np.allclose(var(local), var(shared), rtol=1e-3)
