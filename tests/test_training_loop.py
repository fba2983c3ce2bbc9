"""The one step loop: log cadence and means, NaN check, batch checks, hooks."""

import numpy as np
import pytest

from simclr_jax.errors import UserError
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
    UserError, match=r"the fine-tuning loss became nan by step 2; lower it"
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


def test_mean_metrics_averages_on_the_host():
  means = loop.mean_metrics([{"a": 1.0, "b": 2}, {"a": 3.0, "b": 4}])
  assert means == {"a": 2.0, "b": 3.0}
  assert all(isinstance(v, float) for v in means.values())
