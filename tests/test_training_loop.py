"""The one step loop: log cadence and means, NaN check, batch checks, hooks,
and the input-wait meter and its warning."""

import os
import signal
import threading
import time

import jax
import numpy as np
import pytest

from simclr_jax.errors import UserError
from simclr_jax.training import input_wait
from simclr_jax.training import loop


def _step(state, batch):
  """Counts steps; the 'loss' is the batch's first value."""
  return state + 1, {"loss": float(batch["x"][0]), "one": 1.0}


def _batches(values, rows=4):
  for v in values:
    yield {"x": np.full((rows,), v, np.float32)}


def test_logs_means_every_log_every_steps_and_at_the_end():
  logs, seen = [], []
  state, last = loop.run_steps(
    _step,
    0,
    _batches([1, 2, 3, 4, 5]),
    first_step=1,
    last_step=5,
    log_every=2,
    loss_key="loss",
    nan_advice="",
    log_fn=lambda step, means: logs.append((step, means)),
    after_step=lambda step, state: seen.append((step, state)),
  )
  assert (state, last) == (5, 5)
  for _, means in logs:
    assert 0.0 <= means.pop(loop.INPUT_WAIT_KEY) <= 1.0
  assert logs == [
    (2, {"loss": 1.5, "one": 1.0}),
    (4, {"loss": 3.5, "one": 1.0}),
    (5, {"loss": 5.0, "one": 1.0}),
  ]
  assert seen == [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]


def test_resumed_range_counts_from_first_step():
  logs = []
  _, last = loop.run_steps(
    _step,
    0,
    _batches([7, 8]),
    first_step=9,
    last_step=10,
    log_every=10,
    loss_key="loss",
    nan_advice="",
    log_fn=lambda step, means: logs.append(step),
  )
  assert last == 10 and logs == [10]


def test_no_steps_left_returns_the_state_untouched():
  state, last = loop.run_steps(
    _step, 3, iter(()), first_step=6, last_step=5, log_every=1,
    loss_key="loss", nan_advice="",
  )  # fmt: skip
  assert (state, last) == (3, 5)


def test_non_finite_loss_is_one_user_error_with_advice():
  with pytest.raises(
    UserError,
    match=r"the fine-tuning loss became nan at step 2; nothing was saved; "
    "lower it",
  ):
    loop.run_steps(
      _step, 0, _batches([1, np.nan, 3]), first_step=1, last_step=3,
      log_every=2, loss_key="loss", nan_advice="lower it",
      what="fine-tuning",
    )  # fmt: skip


def test_batches_that_run_out_or_change_size_are_user_errors():
  with pytest.raises(UserError, match="ran out after 2 of 3 steps"):
    loop.run_steps(
      _step, 0, _batches([1, 2]), first_step=1, last_step=3, log_every=1,
      loss_key="loss", nan_advice="",
    )  # fmt: skip
  with pytest.raises(UserError, match="global batch of 4 .* batch_size=8"):
    loop.run_steps(
      _step, 0, _batches([1]), first_step=1, last_step=1, log_every=1,
      loss_key="loss", nan_advice="", batch_size=8,
    )  # fmt: skip
  with pytest.raises(UserError, match="log_every must be >= 1"):
    loop.run_steps(
      _step, 0, _batches([1]), first_step=1, last_step=1, log_every=0,
      loss_key="loss", nan_advice="",
    )  # fmt: skip


# ------------------------------------------------------------ input wait ---

# Seconds: a slow input, or a slow step; long enough that the loop's own
# overhead stays small beside it on a loaded 2-core machine (at 0.03 s a
# first window measured 0.74 there).
PAUSE = 0.1


def _run(step_fn, batches, *, steps, log_every):
  """The fractions `run_steps` logs, per window."""
  logs = []
  loop.run_steps(
    step_fn,
    0,
    batches,
    first_step=1,
    last_step=steps,
    log_every=log_every,
    loss_key="loss",
    nan_advice="",
    log_fn=lambda step, means: logs.append(means[loop.INPUT_WAIT_KEY]),
  )
  return logs


class _SlowBatches:
  """Batches that each take `pause` seconds to arrive."""

  def __init__(self, pause):
    self.pause = pause

  def __iter__(self):
    return self

  def __next__(self):
    time.sleep(self.pause)
    return {"x": np.ones((4,), np.float32)}


def _warnings(out):
  return [line for line in out.splitlines() if line.startswith("warning: ")]


def test_slow_input_is_nearly_all_wait_and_warns_once(capsys):
  fractions = _run(_step, _SlowBatches(PAUSE), steps=9, log_every=3)
  assert len(fractions) == 3 and all(f > 0.8 for f in fractions), fractions
  (line,) = _warnings(capsys.readouterr().out)  # windows 2 and 3: once
  # The second window's own fraction, two decimals (it can round to 1.00).
  assert f"input_wait_fraction {fractions[1]:.2f} at step 6:" in line
  for knob in ("data.cache", "data.host_size", "data.num_shards"):
    assert f"config.{knob}" in line


def test_first_window_does_not_warn(capsys):
  """It holds compilation and the pipeline's warm-up."""
  (fraction,) = _run(_step, _SlowBatches(PAUSE), steps=3, log_every=3)
  assert fraction > 0.8
  assert _warnings(capsys.readouterr().out) == []


def test_only_process_zero_warns(capsys, monkeypatch):
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  fractions = _run(_step, _SlowBatches(PAUSE), steps=6, log_every=3)
  assert fractions[1] > 0.8
  assert capsys.readouterr().out == ""


def test_slow_step_with_fast_input_is_no_wait(capsys):
  def slow_step(state, batch):
    time.sleep(PAUSE)
    return _step(state, batch)

  fractions = _run(slow_step, _batches(range(9)), steps=9, log_every=3)
  assert all(f < 0.05 for f in fractions), fractions
  assert _warnings(capsys.readouterr().out) == []


class _Pending:
  """A step output the "device" finishes at `ready_at` (as JAX's async
  dispatch returns before the step has run); `fail` raises on waiting."""

  def __init__(self, value, ready_at, fail=False):
    self.value, self.ready_at, self.fail = value, ready_at, fail

  def block_until_ready(self):
    time.sleep(max(0.0, self.ready_at - time.perf_counter()))
    if self.fail:
      raise RuntimeError("the device failed")
    return self

  def __array__(self, dtype=None, copy=None):
    time.sleep(max(0.0, self.ready_at - time.perf_counter()))
    return np.asarray(self.value, dtype)


def _async_step(compute, fail_at=0):
  """A step dispatched to a one-at-a-time "device" taking `compute` s."""
  busy_until = [0.0]

  def step(state, batch):
    start = max(time.perf_counter(), busy_until[0])
    busy_until[0] = start + compute
    out = _Pending(1.0, busy_until[0], fail=state + 1 == fail_at)
    return state + 1, {"loss": out}

  return step


def test_input_fetched_while_the_device_computes_is_no_wait(capsys):
  """The host fetches (PAUSE) while the previous step still runs on the
  device (3 x PAUSE): the device waits only after the sync of a report,
  though the host waits for a third of the time."""
  fractions = _run(
    _async_step(3 * PAUSE), _SlowBatches(PAUSE), steps=16, log_every=8
  )
  assert fractions[1] < 0.1, fractions
  assert _warnings(capsys.readouterr().out) == []


def test_an_error_waiting_for_a_step_is_raised_not_hidden():
  with pytest.raises(RuntimeError, match="the device failed"):
    _run(_async_step(0.0, fail_at=2), _batches(range(4)), steps=4, log_every=2)


def test_the_meter_thread_is_a_daemon_and_stops_with_the_loop():
  started = []
  real = input_wait.threading.Thread

  def spy(*args, **kwargs):
    thread = real(*args, **kwargs)
    started.append(thread)
    return thread

  input_wait.threading.Thread = spy
  try:
    _run(_step, _batches(range(2)), steps=2, log_every=1)
  finally:
    input_wait.threading.Thread = real
  (thread,) = started
  assert thread.daemon and not thread.is_alive()
  with pytest.raises(UserError, match="ran out"):  # stopped on errors too
    _run(_step, _batches(range(1)), steps=2, log_every=1)
  assert not [t for t in threading.enumerate() if t.name == "input_wait_meter"]


# --------------------------------------------- saving, NaN, stop requests ---


class _Saver:
  """Records what the loop saves (the loop's Saver protocol)."""

  directory = "/runs/x/checkpoints"

  def __init__(self, every):
    self.every, self.saved = every, []

  def due(self, step):
    return step % self.every == 0

  def save(self, step, state):
    self.saved.append((step, state))

  def latest_step(self):
    return self.saved[-1][0] if self.saved else None


def _float_step(state, batch):
  """The state is the running sum of the batch values (NaN propagates);
  the metrics are the batch value and a learning rate."""
  value = float(batch["x"][0])
  return state + value, {"loss": value, "learning_rate": 0.5}


def _saving_run(values, *, log_every, every, step_fn=_float_step, **kw):
  saver = _Saver(every)
  out = loop.run_steps(
    step_fn, np.float32(0), _batches(values), first_step=1,
    last_step=len(values), log_every=log_every, loss_key="loss",
    nan_advice="resume with a lower lr.", saver=saver, **kw,
  )  # fmt: skip
  return saver, out


def test_saves_when_due_and_at_the_last_step():
  saver, (state, last) = _saving_run([1, 2, 3, 4, 5], log_every=2, every=2)
  assert [s for s, _ in saver.saved] == [2, 4, 5]
  assert (state, last) == (15, 5)


@pytest.mark.parametrize("log_every,every", [(100, 1), (1, 100), (3, 2)])
def test_a_non_finite_loss_is_never_saved(log_every, every):
  values = [1, 2, 3, 4, np.nan, 6, 7, 8]
  saver = _Saver(every)
  with pytest.raises(loop.NonFinite) as info:
    loop.run_steps(
      _float_step, np.float32(0), _batches(values), first_step=1,
      last_step=8, log_every=log_every, loss_key="loss",
      nan_advice="resume with a lower lr.", saver=saver,
    )  # fmt: skip
  assert all(np.isfinite(state) for _, state in saver.saved)
  assert all(step < 5 for step, _ in saver.saved)
  e = info.value
  assert (e.step, e.metric, e.learning_rate) == (5, "loss", 0.5)
  assert e.resume_step == saver.latest_step()
  message = str(e)
  assert "the training loss became nan at step 5, learning rate 0.5" in message
  if e.resume_step is None:
    assert "(no checkpoint yet)" in message
  else:
    assert f"step {e.resume_step} in /runs/x/checkpoints" in message
  assert message.endswith("resume with a lower lr.")


def test_a_non_finite_state_with_a_finite_loss_is_not_saved():
  def step(state, batch):  # the update at step 3 makes the state NaN
    value = float(batch["x"][0])
    return (np.float32(np.nan) if value == 3 else state + value), {"loss": 1.0}

  saver = _Saver(1)
  with pytest.raises(loop.NonFinite, match="state became non-finite by "
                     "step 3 while every metric was still finite"):  # fmt: skip
    loop.run_steps(
      step, np.float32(0), _batches([1, 2, 3, 4]), first_step=1,
      last_step=4, log_every=10, loss_key="loss", nan_advice="", saver=saver,
    )  # fmt: skip
  assert [s for s, _ in saver.saved] == [1, 2]


def test_the_first_non_finite_metric_is_named():
  def step(state, batch):
    value = float(batch["x"][0])
    return state, {"loss": 1.0 if value < 2 else np.nan,
                   "grad_norm": 1.0 if value < 2 else np.inf}  # fmt: skip

  with pytest.raises(loop.NonFinite, match=r"loss became nan at step 2 "
                     r"\(with grad_norm\)"):  # fmt: skip
    _saving_run([1, 2, 3], log_every=1, every=1, step_fn=step)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_the_current_step_and_stops(signum, capsys):
  before = signal.getsignal(signum)
  seen = []

  def step(state, batch):
    if state == 3:  # during step 4
      os.kill(os.getpid(), signum)
      seen.append(signal.getsignal(signum))
    return _float_step(state, batch)

  saver = _Saver(100)
  with pytest.raises(loop.preemption.Interrupted) as info:
    loop.run_steps(
      step, np.float32(0), _batches([1] * 10), first_step=1, last_step=10,
      log_every=100, loss_key="loss", nan_advice="", saver=saver,
      resume_hint="rerun `cmd`", what="pretraining",
    )  # fmt: skip
  assert [s for s, _ in saver.saved] == [4]
  # The second signal would get the default action: exit at once.
  assert seen == [signal.SIG_DFL]
  assert signal.getsignal(signum) == before  # restored after the loop
  name = signal.Signals(signum).name
  assert str(info.value) == (
    f"{name}: pretraining stopped after step 4 of 10; saved a checkpoint of "
    "step 4 in /runs/x/checkpoints; rerun `cmd` to resume."
  )
  assert info.value.exit_status == {"SIGINT": 130, "SIGTERM": 143}[name]
  assert f"Received {name}: finishing the current" in capsys.readouterr().err


def test_a_signal_without_a_saver_says_nothing_was_saved():
  def step(state, batch):
    os.kill(os.getpid(), signal.SIGTERM)
    return state + 1, {"loss": 1.0}

  with pytest.raises(loop.preemption.Interrupted, match="stopped after step "
                     "1 of 3; nothing was saved; go again to start it again"):  # fmt: skip
    loop.run_steps(
      step, 0, _batches([1, 2, 3]), first_step=1, last_step=3, log_every=1,
      loss_key="loss", nan_advice="", resume_hint="go again",
    )  # fmt: skip


def test_a_signal_on_the_last_step_just_finishes():
  def step(state, batch):
    if state == 2:
      os.kill(os.getpid(), signal.SIGTERM)
    return _float_step(state, batch)

  saver, (state, last) = _saving_run([1, 1, 1], log_every=1, every=10,
                                     step_fn=step)  # fmt: skip
  assert last == 3 and [s for s, _ in saver.saved] == [3]
