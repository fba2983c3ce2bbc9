"""Progress lines and TensorBoard scalars."""

import os

from simclr_jax import reporting


def test_format_duration():
  assert reporting.format_duration(5) == "0m05s"
  assert reporting.format_duration(125) == "2m05s"
  assert reporting.format_duration(3 * 3600 + 61) == "3h01m01s"
  assert reporting.format_duration(-3) == "0m00s"


def test_report_prints_progress_and_writes_events(tmp_path, capsys):
  r = reporting.Reporter(str(tmp_path), total_steps=100, batch_size=64)
  r.report(10, {"contrastive_loss": 5.5, "contrast_acc": 0.25,
                "learning_rate": 0.1})
  r.report(20, {"contrastive_loss": 5.0, "contrast_acc": 0.5,
                "learning_rate": 0.2})
  r.close()
  lines = capsys.readouterr().out.strip().splitlines()
  assert lines[0].startswith("step 10/100 (10.0%)")
  assert "contrastive_loss 5" in lines[1] and "img/s" in lines[1]
  assert "ETA" in lines[1]
  events = [f for f in os.listdir(tmp_path) if "tfevents" in f]
  assert events and os.path.getsize(tmp_path / events[0]) > 0
