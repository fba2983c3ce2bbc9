"""The profiler trace of `config.profile_steps`: which steps, where, and that
it is stopped however the loop ends."""

import glob
import gzip
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simclr_jax.errors import UserError
from simclr_jax.training import loop
from simclr_jax.training import profiling


@jax.jit
def _jitted(state, x):
  return state + 1, {"loss": jnp.mean(x) + 0.0 * state}


def _step(state, batch):
  return _jitted(state, batch["x"])


def _batches(n):
  for _ in range(n):
    yield {"x": np.ones((4,), np.float32)}


def _run(trace, steps=6, log_every=2, step_fn=_step):
  return loop.run_steps(
    step_fn,
    jnp.zeros(()),
    _batches(steps),
    first_step=1,
    last_step=steps,
    log_every=log_every,
    loss_key="loss",
    nan_advice="",
    trace=trace,
  )


def _traced_steps(log_dir):
  """The step numbers annotated in the trace(s) under `log_dir`."""
  steps = set()
  pattern = os.path.join(log_dir, "plugins", "profile", "*", "*.trace.json.gz")
  for path in glob.glob(pattern):
    with gzip.open(path) as f:
      events = json.load(f)["traceEvents"]
    steps |= {
      int(e["args"]["step_num"])
      for e in events
      if e.get("name") == "train" and "step_num" in e.get("args", {})
    }
  return steps


def _xplanes(log_dir):
  return glob.glob(os.path.join(log_dir, "**", "*.xplane.pb"), recursive=True)


def test_traces_the_steps_after_the_first_report(tmp_path, capsys):
  trace = profiling.for_run(str(tmp_path), 2)
  log_dir = str(tmp_path / profiling.PROFILE_DIR)
  _run(trace)
  assert _xplanes(log_dir)
  # Steps 1-2 (compilation) are the first window: traced are 3 and 4 only.
  assert _traced_steps(log_dir) == {3, 4}
  (line,) = capsys.readouterr().out.strip().splitlines()
  assert line.startswith("Profiler trace of steps 3-4 written to " + log_dir)
  assert f"`tensorboard --logdir {log_dir}`" in line


def test_zero_steps_or_another_process_trace_nothing(tmp_path, monkeypatch):
  assert profiling.for_run(str(tmp_path), 0) is None
  _run(profiling.for_run(str(tmp_path), 0))
  assert os.listdir(tmp_path) == []
  monkeypatch.setattr(profiling.jax, "process_index", lambda: 1)
  assert profiling.for_run(str(tmp_path), 3) is None


def test_trace_is_stopped_when_training_raises(tmp_path, capsys):
  def failing(state, batch):
    if int(state) == 3:  # step 4, inside the trace of steps 3-5
      raise UserError("boom")
    return _step(state, batch)

  log_dir = str(tmp_path / "profile")
  with pytest.raises(UserError, match="boom"):
    _run(profiling.StepTrace(log_dir, 3), step_fn=failing)
  assert _xplanes(log_dir) and _traced_steps(log_dir) == {3, 4}  # 4 began
  assert "Profiler trace of steps 3-4 written" in capsys.readouterr().out
  jax.profiler.start_trace(str(tmp_path / "again"))  # none is running now
  jax.profiler.stop_trace()


def test_a_run_of_one_report_says_there_was_nothing_to_trace(tmp_path, capsys):
  log_dir = str(tmp_path / "profile")
  _run(profiling.StepTrace(log_dir, 2), steps=2, log_every=2)
  assert not os.path.exists(log_dir)
  assert "No profiler trace" in capsys.readouterr().out


def test_trace_longer_than_the_run_stops_at_the_end(tmp_path, capsys):
  log_dir = str(tmp_path / "profile")
  _run(profiling.StepTrace(log_dir, 10), steps=4, log_every=2)
  assert _traced_steps(log_dir) == {3, 4}
  assert "steps 3-4 written" in capsys.readouterr().out


def test_the_last_traced_step_finishes_before_the_trace_stops(
  tmp_path, monkeypatch
):
  """JAX dispatches asynchronously: stopping at once would cut off the
  device's work on the last traced steps."""
  events = []

  class Output:
    def block_until_ready(self):
      events.append("step finished")
      return self

  trace = profiling.StepTrace(str(tmp_path), 1)
  trace.start(2)
  monkeypatch.setattr(
    profiling.jax.profiler,
    "stop_trace",
    lambda real=jax.profiler.stop_trace: events.append("stopped") or real(),
  )
  trace.step_done(3, {"loss": Output()})
  assert events == ["step finished", "stopped"]
