"""Progress lines, TensorBoard scalars and metrics.jsonl."""

import json
import os

import pytest

from simclr_jax import metrics_log
from simclr_jax import reporting
from simclr_jax.training.input_wait import INPUT_WAIT_KEY


def test_format_duration():
  assert reporting.format_duration(5) == "0m05s"
  assert reporting.format_duration(125) == "2m05s"
  assert reporting.format_duration(3 * 3600 + 61) == "3h01m01s"
  assert reporting.format_duration(-3) == "0m00s"


def test_report_prints_progress_and_writes_events(tmp_path, capsys):
  r = reporting.Reporter(str(tmp_path), total_steps=100, batch_size=64)
  r.report(
    10, {"contrastive_loss": 5.5, "contrast_acc": 0.25, "learning_rate": 0.1}
  )
  r.report(
    20, {"contrastive_loss": 5.0, "contrast_acc": 0.5, "learning_rate": 0.2}
  )
  r.close()
  lines = capsys.readouterr().out.strip().splitlines()
  assert lines[0].startswith("step 10/100 (10.0%)")
  assert "contrastive_loss 5" in lines[1] and "img/s" in lines[1]
  assert "ETA" in lines[1]
  events = [f for f in os.listdir(tmp_path) if "tfevents" in f]
  assert events and os.path.getsize(tmp_path / events[0]) > 0


def _records(workdir):
  with open(workdir / reporting.METRICS_FILE) as f:
    return [json.loads(line) for line in f]


def test_metrics_jsonl_has_one_line_per_report(tmp_path):
  r = reporting.Reporter(str(tmp_path), total_steps=100, batch_size=64)
  r.report(10, {"contrastive_loss": 5.5, "contrast_acc": 0.25})
  # Written before close: a run that dies now still has its curve.
  assert [rec["step"] for rec in _records(tmp_path)] == [10]
  r.report(20, {"contrastive_loss": 5.0, "contrast_acc": 0.5})
  r.write_scalars(20, {"eval/trained/knn_accuracy": 0.75})
  r.close()
  recs = _records(tmp_path)
  assert [rec["step"] for rec in recs] == [10, 20, 20]
  assert set(recs[1]) == {
    "step",
    "time",
    "contrastive_loss",
    "contrast_acc",
    "images_per_sec",
  }
  assert recs[1]["contrastive_loss"] == 5.0 and recs[1]["images_per_sec"] > 0
  assert set(recs[2]) == {"step", "time", "eval/trained/knn_accuracy"}
  assert recs[2]["eval/trained/knn_accuracy"] == 0.75
  assert recs[0]["time"] <= recs[1]["time"] <= recs[2]["time"]


def test_resumed_reporter_appends(tmp_path):
  r = reporting.Reporter(str(tmp_path), total_steps=40, batch_size=8)
  r.report(10, {"contrastive_loss": 3.0})
  r.report(20, {"contrastive_loss": 2.0})
  r.close()
  r = reporting.Reporter(
    str(tmp_path), total_steps=40, batch_size=8, start_step=10
  )
  r.report(20, {"contrastive_loss": 1.5})
  r.close()
  recs = _records(tmp_path)
  assert [(rec["step"], rec["contrastive_loss"]) for rec in recs] == [
    (10, 3.0),
    (20, 2.0),
    (20, 1.5),
  ]


def test_only_process_zero_writes(tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(reporting.jax, "process_index", lambda: 1)
  r = reporting.Reporter(str(tmp_path), total_steps=10, batch_size=8)
  r.report(5, {"contrastive_loss": 1.0})
  r.write_scalars(5, {"eval/trained/knn_accuracy": 0.5})
  r.close()
  assert os.listdir(tmp_path) == []
  assert capsys.readouterr().out == ""


def test_input_wait_fraction_reaches_stdout_jsonl_and_tensorboard(
  tmp_path, capsys
):
  r = reporting.Reporter(str(tmp_path), total_steps=100, batch_size=64)
  r.report(10, {"contrastive_loss": 5.5, INPUT_WAIT_KEY: 0.123456})
  r.close()
  (line,) = capsys.readouterr().out.strip().splitlines()
  assert "input_wait_fraction 0.12" in line.split(" | ")  # two decimals
  (record,) = _records(tmp_path)
  assert record[INPUT_WAIT_KEY] == 0.123456  # full precision in the files
  os.remove(tmp_path / reporting.METRICS_FILE)  # read the events instead
  steps, values = metrics_log.load_metrics(str(tmp_path))[INPUT_WAIT_KEY]
  assert list(steps) == [10]
  assert values[0] == pytest.approx(0.123456, rel=1e-6)


def test_print_main_prints_on_process_zero_only(monkeypatch, capsys):
  reporting.print_main("warning: one line")
  assert capsys.readouterr().out == "warning: one line\n"
  monkeypatch.setattr(reporting.jax, "process_index", lambda: 1)
  reporting.print_main("warning: one line")
  assert capsys.readouterr().out == ""


def test_unreadable_images_are_in_the_progress_line_when_any(tmp_path, capsys):
  r = reporting.Reporter(str(tmp_path), total_steps=100, batch_size=64)
  r.report(10, {"contrastive_loss": 5.5, reporting.UNREADABLE_KEY: 0})
  r.report(20, {"contrastive_loss": 5.0, reporting.UNREADABLE_KEY: 3})
  r.close()
  first, second = capsys.readouterr().out.strip().splitlines()
  assert "unreadable" not in first
  assert "3 unreadable images skipped" in second.split(" | ")
  assert [r[reporting.UNREADABLE_KEY] for r in _records(tmp_path)] == [0, 3]


def test_resume_hint_names_the_command_or_the_call(monkeypatch):
  main = os.path.join(os.path.dirname(reporting.__file__), "main.py")
  monkeypatch.setattr(
    reporting.sys, "argv", [main, "--config", "a b.py", "--workdir", "w"]
  )
  assert reporting.resume_hint("f") == (
    "rerun `python -m simclr_jax.main --config 'a b.py' --workdir w`"
  )
  monkeypatch.setattr(reporting.sys, "argv", ["ipykernel_launcher.py"])
  assert reporting.resume_hint("f") == (
    "call f again with the same config and workdir"
  )
