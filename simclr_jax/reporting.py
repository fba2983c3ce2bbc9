"""Progress lines on stdout and scalars in TensorBoard, from process 0 only."""

from __future__ import annotations

import sys
import time
from typing import Mapping

import jax
from clu import metric_writers


def format_duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class Reporter:
  """Writes metrics to TensorBoard and a human progress line to stdout.

  Throughput and ETA come from the interval since the previous report (the
  first interval also holds compilation, so its ETA is pessimistic).
  """

  def __init__(self, workdir: str, *, total_steps: int, batch_size: int,
               start_step: int = 0):
    self.is_main = jax.process_index() == 0
    self.total_steps = total_steps
    self.batch_size = batch_size
    self._writer = (metric_writers.SummaryWriter(workdir) if self.is_main
                    else None)
    self._last_step = start_step
    self._last_time = time.time()
    self._rate = None  # steps / second

  def print(self, message: str) -> None:
    if self.is_main:
      print(message, flush=True, file=sys.stdout)

  def report(self, step: int, metrics: Mapping[str, float]) -> None:
    now = time.time()
    steps = step - self._last_step
    if steps > 0:
      self._rate = steps / max(now - self._last_time, 1e-9)
    self._last_step, self._last_time = step, now
    scalars = dict(metrics)
    if self._rate:
      scalars["images_per_sec"] = self._rate * self.batch_size
    if self._writer is not None:
      self._writer.write_scalars(step, scalars)
    pct = 100.0 * step / max(self.total_steps, 1)
    parts = [f"step {step}/{self.total_steps} ({pct:4.1f}%)"]
    for key in ("contrastive_loss", "contrast_acc", "contrast_entropy",
                "probe_acc", "learning_rate"):
      if key in metrics:
        parts.append(f"{key} {metrics[key]:.4g}")
    if self._rate:
      eta = (self.total_steps - step) / self._rate
      parts.append(f"{scalars['images_per_sec']:.0f} img/s")
      parts.append(f"ETA {format_duration(eta)}")
    self.print(" | ".join(parts))

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    if self._writer is not None:
      self._writer.write_scalars(step, dict(scalars))

  def close(self) -> None:
    if self._writer is not None:
      self._writer.flush()
      self._writer.close()
