"""Several processes on one machine through jax.distributed (gloo on CPU)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow as tf

from helpers import ROOT, TINY, assert_one_line_error, run_cli

# Runs simclr_jax.main and logs the rows of every local training batch.
RECORDER = ROOT / "tests" / "record_train_rows.py"


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _start(workdir, *args, devices, rows=None):
  """The CLI on the tiny config in a subprocess; with `rows`, through
  RECORDER, which logs the rows it trains on to that file."""
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["JAX_PLATFORMS"] = "cpu"
  program = ["-m", "simclr_jax.main"]
  if rows is not None:
    env["SIMCLR_ROWS_FILE"] = str(rows)
    program = [str(RECORDER)]
  args = [
    sys.executable,
    *program,
    "--config",
    "configs/default.py",
    "--workdir",
    str(workdir),
    *TINY,
    *args,
  ]
  return subprocess.Popen(
    args,
    cwd=ROOT,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )


def _launch(workdir, pid, num, port, *extra, devices=2, rows=None):
  return _start(
    workdir,
    f"--config.distributed.coordinator_address=localhost:{port}",
    f"--config.distributed.num_processes={num}",
    f"--config.distributed.process_id={pid}",
    "--config.distributed.timeout_s=60",
    *extra,
    devices=devices,
    rows=rows,
  )


def _finish(procs):
  """Waits for the processes (killing all of them if one hangs); stdouts."""
  try:
    outs = [p.communicate(timeout=600) for p in procs]
  except subprocess.TimeoutExpired:
    for p in procs:
      p.kill()
      p.communicate()
    raise
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  return [out for out, _ in outs]


def _rows(path, steps):
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f][:steps]


def _losses(workdir):
  """contrastive_loss by step from the TensorBoard events of process 0."""
  losses = {}
  for name in os.listdir(workdir):
    if name.startswith("events.out.tfevents"):
      for event in tf.compat.v1.train.summary_iterator(str(workdir / name)):
        for value in event.summary.value:
          if value.tag == "contrastive_loss":
            losses[event.step] = float(tf.make_ndarray(value.tensor))
  return losses


def _params(workdir, step):
  """The saved parameters, restored onto this process's first device."""
  path = workdir / "checkpoints" / str(step) / "default"
  with ocp.StandardCheckpointer() as ckpt:
    meta = ckpt.metadata(path)
    # orbax >= 0.12 wraps the tree (`.item_metadata`); 0.11 returns it.
    meta = getattr(meta, "item_metadata", meta)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), meta
    )
    return jax.device_get(ckpt.restore(path, target)["params"])


@pytest.mark.slow  # three training processes: ~70 s of the default budget
def test_process_count_changes_nothing_and_one_process_resumes(tmp_path):
  # 2 processes x 2 devices vs 1 process x 4 devices, 3 steps: 4 reader
  # shards of 16 of the 64 examples (data.num_shards=0: one per device).
  steps = [
    "--config.train_steps=3",
    "--config.log_every_steps=1",
    "--config.checkpoint_every_steps=3",
  ]
  two, one = tmp_path / "two", tmp_path / "one"
  port = _free_port()
  procs = [
    _launch(two, pid, 2, port, *steps, rows=tmp_path / f"rows{pid}.jsonl")
    for pid in (0, 1)
  ]
  procs.append(_start(one, *steps, devices=4, rows=tmp_path / "rows.jsonl"))
  outs = _finish(procs)
  # Only process 0 reports; it sees 4 devices over 2 processes.
  assert "on 4 cpu device(s), 2 process(es)" in outs[0]
  assert "step 3/3" in outs[0] and "step" not in outs[1]
  assert sorted(os.listdir(two / "checkpoints")) == ["3"]

  # The same global batches, each process reading a different half.
  first, second, single = (
    _rows(tmp_path / f"rows{n}.jsonl", 3) for n in ("0", "1", "")
  )
  assert len(single) == 3 and all(len(b) == 32 for b in single)
  assert [a + b for a, b in zip(first, second)] == single
  halves = [{r for batch in rows for r in batch} for rows in (first, second)]
  assert len(halves[0]) == len(halves[1]) == 32  # 3 batches see every row
  assert not halves[0] & halves[1]

  # Same views (keys from global row indices), so the same training, up to
  # the summation order of the all-reduces (gloo vs in-process): about 1e-6
  # on the losses and 2e-5 on a few BatchNorm parameters after 3 steps.
  losses = _losses(two), _losses(one)
  assert sorted(losses[0]) == sorted(losses[1]) == [1, 2, 3]
  np.testing.assert_allclose(
    [losses[0][s] for s in (1, 2, 3)],
    [losses[1][s] for s in (1, 2, 3)],
    rtol=1e-5,
  )
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4),
    _params(two, 3),
    _params(one, 3),
  )

  proc = run_cli(
    "--config",
    "configs/default.py",
    "--workdir",
    str(two),
    *TINY,
    "--config.train_steps=4",
    devices=4,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "Resumed" in proc.stdout and "at step 3" in proc.stdout
  assert "step 4/4" in proc.stdout
  assert "4" in os.listdir(two / "checkpoints")


def test_unreachable_coordinator_is_a_clear_error(tmp_path):
  proc = _launch(
    tmp_path / "w", 1, 2, _free_port(), "--config.distributed.timeout_s=3"
  )
  out, err = proc.communicate(timeout=120)
  errors = [l for l in err.splitlines() if l.startswith("error:")]
  assert proc.returncode == 2, err[-2000:]
  assert len(errors) == 1 and "no coordinator answered" in errors[0]
  assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("pid, num", [(2, 2), (0, 0)])
def test_bad_process_ids(tmp_path, pid, num):
  proc = run_cli(
    "--config",
    "configs/default.py",
    "--workdir",
    str(tmp_path / "w"),
    "--config.distributed.coordinator_address=localhost:1",
    f"--config.distributed.num_processes={num}",
    f"--config.distributed.process_id={pid}",
  )
  assert_one_line_error(proc, "distinct process_id")


def _wait_for_line(proc, fragment, timeout=300):
  """Reads `proc`'s stdout until a line holds `fragment`; the lines read."""
  lines, deadline = [], time.time() + timeout
  while time.time() < deadline:
    line = proc.stdout.readline()
    if not line:
      break
    lines.append(line)
    if fragment in line:
      return lines
  raise AssertionError(f"no {fragment!r} in {''.join(lines)[-2000:]}")


@pytest.mark.slow
@pytest.mark.parametrize(
  "signum, statuses",
  [(signal.SIGTERM, (143, 143)), (signal.SIGINT, (143, 130))],
  ids=["SIGTERM", "SIGINT"],
)
def test_a_signal_to_one_process_stops_all_at_the_same_saved_step(
  tmp_path, signum, statuses
):
  # JAX's preemption service tells every process; they agree on one step,
  # save it together and exit with the SIGTERM status. Ctrl-C on one
  # process is handed to that service: that process exits as SIGINT does,
  # the others as SIGTERM.
  steps = 40
  args = [
    f"--config.train_steps={steps}",
    "--config.log_every_steps=1",
    "--config.checkpoint_every_steps=1000",
  ]
  port = _free_port()
  procs = [_launch(tmp_path, pid, 2, port, *args) for pid in (0, 1)]
  try:
    _wait_for_line(procs[0], f"step 3/{steps}")
    procs[1].send_signal(signum)
    outs = [p.communicate(timeout=300) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  saved = sorted(os.listdir(tmp_path / "checkpoints"))
  assert len(saved) == 1 and 3 <= int(saved[0]) < steps, saved
  for p, (_, err), status in zip(procs, outs, statuses):
    assert p.returncode == status, err[-3000:]
    assert "Traceback" not in err
    last = [l for l in err.splitlines() if l.strip()][-1]
    name = {130: "SIGINT", 143: "SIGTERM"}[status]
    assert last.startswith(
      f"{name}: pretraining stopped after step {saved[0]} of {steps}; "
      f"saved a checkpoint of step {saved[0]} in "
    ), err[-2000:]
