"""The NaN guard of the step loop: nothing non-finite is ever saved.

Metrics stay on the device until a log or a save needs them; then every
step's metrics since the last check, and the train state itself (a loss can
still be finite on the step whose update made the parameters NaN), are
checked. The first failure is a `NonFinite` error that says what went
non-finite first, where, at which learning rate, and what to resume from.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from simclr_jax.errors import UserError
from simclr_jax.training.resume import Saver


class NonFinite(UserError):
  """A metric or the state became NaN/inf; nothing non-finite was saved.

  `step`: the first step seen non-finite; `metric`: the metric that was
  (None when only the state was); `learning_rate` at that step (None if not
  reported); `resume_step`: the newest checkpoint (finite), or None.
  """

  def __init__(
    self,
    message: str,
    *,
    step: int,
    metric: str | None,
    learning_rate: float | None,
    resume_step: int | None,
  ):
    super().__init__(message)
    self.step, self.metric = step, metric
    self.learning_rate, self.resume_step = learning_rate, resume_step


@jax.jit
def _all_finite(tree: Any) -> jax.Array:
  leaves = [
    jnp.all(jnp.isfinite(x))
    for x in jax.tree.leaves(tree)
    if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)
  ]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def state_is_finite(state: Any) -> bool:
  """Whether every floating-point leaf of `state` is finite (one scalar
  comes back to the host)."""
  return bool(_all_finite(state))


class FiniteGuard:
  """Collects each step's metrics (`add`) and checks them with the state
  (`check`) before a log or a save."""

  def __init__(
    self, loss_key: str, what: str, advice: str, saver: Saver | None
  ):
    self.loss_key, self.what, self.advice = loss_key, what, advice
    self.saver = saver
    self._pending: list[tuple[int, dict]] = []  # on the device, unchecked
    self._window: list[dict] = []  # host values since the last log
    self._last_step = 0

  def add(self, step: int, metrics: dict) -> None:
    self._pending.append((step, metrics))
    self._last_step = step

  def check(self, state: Any, window: bool = True) -> dict[str, float]:
    """Raises NonFinite if a pending metric or `state` is not finite.
    With `window`, returns the host means since the last such call and
    starts a new window (a log); otherwise returns {} (a save)."""
    if self._pending:
      host = jax.device_get([m for _, m in self._pending])
      for (step, _), values in zip(self._pending, host):
        self._check_metrics(step, values)
      self._window.extend(host)
      self._pending.clear()
    if not state_is_finite(state):
      self._raise(self._last_step, None, self._window[-1:])
    if not window or not self._window:
      return {}
    keys = self._window[0]
    means = {k: float(np.mean([h[k] for h in self._window])) for k in keys}
    self._window.clear()
    return means

  def _check_metrics(self, step: int, values: dict) -> None:
    bad = [k for k, v in values.items() if not np.all(np.isfinite(v))]
    if bad:
      bad.sort(key=lambda k: (k != self.loss_key, k))
      self._raise(step, bad, [values])

  def _raise(self, step: int, bad: list[str] | None, values: list) -> None:
    lr = values[-1].get("learning_rate") if values else None
    lr = float(lr) if lr is not None and math.isfinite(float(lr)) else None
    if bad:
      first = bad[0]
      head = (
        f"the {self.what} {'loss' if first == self.loss_key else first} "
        f"became {float(np.ravel(values[-1][first])[0])} at step {step}"
      )
      if len(bad) > 1:
        head += f" (with {', '.join(bad[1:])})"
    else:
      head = (
        f"the {self.what} parameters or optimiser state became non-finite "
        f"by step {step} while every metric was still finite"
      )
    if lr is not None:
      head += f", learning rate {lr:.4g}"
    resume = self.saver.latest_step() if self.saver is not None else None
    if self.saver is None:
      saved = "nothing was saved"
    elif resume is None:
      saved = "nothing non-finite was saved (no checkpoint yet)"
    else:
      saved = (
        f"nothing non-finite was saved: the newest checkpoint, step "
        f"{resume} in {self.saver.directory}, is finite to resume from"
      )
    raise NonFinite(
      f"{head}; {saved}; {self.advice}",
      step=step,
      metric=bad[0] if bad else None,
      learning_rate=lr,
      resume_step=resume,
    )
