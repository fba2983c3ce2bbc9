"""Several processes on one machine through jax.distributed (gloo on CPU)."""

import os
import socket
import subprocess
import sys

import pytest

from test_main import ROOT, TINY, assert_one_line_error, run_cli


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _launch(workdir, pid, num, port, *extra, devices=2):
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["JAX_PLATFORMS"] = "cpu"
  args = [sys.executable, "-m", "simclr_jax.main", "--config",
          "configs/default.py", "--workdir", str(workdir), *TINY,
          f"--config.distributed.coordinator_address=localhost:{port}",
          f"--config.distributed.num_processes={num}",
          f"--config.distributed.process_id={pid}",
          "--config.distributed.timeout_s=60", *extra]
  return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def test_two_processes_train_and_one_process_resumes(tmp_path):
  workdir = tmp_path / "run"
  port = _free_port()
  procs = [_launch(workdir, pid, 2, port, "--config.train_steps=2",
                   "--config.log_every_steps=1",
                   "--config.checkpoint_every_steps=2") for pid in (0, 1)]
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  # Only process 0 reports; it sees 4 devices over 2 processes.
  assert "on 4 cpu device(s), 2 process(es)" in outs[0][0]
  assert "step 2/2" in outs[0][0] and "step" not in outs[1][0]
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2"]

  proc = run_cli("--config", "configs/default.py", "--workdir", str(workdir),
                 *TINY, "--config.train_steps=3", devices=4)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "Resumed" in proc.stdout and "at step 2" in proc.stdout
  assert "step 3/3" in proc.stdout
  assert "3" in os.listdir(workdir / "checkpoints")


def test_unreachable_coordinator_is_a_clear_error(tmp_path):
  proc = _launch(tmp_path / "w", 1, 2, _free_port(),
                 "--config.distributed.timeout_s=3")
  out, err = proc.communicate(timeout=120)
  errors = [l for l in err.splitlines() if l.startswith("error:")]
  assert proc.returncode == 2, err[-2000:]
  assert len(errors) == 1 and "no coordinator answered" in errors[0]
  assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("pid, num", [(2, 2), (0, 0)])
def test_bad_process_ids(tmp_path, pid, num):
  proc = run_cli("--config", "configs/default.py", "--workdir",
                 str(tmp_path / "w"),
                 "--config.distributed.coordinator_address=localhost:1",
                 f"--config.distributed.num_processes={num}",
                 f"--config.distributed.process_id={pid}")
  assert_one_line_error(proc, "distinct process_id")
