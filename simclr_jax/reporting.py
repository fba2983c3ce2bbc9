"""Progress lines on stdout; scalars in TensorBoard and metrics.jsonl.

Everything is written from process 0 only. `metrics.jsonl` in the workdir is
a plain append-only log, one JSON object per report (`{"step": int, "time":
unix seconds, name: value, ...}`), that `simclr_jax.plots` turns into PNGs
without TensorFlow. Each line is written and closed at once, so a crashed or
preempted run keeps its curve; a resumed run appends, and readers keep the
last value when a step repeats.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from typing import Callable, Mapping

import jax

from simclr_jax.training.input_wait import INPUT_WAIT_KEY

METRICS_FILE = "metrics.jsonl"
# Images this process skipped so far because they could not be decoded.
UNREADABLE_KEY = "unreadable_skipped"


def format_duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def print_main(message: str) -> None:
  """Prints one line on stdout, flushed, from process 0 only (how every
  progress line and warning of a run is printed)."""
  if jax.process_index() == 0:
    print(message, flush=True, file=sys.stdout)


def resume_hint(call: str) -> str:
  """How to run this job again: "rerun `python -m simclr_jax.X ...`" when it
  was started from the command line, else "call CALL again with ..."."""
  argv0 = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
  package = os.path.dirname(os.path.abspath(__file__))
  if os.path.dirname(argv0) == package and argv0.endswith(".py"):
    module = os.path.splitext(os.path.basename(argv0))[0]
    argv = ["python", "-m", f"simclr_jax.{module}", *sys.argv[1:]]
    return f"rerun `{shlex.join(argv)}`"
  return f"call {call} again with the same config and workdir"


class Reporter:
  """Writes metrics to TensorBoard and metrics.jsonl, and a human progress
  line to stdout; `on_report(step, scalars)`, if given, sees every record.

  Throughput and ETA come from the interval since the previous report (the
  first interval also holds compilation, so its ETA is pessimistic).
  """

  def __init__(
    self,
    workdir: str,
    *,
    total_steps: int,
    batch_size: int,
    start_step: int = 0,
    on_report: Callable[[int, Mapping[str, float]], None] | None = None,
  ):
    self.is_main = jax.process_index() == 0
    self.on_report = on_report if self.is_main else None
    self.total_steps = total_steps
    self.batch_size = batch_size
    self._writer = None
    self._metrics_path = None
    if self.is_main:
      # clu pulls in TensorFlow; importing it here keeps `simclr_jax.plots`
      # (which only needs METRICS_FILE) quick to start.
      from clu import metric_writers  # pylint: disable=g-import-not-at-top

      self._writer = metric_writers.SummaryWriter(workdir)
      self._metrics_path = os.path.join(workdir, METRICS_FILE)
    self._last_step = start_step
    self._last_time = time.time()
    self._rate = None  # steps / second

  def start_at(self, step: int) -> None:
    """Training (re)starts at `step` now: the next report's throughput and
    ETA count from here (a resumed downstream trainer learns its step only
    after it restored)."""
    self._last_step, self._last_time = step, time.time()

  def print(self, message: str) -> None:
    if self.is_main:
      print_main(message)

  def report(self, step: int, metrics: Mapping[str, float]) -> None:
    now = time.time()
    steps = step - self._last_step
    if steps > 0:
      self._rate = steps / max(now - self._last_time, 1e-9)
    self._last_step, self._last_time = step, now
    scalars = dict(metrics)
    if self._rate:
      scalars["images_per_sec"] = self._rate * self.batch_size
    self._write(step, scalars, now)
    pct = 100.0 * step / max(self.total_steps, 1)
    parts = [f"step {step}/{self.total_steps} ({pct:4.1f}%)"]
    for key in (
      "contrastive_loss",
      "contrast_acc",
      "contrast_entropy",
      "probe_acc",
      "learning_rate",
    ):
      if key in metrics:
        parts.append(f"{key} {metrics[key]:.4g}")
    if INPUT_WAIT_KEY in metrics:  # a share: two decimals read best
      parts.append(f"{INPUT_WAIT_KEY} {metrics[INPUT_WAIT_KEY]:.2f}")
    if metrics.get(UNREADABLE_KEY):
      parts.append(f"{int(metrics[UNREADABLE_KEY])} unreadable images skipped")
    if self._rate:
      eta = (self.total_steps - step) / self._rate
      parts.append(f"{scalars['images_per_sec']:.0f} img/s")
      parts.append(f"ETA {format_duration(eta)}")
    self.print(" | ".join(parts))

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    """Writes extra scalars (eval, monitors) without a progress line."""
    self._write(step, dict(scalars), time.time())

  def _write(self, step: int, scalars: dict[str, float], now: float) -> None:
    if self._writer is None:
      return
    self._writer.write_scalars(step, scalars)
    record = {"step": int(step), "time": round(now, 3)}
    for key, value in scalars.items():
      record.setdefault(key, float(value))
    # Opened per line: the line is in the file even if the process dies next.
    with open(self._metrics_path, "a", encoding="utf-8") as f:
      f.write(json.dumps(record) + "\n")
    if self.on_report is not None:
      self.on_report(int(step), {k: float(v) for k, v in scalars.items()})

  def flush(self) -> None:
    """Puts what was written so far in the TensorBoard files."""
    if self._writer is not None:
      self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.flush()
      self._writer.close()
