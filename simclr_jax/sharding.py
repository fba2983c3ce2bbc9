"""The one place that knows how arrays are laid out over devices.

Every run uses a 1-D mesh whose single axis, `DATA_AXIS`, spans every device
of every process: batches are split along their first dimension over it,
and parameters and optimiser state are replicated. Other modules ask this
one for the mesh, the two shardings and the host <-> global conversions, so
the axis name is spelt here only.

Functions that take a user-supplied `mesh` (kNN, the logistic probe) split
rows over *all* of its axes, so any mesh works there.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"

P = PartitionSpec


def make_mesh() -> Mesh:
  """A 1-D mesh named `DATA_AXIS` over every device of every process.

  Auto axes: jit's partitioner places intermediates, and the only explicit
  collectives live inside `shard_map` (the NT-Xent all-gather, per-device
  BatchNorm).
  """
  return jax.make_mesh(
    (jax.device_count(),),
    (DATA_AXIS,),
    axis_types=(jax.sharding.AxisType.Auto,),
  )


def local_mesh() -> Mesh:
  """A one-device mesh on this process's first device (the default of the
  functions that accept host features without a mesh)."""
  return Mesh(np.array(jax.local_devices()[:1]), (DATA_AXIS,))


def _rows_axis(mesh: Mesh) -> Any:
  """The spec entry that splits a dimension over every axis of `mesh`."""
  names = tuple(mesh.axis_names)
  return names[0] if len(names) == 1 else names


def batch_spec(
  mesh: Mesh, dim: int = 0, axis: str | None = None
) -> PartitionSpec:
  """Dimension `dim` split over mesh axis `axis` (default: every axis), the
  others whole."""
  return P(*([None] * dim), axis or _rows_axis(mesh))


def batch_sharding(
  mesh: Mesh, dim: int = 0, axis: str | None = None
) -> NamedSharding:
  """Arrays whose dimension `dim` (the batch) is split over the devices of
  `axis` (default: every axis of `mesh`)."""
  return NamedSharding(mesh, batch_spec(mesh, dim, axis))


def replicated(mesh: Mesh) -> NamedSharding:
  """Arrays held whole by every device (params, optimiser state, metrics)."""
  return NamedSharding(mesh, P())


def like_batch(x: jax.Array, spec_of: jax.Array) -> jax.Array:
  """`x` resharded with the batch split of `spec_of` (a no-op under Auto
  axes, where the spec is empty); vmap over an explicitly sharded batch
  needs its per-example keys placed like the examples."""
  sharding = jax.typeof(spec_of).sharding
  if len(sharding.spec) and sharding.spec[0] is not None:
    x = jax.sharding.reshard(
      x, NamedSharding(sharding.mesh, P(sharding.spec[0]))
    )
  return x


def to_global(
  batch: Mapping[str, Any], sharding: NamedSharding
) -> dict[str, jax.Array]:
  """Per-process numpy rows -> global arrays split along the batch axis.

  Process 0's rows come first. Values that are already `jax.Array`s are
  passed through unchanged.
  """
  return {
    k: v
    if isinstance(v, jax.Array)
    else jax.make_array_from_process_local_data(sharding, np.asarray(v))
    for k, v in batch.items()
  }


def to_host(x: jax.Array) -> np.ndarray:
  """A global array gathered whole onto every process, as numpy."""
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def put_rows(
  x: Any,
  rows: int,
  sharding: NamedSharding,
  shape: tuple[int, ...] | None = None,
) -> jax.Array:
  """`x` (host numpy or a jax.Array) zero-padded to `rows` rows, reshaped to
  `shape` if given, and placed with `sharding`. A host array is copied only
  when it needs padding: it may be ImageNet-sized."""
  pad = [(0, rows - x.shape[0])] + [(0, 0)] * (x.ndim - 1)
  if isinstance(x, jax.Array):
    x = jax.numpy.pad(x, pad)
    return jax.device_put(x if shape is None else x.reshape(shape), sharding)
  host = np.asarray(x)
  if rows > host.shape[0]:
    host = np.pad(host, pad)
  if shape is not None:
    host = host.reshape(shape)
  return jax.make_array_from_callback(host.shape, sharding, lambda i: host[i])
