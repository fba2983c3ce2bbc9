"""Per-device memory of the NT-Xent loss + gradient, unchunked vs chunked.

  python benchmarks/loss_memory.py [--batches=1024,4096,16384,65536]
      [--chunks=1024,4096] [--time_batch=16384] [--time_chunk=1024]
      [--time_steps=2]

Builds the jit-compiled value_and_grad of `losses.sharded_nt_xent` (loss
and metrics, as the train step uses it) on random (N, 128) projections over
8 simulated CPU devices and reads XLA's memory analysis of the compiled SPMD
program. That analysis is compile-only (nothing is allocated) and per
device: the 8 simulated devices share one host process, so the process
would need about 8x these numbers. Prints a markdown table, then times one
global batch unchunked and chunked if the host has the memory for it.
"""

import os

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import time  # noqa: E402
from typing import Callable  # noqa: E402

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

from simclr_jax import losses  # noqa: E402

_BATCHES = flags.DEFINE_list(
  "batches",
  ["1024", "4096", "16384", "65536"],
  "Global batches N (pairs) to analyse.",
)
_CHUNKS = flags.DEFINE_list(
  "chunks", ["1024", "4096"], "Chunk sizes compared with the unchunked loss."
)
_DIM = flags.DEFINE_integer("dim", 128, "Projection dimension.")
_TEMPERATURE = 0.1
_TIME_BATCH = flags.DEFINE_integer(
  "time_batch", 16384, "Global batch to time (0: no timing)."
)
_TIME_CHUNK = flags.DEFINE_integer("time_chunk", 1024, "Chunk size timed.")
_TIME_STEPS = flags.DEFINE_integer(
  "time_steps", 2, "Timed steps after warm-up."
)

MiB = 2**20


def loss_and_grad(mesh: jax.sharding.Mesh, chunk_size: int) -> Callable:
  """The jitted loss + metrics + gradient w.r.t. both views' projections."""

  def fn(z1, z2):
    return losses.sharded_nt_xent(
      z1, z2, mesh=mesh, temperature=_TEMPERATURE, chunk_size=chunk_size
    )

  return jax.jit(jax.value_and_grad(fn, argnums=(0, 1), has_aux=True))


def analyse(mesh: jax.sharding.Mesh, batch: int, chunk_size: int) -> dict:
  """Compiles for a global batch and returns XLA's per-device byte counts."""
  spec = jax.ShapeDtypeStruct(
    (batch, _DIM.value), jnp.float32, sharding=NamedSharding(mesh, P("data"))
  )
  t0 = time.perf_counter()
  compiled = loss_and_grad(mesh, chunk_size).lower(spec, spec).compile()
  stats = compiled.memory_analysis()
  total = (
    stats.argument_size_in_bytes
    + stats.output_size_in_bytes
    + stats.temp_size_in_bytes
    - stats.alias_size_in_bytes
  )
  return dict(
    temp=stats.temp_size_in_bytes,
    total=total,
    compile_s=time.perf_counter() - t0,
  )


def host_available_bytes() -> int:
  """MemAvailable from /proc/meminfo (0 if unknown)."""
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return 0


def time_step(
  mesh: jax.sharding.Mesh, batch: int, chunk_size: int, steps: int
) -> float:
  """Seconds per loss + gradient step after one warm-up (compile) call."""
  sharding = NamedSharding(mesh, P("data"))
  k1, k2 = jax.random.split(jax.random.key(0))
  z1 = jax.device_put(jax.random.normal(k1, (batch, _DIM.value)), sharding)
  z2 = jax.device_put(jax.random.normal(k2, (batch, _DIM.value)), sharding)
  fn = loss_and_grad(mesh, chunk_size)
  jax.block_until_ready(fn(z1, z2))
  t0 = time.perf_counter()
  for _ in range(steps):
    out = fn(z1, z2)
  jax.block_until_ready(out)
  return (time.perf_counter() - t0) / steps


def main(_):
  devices = jax.device_count()
  mesh = jax.make_mesh((devices,), ("data",), (jax.sharding.AxisType.Explicit,))
  chunks = [int(c) for c in _CHUNKS.value]
  print(
    f"{devices} {jax.devices()[0].platform} devices, d={_DIM.value}, "
    f"float32; per-device bytes from compiled.memory_analysis() of "
    f"jit(value_and_grad(sharded_nt_xent))."
  )
  print()
  print(
    "| global batch N | per-device n | chunk | analytic (n, N) logits "
    "block | XLA temp / device | args + outputs + temp / device |"
  )
  print("| ---: | ---: | ---: | ---: | ---: | ---: |")
  totals = {}
  for batch in (int(b) for b in _BATCHES.value):
    n = batch // devices
    block = n * batch * 4
    for chunk in [0] + chunks:
      if chunk and batch % chunk:
        continue
      result = analyse(mesh, batch, chunk)
      totals[batch, chunk] = result["total"]
      label = str(chunk) if chunk else "none"
      print(
        f"| {batch:,} | {n:,} | {label} | {block / MiB:,.0f} MiB | "
        f"{result['temp'] / MiB:,.1f} MiB | "
        f"{result['total'] / MiB:,.1f} MiB |",
        flush=True,
      )

  batch, chunk = _TIME_BATCH.value, _TIME_CHUNK.value
  if not batch:
    return
  print()
  available = host_available_bytes()
  for c in (0, chunk):
    need = devices * totals.get((batch, c), analyse(mesh, batch, c)["total"])
    if available and need > 0.7 * available:
      print(
        f"N={batch:,} chunk={c or 'none'}: not run, needs about "
        f"{need / MiB:,.0f} MiB for {devices} devices in one process, "
        f"{available / MiB:,.0f} MiB available."
      )
      continue
    seconds = time_step(mesh, batch, c, _TIME_STEPS.value)
    print(
      f"N={batch:,} chunk={c or 'none'}: {seconds:.2f} s per loss + "
      f"gradient step ({_TIME_STEPS.value} steps after warm-up, "
      f"{os.cpu_count()} CPU cores).",
      flush=True,
    )


if __name__ == "__main__":
  app.run(main)
