"""The sharding module: one axis name, the mesh and shardings, and the
host <-> global conversions every other module uses."""

import jax
import jax.numpy as jnp
import numpy as np

from simclr_jax import sharding


def test_mesh_spans_every_device_on_the_data_axis():
  mesh = sharding.make_mesh()
  assert mesh.axis_names == (sharding.DATA_AXIS,) == ("data",)
  assert mesh.size == jax.device_count() == 8
  assert sharding.local_mesh().size == 1


def test_batch_and_replicated_shardings():
  mesh = sharding.make_mesh()
  x = jax.device_put(
    jnp.arange(16.0).reshape(8, 2), sharding.batch_sharding(mesh)
  )
  assert [s.data.shape for s in x.addressable_shards] == [(1, 2)] * 8
  y = jax.device_put(jnp.ones((3,)), sharding.replicated(mesh))
  assert all(s.data.shape == (3,) for s in y.addressable_shards)
  # dim 1 split: each device holds a column block of every row.
  z = jax.device_put(jnp.ones((2, 8)), sharding.batch_sharding(mesh, dim=1))
  assert [s.data.shape for s in z.addressable_shards] == [(2, 1)] * 8
  assert sharding.batch_spec(mesh, axis="data") == sharding.P("data")


def test_to_global_and_back_to_host():
  mesh = sharding.make_mesh()
  where = sharding.batch_sharding(mesh)
  host = {"image": np.arange(8 * 3).reshape(8, 3), "label": np.arange(8)}
  out = sharding.to_global(host, where)
  assert all(isinstance(v, jax.Array) for v in out.values())
  np.testing.assert_array_equal(sharding.to_host(out["image"]), host["image"])
  # Values already on device pass through untouched.
  again = sharding.to_global(out, where)
  assert again["label"] is out["label"]


def test_put_rows_pads_reshapes_and_places():
  mesh = sharding.make_mesh()
  where = sharding.batch_sharding(mesh)
  host = np.arange(6, dtype=np.float32).reshape(3, 2)
  padded = sharding.put_rows(host, 8, where)
  assert padded.shape == (8, 2) and padded.sharding == where
  np.testing.assert_array_equal(np.asarray(padded)[:3], host)
  assert not np.asarray(padded)[3:].any()
  on_device = sharding.put_rows(jnp.asarray(host), 8, where, shape=(8, 2))
  np.testing.assert_array_equal(np.asarray(on_device), np.asarray(padded))
  # No padding needed: the same values, in the requested shape.
  exact = sharding.put_rows(
    np.arange(16.0), 16, sharding.batch_sharding(mesh, dim=1), shape=(2, 8)
  )
  np.testing.assert_array_equal(
    np.asarray(exact), np.arange(16.0).reshape(2, 8)
  )
