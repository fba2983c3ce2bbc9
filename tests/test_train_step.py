"""The train step on 8 simulated devices equals the 1-device computation."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from simclr_jax import augment
from simclr_jax import defaults
from simclr_jax import train_state as ts
from simclr_jax import train_step as step_lib
from simclr_jax import views


def _tiny_config() -> ml_collections.ConfigDict:
  c = defaults.base_config()
  c.model.depth = 18
  c.model.width_multiplier = 0.125
  c.model.cifar_stem = True
  c.model.proj_head_layers = 2
  c.model.proj_out_dim = 16
  c.optim.base_learning_rate = 1.0
  c.optim.lr_scaling = "linear"
  c.optim.weight_decay = 1e-6
  c.optim.warmup_epochs = 0.0
  return c


def _build(mesh: Mesh, num_classes: int = 4, image_size: int = 16,
           half_precision: bool = False):
  c = _tiny_config()
  c.model.half_precision = half_precision
  schedule = ts.create_schedule(c.optim, batch_size=16, num_examples=64,
                                epochs=10, train_steps=0)
  model = ts.create_model(c.model, num_classes)
  make_tx = lambda p: ts.create_optimizer(c.optim, schedule, p)
  init = ts.make_init_fn(model, image_size, make_tx)
  state = jax.jit(init, out_shardings=NamedSharding(mesh, P()))(
      jax.random.PRNGKey(0))
  aug = augment.AugmentConfig(image_size=image_size, blur_prob=0.5)
  view_cfgs = views.view_configs(aug, "byol" if half_precision else "")
  step = step_lib.make_train_step(
      model=model, tx=make_tx(state.params), view_cfgs=view_cfgs,
      temperature=0.5, hidden_norm=True, mesh=mesh, schedule=schedule,
      num_classes=num_classes)
  return state, step


def _batch(mesh: Mesh, n: int = 16, size: int = 16) -> dict:
  rng = np.random.default_rng(0)
  batch = {"image": rng.integers(0, 256, (n, size, size, 3), np.uint8),
           "label": rng.integers(0, 4, (n,), np.int32)}
  sharding = NamedSharding(mesh, P("data"))
  return {k: jax.device_put(v, sharding) for k, v in batch.items()}


def _run(mesh: Mesh, steps: int = 2):
  state, step = _build(mesh)
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
    for key in ("contrastive_loss", "contrast_acc", "contrast_entropy",
                "probe_loss", "learning_rate"):
      np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6,
                                 err_msg=key)


def test_params_and_batch_stats_match_across_device_counts(one_and_eight):
  (s1, _), (s8, _) = one_and_eight
  assert int(s1.step) == int(s8.step) == 2
  # BN statistics over the global batch: identical whatever the split.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4,
                                                       atol=1e-5),
               s1.batch_stats, s8.batch_stats)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4,
                                                       atol=1e-5),
               s1.params, s8.params)


def test_step_changes_encoder_and_bn_stats(one_and_eight):
  mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
  state0, _ = _build(mesh)
  state0 = jax.device_get(state0)
  (s1, m1), _ = one_and_eight
  moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()),
                       state0.params["backbone"], s1.params["backbone"])
  assert max(jax.tree_util.tree_leaves(moved)) > 0
  stats = jax.tree.map(lambda a, b: float(np.abs(a - b).max()),
                       state0.batch_stats, s1.batch_stats)
  assert min(jax.tree_util.tree_leaves(stats)) > 0
  # At init the loss is close to 2 ln(2N - 1) for N = 16.
  assert abs(m1[0]["contrastive_loss"] - 2 * np.log(31)) < 1.0


def test_half_precision_step_keeps_float32_state_and_loss():
  mesh = Mesh(np.array(jax.devices()[:2]), ("data",))
  state, step = _build(mesh, half_precision=True)
  state, metrics = step(state, _batch(mesh))
  assert metrics["contrastive_loss"].dtype == jnp.float32
  assert np.isfinite(float(metrics["contrastive_loss"]))
  for leaf in jax.tree_util.tree_leaves((state.params, state.batch_stats,
                                         state.opt_state)):
    assert leaf.dtype in (jnp.float32, jnp.int32), leaf.dtype
