"""Joining JAX's multi-controller runtime when a job spans several processes.

One process per host (TPU VM worker, GPU node, or local test process) runs
the same command. Three ways in:

- explicit: `distributed.coordinator_address`, `num_processes` and
  `process_id` in the config (or the SIMCLR_COORDINATOR_ADDRESS,
  SIMCLR_NUM_PROCESSES, SIMCLR_PROCESS_ID environment variables), for any
  cluster, including several CPU processes on one machine (gloo collectives);
- automatic: on TPU pod slices, SLURM and Open MPI jobs with more than one
  process, `jax.distributed.initialize()` finds the cluster itself;
- neither: a single process drives all local devices.

`jax.distributed.initialize` aborts the whole process with a C++ stack dump
when the coordinator cannot be reached, so non-coordinator processes first
check that the coordinator's port answers and fail with a readable error.
"""

from __future__ import annotations

import os
import socket
import sys
import time

import jax
import ml_collections

from simclr_jax.errors import UserError


def _env_int(name: str, default: int) -> int:
  value = os.environ.get(name, "")
  try:
    return int(value) if value else default
  except ValueError:
    raise UserError(
      f"environment variable {name}={value!r} must be an integer."
    ) from None


def cluster_detected() -> bool:
  """True on multi-process TPU slices, SLURM and Open MPI jobs."""
  env = os.environ
  if int(env.get("SLURM_NTASKS", "1") or 1) > 1:
    return True
  if int(env.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1:
    return True
  return "," in env.get("TPU_WORKER_HOSTNAMES", "")


def _wait_for_port(address: str, timeout_s: float) -> bool:
  host, _, port = address.rpartition(":")
  deadline = time.time() + timeout_s
  while time.time() < deadline:
    try:
      with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
        return True
    except OSError:
      time.sleep(0.5)
  return False


def initialize(cfg: ml_collections.ConfigDict) -> None:
  """Starts the distributed runtime if this job has several processes."""
  address = cfg.coordinator_address or os.environ.get(
    "SIMCLR_COORDINATOR_ADDRESS", ""
  )
  num = cfg.num_processes or _env_int("SIMCLR_NUM_PROCESSES", 0)
  pid = (
    cfg.process_id if cfg.process_id >= 0 else _env_int("SIMCLR_PROCESS_ID", -1)
  )
  if not address:
    if cluster_detected():
      jax.distributed.initialize(initialization_timeout=cfg.timeout_s)
    return
  if ":" not in address:
    raise UserError(
      f"distributed.coordinator_address={address!r} needs a "
      "port, e.g. 10.0.0.1:1234."
    )
  if num < 1 or not 0 <= pid < num:
    raise UserError(
      f"distributed: process_id={pid} with num_processes={num}; give every "
      "process the same num_processes and a distinct process_id in "
      f"[0, num_processes)."
    )
  # CPU collectives between processes need gloo; no effect on TPU/GPU.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if pid != 0 and not _wait_for_port(address, cfg.timeout_s):
    raise UserError(
      f"process {pid}: no coordinator answered at {address} within "
      f"{cfg.timeout_s}s; start process 0 there (same command with "
      "process_id=0) and check that the address is reachable."
    )
  if pid == 0:
    print(
      f"Coordinator at {address}: waiting up to {cfg.timeout_s}s for "
      f"{num} processes to join.",
      file=sys.stderr,
      flush=True,
    )
  jax.distributed.initialize(
    address, num, pid, initialization_timeout=cfg.timeout_s
  )
