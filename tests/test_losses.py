"""NT-Xent against the reference TF2 values, and sharded == single-device."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simclr_jax import losses

RTOL = 1e-5
# Gradients and logits are sums of products that partly cancel, so entries
# near zero carry float32 rounding of the size of the largest entry; compare
# those with an absolute tolerance scaled to the array (1e-6 * max |ref|,
# about 8 float32 ulps of the largest value). Observed: <= 3e-7 * max |ref|.
ATOL_SCALE = 1e-6


@pytest.fixture(scope="module")
def ntxent_cases(reference):
  """index -> (case description, reference arrays) of the NT-Xent cases."""
  meta, arrays = reference
  return {
    c["index"]: (
      c,
      {
        k: arrays[f"ntxent{c['index']}_{k}"]
        for k in (
          "hidden",
          "loss",
          "grad",
          "logits_ab",
          "contrast_acc",
          "contrast_entropy",
        )
      },
    )
    for c in meta["ntxent_cases"]
  }


def assert_close_scaled(actual, desired, rtol=RTOL):
  desired = np.asarray(desired)
  np.testing.assert_allclose(
    np.asarray(actual),
    desired,
    rtol=rtol,
    atol=ATOL_SCALE * np.max(np.abs(desired)),
  )


def loss_and_grad(hidden, **kwargs):
  fn = lambda h: losses.nt_xent(h, **kwargs)
  return jax.jit(jax.value_and_grad(fn, has_aux=True))(hidden)


def make_mesh(num_devices, axis_type=jax.sharding.AxisType.Explicit):
  return jax.make_mesh(
    (num_devices,), ("data",), (axis_type,), devices=jax.devices()[:num_devices]
  )


@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_reference_cases(ntxent_cases, index):
  case, ref = ntxent_cases[index]
  kwargs = dict(
    temperature=case["temperature"], hidden_norm=case["hidden_norm"]
  )
  (loss, metrics), grad = loss_and_grad(jnp.asarray(ref["hidden"]), **kwargs)
  assert ref["hidden"].shape == (2 * case["n"], case["dim"])
  np.testing.assert_allclose(loss, ref["loss"], rtol=RTOL)
  assert_close_scaled(grad, ref["grad"])
  np.testing.assert_allclose(
    metrics["contrast_acc"], ref["contrast_acc"], rtol=RTOL
  )
  np.testing.assert_allclose(
    metrics["contrast_entropy"], ref["contrast_entropy"], rtol=RTOL
  )
  _, logits_ab, labels = losses._nt_xent_local(ref["hidden"], **kwargs)
  assert_close_scaled(logits_ab, ref["logits_ab"])
  np.testing.assert_array_equal(labels, np.arange(case["n"]))


def test_loss_at_random_init_is_chance():
  """Unrelated high-dim views: each anchor picks among 2N - 1 candidates."""
  n, d = 64, 2048
  hidden = jax.random.normal(jax.random.key(0), (2 * n, d))
  loss, metrics = losses.nt_xent(hidden, temperature=0.5)
  np.testing.assert_allclose(loss, 2 * math.log(2 * n - 1), rtol=5e-3)
  np.testing.assert_allclose(
    metrics["contrast_entropy"], math.log(n), rtol=5e-3
  )


@pytest.mark.parametrize(
  "index,num_devices", [(1, 1), (1, 2), (1, 4), (1, 8), (2, 8)]
)
def test_sharded_matches_single_device(ntxent_cases, index, num_devices):
  case, ref = ntxent_cases[index]
  kwargs = dict(
    temperature=case["temperature"], hidden_norm=case["hidden_norm"]
  )
  hidden = jnp.asarray(ref["hidden"])
  n = case["n"]
  (want_loss, want_metrics), want_grad = loss_and_grad(hidden, **kwargs)
  mesh = make_mesh(num_devices)

  @jax.jit
  def sharded(z1, z2):
    fn = lambda a, b: losses.sharded_nt_xent(a, b, mesh=mesh, **kwargs)
    return jax.value_and_grad(fn, argnums=(0, 1), has_aux=True)(z1, z2)

  (loss, metrics), (g1, g2) = sharded(hidden[:n], hidden[n:])
  np.testing.assert_allclose(loss, want_loss, rtol=RTOL)
  np.testing.assert_allclose(loss, ref["loss"], rtol=RTOL)
  for key in ("contrast_acc", "contrast_entropy"):
    np.testing.assert_allclose(metrics[key], want_metrics[key], rtol=RTOL)
  # Not multiplied or divided by the device count: equal to the global grad.
  grad = jnp.concatenate([g1, g2])
  assert_close_scaled(grad, want_grad)
  assert_close_scaled(grad, ref["grad"])


def test_sharded_on_auto_mesh_with_sharded_inputs(ntxent_cases):
  """Auto-typed mesh and inputs already placed as the train step has them."""
  case, ref = ntxent_cases[3]
  kwargs = dict(
    temperature=case["temperature"], hidden_norm=case["hidden_norm"]
  )
  n = case["n"]
  mesh = make_mesh(8, jax.sharding.AxisType.Auto)
  sharding = jax.sharding.NamedSharding(
    mesh, jax.sharding.PartitionSpec("data")
  )
  z1 = jax.device_put(ref["hidden"][:n], sharding)
  z2 = jax.device_put(ref["hidden"][n:], sharding)
  fn = lambda a, b: losses.sharded_nt_xent(a, b, mesh=mesh, **kwargs)[0]
  loss, (g1, g2) = jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))(z1, z2)
  np.testing.assert_allclose(loss, ref["loss"], rtol=RTOL)
  assert_close_scaled(jnp.concatenate([g1, g2]), ref["grad"])


def test_sharded_negatives_are_global():
  """At random init the sharded loss is chance over the GLOBAL batch, not the
  per-device one (the classic missing-gather bug)."""
  n, d = 64, 2048
  z = jax.random.normal(jax.random.key(1), (2 * n, d))
  loss, _ = jax.jit(
    lambda a, b: losses.sharded_nt_xent(
      a, b, mesh=make_mesh(8), temperature=0.5
    )
  )(z[:n], z[n:])
  np.testing.assert_allclose(loss, 2 * math.log(2 * n - 1), rtol=5e-3)


def test_bf16_input_gives_float32_loss(ntxent_cases):
  case, ref = ntxent_cases[1]
  kwargs = dict(
    temperature=case["temperature"], hidden_norm=case["hidden_norm"]
  )
  hidden = jnp.asarray(ref["hidden"], jnp.bfloat16)
  (loss, metrics), grad = loss_and_grad(hidden, **kwargs)
  assert loss.dtype == jnp.float32
  assert all(v.dtype == jnp.float32 for v in metrics.values())
  assert grad.dtype == jnp.bfloat16
  assert np.isfinite(float(loss))
  np.testing.assert_allclose(loss, ref["loss"], rtol=1e-2)
  n = case["n"]
  sharded_loss, _ = jax.jit(
    lambda a, b: losses.sharded_nt_xent(a, b, mesh=make_mesh(4), **kwargs)
  )(hidden[:n], hidden[n:])
  assert sharded_loss.dtype == jnp.float32
  np.testing.assert_allclose(sharded_loss, loss, rtol=RTOL)


def test_temperature_scaling():
  n, d = 16, 32
  hidden = jax.random.normal(jax.random.key(2), (2 * n, d))
  # Logits scale as 1 / temperature.
  _, ab_1, _ = losses._nt_xent_local(hidden, temperature=1.0)
  _, ab_01, _ = losses._nt_xent_local(hidden, temperature=0.1)
  np.testing.assert_allclose(ab_01 * 0.1, ab_1, rtol=1e-5, atol=1e-6)
  # Without normalisation, scaling rows by c is temperature / c**2.
  c = 3.0
  scaled, _ = losses.nt_xent(c * hidden, temperature=2.0, hidden_norm=False)
  plain, _ = losses.nt_xent(hidden, temperature=2.0 / c**2, hidden_norm=False)
  np.testing.assert_allclose(scaled, plain, rtol=1e-5)
  # With normalisation, row scale does not matter.
  row_scale = jax.random.uniform(
    jax.random.key(3), (2 * n, 1), minval=0.1, maxval=10.0
  )
  a, _ = losses.nt_xent(row_scale * hidden, temperature=0.2)
  b, _ = losses.nt_xent(hidden, temperature=0.2)
  np.testing.assert_allclose(a, b, rtol=1e-5)
  # Identical, orthogonal views: a sharper softmax means a lower loss, going to
  # 0; at any temperature each anchor's argmax is its positive.
  z = jnp.eye(n, d)
  views = jnp.concatenate([z, z])
  values = []
  for tau in (1.0, 0.5, 0.1, 0.01):
    loss, metrics = losses.nt_xent(views, temperature=tau)
    assert metrics["contrast_acc"] == 1.0
    values.append(float(loss))
  assert values == sorted(values, reverse=True)
  assert values[-1] < 1e-6
  # Orthogonal views at temperature 1: logits 1 (positive) and 0 (2N - 2
  # negatives; the self-similarity is masked).
  expected = 2 * (math.log(math.e + 2 * n - 2) - 1.0)
  np.testing.assert_allclose(values[0], expected, rtol=1e-6)


def test_bad_shapes_raise():
  with pytest.raises(ValueError, match=r"\(2n, d\)"):
    losses.nt_xent(jnp.ones((5, 4)), temperature=0.1)
  with pytest.raises(ValueError, match="does not split evenly"):
    losses.sharded_nt_xent(
      jnp.ones((6, 4)), jnp.ones((6, 4)), mesh=make_mesh(4), temperature=0.1
    )
  with pytest.raises(ValueError, match="same"):
    losses.sharded_nt_xent(
      jnp.ones((8, 4)), jnp.ones((8, 3)), mesh=make_mesh(4), temperature=0.1
    )


# Chunked NT-Xent (chunk_size > 0): the same values with bounded memory.


def _assert_same_loss(got, want):
  (loss, metrics), grad = got
  (want_loss, want_metrics), want_grad = want
  np.testing.assert_allclose(loss, want_loss, rtol=RTOL)
  for key in ("contrast_acc", "contrast_entropy"):
    np.testing.assert_allclose(metrics[key], want_metrics[key], rtol=RTOL)
  assert_close_scaled(grad, want_grad)


@pytest.mark.parametrize("chunk_size", [1, 8, 24, 96])
def test_chunked_matches_unchunked(chunk_size):
  n, d = 96, 32
  hidden = jax.random.normal(jax.random.key(4), (2 * n, d))
  for kwargs in (
    dict(temperature=0.1),
    dict(temperature=0.5, hidden_norm=False),
  ):
    _assert_same_loss(
      loss_and_grad(hidden, chunk_size=chunk_size, **kwargs),
      loss_and_grad(hidden, **kwargs),
    )


@pytest.mark.parametrize("index,chunk_size", [(0, 4), (1, 8), (2, 16), (3, 16)])
def test_chunked_reference_cases(ntxent_cases, index, chunk_size):
  case, ref = ntxent_cases[index]
  (loss, metrics), grad = loss_and_grad(
    jnp.asarray(ref["hidden"]),
    temperature=case["temperature"],
    hidden_norm=case["hidden_norm"],
    chunk_size=chunk_size,
  )
  np.testing.assert_allclose(loss, ref["loss"], rtol=RTOL)
  assert_close_scaled(grad, ref["grad"])
  for key in ("contrast_acc", "contrast_entropy"):
    np.testing.assert_allclose(metrics[key], ref[key], rtol=RTOL)


@pytest.mark.parametrize("chunk_size", [8, 32, 128])
def test_chunked_sharded_matches_single_device(chunk_size):
  n, d = 128, 64
  hidden = jax.random.normal(jax.random.key(5), (2 * n, d))
  want = loss_and_grad(hidden, temperature=0.2)
  mesh = make_mesh(8)

  @jax.jit
  def sharded(z1, z2):
    fn = lambda a, b: losses.sharded_nt_xent(
      a, b, mesh=mesh, temperature=0.2, chunk_size=chunk_size
    )
    return jax.value_and_grad(fn, argnums=(0, 1), has_aux=True)(z1, z2)

  (loss, metrics), (g1, g2) = sharded(hidden[:n], hidden[n:])
  _assert_same_loss(((loss, metrics), jnp.concatenate([g1, g2])), want)


def test_chunked_argmax_ties_and_uniform_entropy():
  """All logits equal: argmax picks column 0 (as jnp.argmax), so only the
  anchor whose positive is column 0 counts; softmax(ab) is uniform."""
  n = 32
  hidden = jnp.ones((2 * n, 8))
  for chunk_size in (0, 4, 32):
    _, metrics = losses.nt_xent(hidden, temperature=0.5, chunk_size=chunk_size)
    np.testing.assert_allclose(metrics["contrast_acc"], 1 / n, rtol=RTOL)
    np.testing.assert_allclose(
      metrics["contrast_entropy"], -math.log(1 / n + 1e-8), rtol=RTOL
    )


def test_chunked_bf16_input(ntxent_cases):
  case, ref = ntxent_cases[1]
  hidden = jnp.asarray(ref["hidden"], jnp.bfloat16)
  kwargs = dict(
    temperature=case["temperature"], hidden_norm=case["hidden_norm"]
  )
  (loss, metrics), grad = loss_and_grad(hidden, chunk_size=8, **kwargs)
  assert loss.dtype == jnp.float32 and grad.dtype == jnp.bfloat16
  assert all(v.dtype == jnp.float32 for v in metrics.values())
  (want, _), _ = loss_and_grad(hidden, **kwargs)
  np.testing.assert_allclose(loss, want, rtol=RTOL)


def test_chunked_memory_is_bounded():
  """Compile-only: with the backward pass rematerialised, the chunked loss +
  gradient needs far less scratch than the (n, N) logits of the unchunked
  one (without jax.checkpoint, scan would keep every block's logits)."""
  n, d = 2048, 16
  mesh = make_mesh(8)
  spec = jax.ShapeDtypeStruct(
    (n, d),
    jnp.float32,
    sharding=jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec("data")
    ),
  )

  def temp_bytes(chunk_size):
    fn = lambda a, b: losses.sharded_nt_xent(
      a, b, mesh=mesh, temperature=0.1, chunk_size=chunk_size
    )
    compiled = (
      jax.jit(jax.value_and_grad(fn, argnums=(0, 1), has_aux=True))
      .lower(spec, spec)
      .compile()
    )
    return compiled.memory_analysis().temp_size_in_bytes

  block = (n // 8) * n * 4  # one (n_local, N) float32 logits block
  unchunked, chunked = temp_bytes(0), temp_bytes(128)
  assert unchunked > 4 * block
  assert chunked < block


def test_bad_chunk_size_raises():
  hidden = jnp.ones((16, 4))
  for chunk_size in (3, 16, -1):
    with pytest.raises(ValueError, match="chunk_size"):
      losses.nt_xent(hidden, temperature=0.1, chunk_size=chunk_size)
  for chunk_size in (3, -2):
    with pytest.raises(ValueError, match="chunk_size"):
      losses.sharded_nt_xent(
        jnp.ones((8, 4)),
        jnp.ones((8, 4)),
        mesh=make_mesh(4),
        temperature=0.1,
        chunk_size=chunk_size,
      )
