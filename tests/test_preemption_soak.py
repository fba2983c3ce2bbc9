"""Soak: a tiny CLI run stopped at several points (SIGTERM, SIGINT, kill -9
during a checkpoint write, a second SIGTERM) and resumed with the same
command ends bit-identical to an uninterrupted run."""

import os
import re
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from helpers import ROOT, TINY_DOWNSTREAM, TINY_RUN

pytestmark = pytest.mark.slow

STEPS = 10
# The tiny model of helpers.TINY_RUN, for more steps, logging every one.
ARGS = [
  "--config", "configs/default.py",
  *(a for a in TINY_RUN if not a.startswith("--config.train_steps=")),
  f"--config.train_steps={STEPS}",
  "--config.log_every_steps=1",
  "--config.keep_checkpoints=3",
]  # fmt: skip


class _Run:
  """The CLI in a subprocess, its stdout read by a thread as it comes
  (`args`: pretraining's by default; `steps`: its step count)."""

  def __init__(self, workdir, every, args=ARGS, steps=STEPS):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    self.steps = steps
    self.argv = [
      sys.executable, "-m", "simclr_jax.main", *args,
      "--workdir", str(workdir), f"--config.checkpoint_every_steps={every}",
    ]  # fmt: skip
    self.proc = subprocess.Popen(
      self.argv, cwd=ROOT, env=env, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    self.lines = []
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()

  def _read(self):
    for line in self.proc.stdout:
      self.lines.append(line)

  def wait_for_step(self, step, timeout=300):
    deadline = time.time() + timeout
    pattern = re.compile(rf"^step {step}/{self.steps} ")
    while time.time() < deadline:
      if any(pattern.match(l) for l in self.lines):
        return
      assert self.proc.poll() is None, self.proc.stderr.read()[-3000:]
      time.sleep(0.02)
    raise AssertionError(f"no step {step} within {timeout}s")

  def finish(self, timeout=300):
    rc = self.proc.wait(timeout=timeout)
    self._reader.join(timeout=10)
    return rc, self.proc.stderr.read()


def _final_state(workdir, steps=STEPS):
  path = os.path.join(workdir, "checkpoints", str(steps), "default")
  return ocp.StandardCheckpointer().restore(path)


def _resume_and_compare(workdir, straight, args=ARGS, steps=STEPS):
  rc, err = _Run(workdir, every=5, args=args, steps=steps).finish()
  assert rc == 0, err[-3000:]
  assert "Traceback" not in err
  got, want = _final_state(workdir, steps), straight
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("straight")
  rc, err = _Run(workdir, every=5).finish()
  assert rc == 0, err[-3000:]
  return _final_state(workdir)


@pytest.mark.parametrize(
  "signum,at,status", [(signal.SIGTERM, 3, 143), (signal.SIGINT, 7, 130)]
)
def test_a_signal_saves_exits_cleanly_and_resumes_exactly(
  tmp_path, straight, signum, at, status
):
  run = _Run(tmp_path, every=5)
  run.wait_for_step(at)
  sent = time.time()
  run.proc.send_signal(signum)
  rc, err = run.finish()
  seconds = time.time() - sent
  print(f"{signal.Signals(signum).name} to exit: {seconds:.2f} s")
  assert rc == status, err[-3000:]
  assert "Traceback" not in err
  lines = [l for l in err.splitlines() if l.strip()]
  name = signal.Signals(signum).name
  assert lines[0].startswith(f"Received {name}: finishing the current")
  last = lines[-1]
  match = re.fullmatch(
    rf"{name}: pretraining stopped after step (\d+) of {STEPS}; saved a "
    rf"checkpoint of step \1 in (\S+); rerun `(.+)` to resume\.",
    last,
  )
  assert match, err
  step = int(match.group(1))
  assert at <= step < STEPS
  assert os.path.isdir(os.path.join(match.group(2), str(step)))
  assert "--workdir" in match.group(3) and "simclr_jax.main" in match.group(3)
  _resume_and_compare(tmp_path, straight)


def test_kill_during_a_checkpoint_write_resumes_exactly(tmp_path, straight):
  run = _Run(tmp_path, every=1)
  ckpts = tmp_path / "checkpoints"
  killed_during_write = False
  while run.proc.poll() is None:
    names = os.listdir(ckpts) if ckpts.is_dir() else []
    if any("tmp" in n for n in names) and any(n == "3" for n in names):
      run.proc.kill()
      killed_during_write = True
      break
    time.sleep(0.001)
  rc, _ = run.finish()
  assert killed_during_write and rc == -signal.SIGKILL
  _resume_and_compare(tmp_path, straight)


def test_a_second_signal_exits_at_once(tmp_path, straight):
  run = _Run(tmp_path, every=1)
  run.wait_for_step(4)
  run.proc.send_signal(signal.SIGTERM)
  time.sleep(0.05)
  sent = time.time()
  run.proc.send_signal(signal.SIGTERM)
  rc, _ = run.finish()
  assert time.time() - sent < 5
  # Either the second signal ended it (default action) or the first had
  # already finished saving and exiting.
  assert rc in (-signal.SIGTERM, 143)
  _resume_and_compare(tmp_path, straight)


# Downstream trainers on a finished pretraining run: 128 training images,
# batch 16, 2 epochs = 17 steps (fine-tuning: on its labelled subset).
DOWNSTREAM = {
  "linear": ("linear evaluation", ["--config.linear_eval.epochs=2"]),
  "finetune": (
    "fine-tuning",
    ["--config.finetune.epochs=4", "--config.finetune.label_fraction=0.5"],
  ),
}


def _downstream_args(run_dir, mode):
  return [
    "--config", "configs/default.py", f"--config.mode={mode}",
    f"--config.init_checkpoint={run_dir}", *TINY_DOWNSTREAM,
    *DOWNSTREAM[mode][1], "--config.log_every_steps=1",
  ]  # fmt: skip


@pytest.mark.parametrize("mode", sorted(DOWNSTREAM))
def test_a_stopped_downstream_trainer_resumes_exactly(tiny_run, tmp_path, mode):
  args = _downstream_args(tiny_run, mode)
  straight = _Run(tmp_path / "straight", every=5, args=args, steps=0)
  rc, err = straight.finish()
  assert rc == 0, err[-3000:]
  steps = max(int(n) for n in os.listdir(tmp_path / "straight/checkpoints"))
  want = _final_state(tmp_path / "straight", steps)

  run = _Run(tmp_path / "stopped", every=5, args=args, steps=steps)
  run.wait_for_step(3)
  run.proc.send_signal(signal.SIGTERM)
  rc, err = run.finish()
  assert rc == 143 and "Traceback" not in err, err[-3000:]
  what = DOWNSTREAM[mode][0]
  assert re.search(
    rf"^SIGTERM: {what} stopped after step \d+ of {steps}; saved a "
    r"checkpoint of step \d+ in \S+; rerun `python -m simclr_jax.main .+` "
    r"to resume\.$",
    err.strip().splitlines()[-1],
  ), err[-3000:]
  _resume_and_compare(tmp_path / "stopped", want, args=args, steps=steps)
