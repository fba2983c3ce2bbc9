"""The kNN monitor is a configured kNN evaluator: its schedule, its k and
its bank size come from config.eval (a full run is in test_pretrain_run)."""

from simclr_jax import configlib
from simclr_jax import data
from simclr_jax import sharding
from simclr_jax.eval import monitor
from simclr_jax.eval.base import EvalContext

from helpers import tiny_config

INFO = data.DatasetInfo(
  num_train=1280, num_eval=64, num_classes=10, class_names=tuple("abcdefghij")
)


def _monitor(info=INFO, **eval_fields):
  config = tiny_config()  # batch 32
  for k, v in eval_fields.items():
    config.eval[k] = v
  run = configlib.build(config, device_count=8)
  ctx = EvalContext.for_run(run, info, sharding.make_mesh())
  return monitor.from_config(run, ctx, feature_fn=None)


def test_largest_k_bank_cap_and_schedule_in_steps():
  m = _monitor(
    knn_ks=(20, 200, 5),
    monitor_every_epochs=0.5,
    monitor_train_examples=300,
    max_train_examples=50,
  )
  assert m.evaluator.settings.ks == (200,)
  assert m.evaluator.settings.max_train_examples == 300
  assert m.every_steps == 20  # 0.5 * 1280 / 32
  assert [s for s in range(1, 61) if m.due(s)] == [20, 40, 60]


def test_off_without_a_period_or_a_labelled_eval_split():
  assert _monitor(monitor_every_epochs=0.0) is None
  unlabelled = data.DatasetInfo(
    num_train=1280, num_eval=64, num_classes=0, class_names=()
  )
  assert _monitor(unlabelled, monitor_every_epochs=1.0) is None
  no_eval = data.DatasetInfo(
    num_train=1280, num_eval=0, num_classes=10, class_names=tuple("abcdefghij")
  )
  assert _monitor(no_eval, monitor_every_epochs=1.0) is None
  assert _monitor(monitor_every_epochs=0.001).every_steps == 1  # at least 1
