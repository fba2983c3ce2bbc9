"""benchmarks/device_scaling.py: the plan, the efficiencies and, end to end,
a sweep directory that `python -m simclr_jax.sweep report` reads."""

import json
import os
import sys

import pytest

sys.path.insert(
  0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks")
)
import device_scaling  # noqa: E402

from simclr_jax.sweep import layout  # noqa: E402
from simclr_jax.sweep import report  # noqa: E402


def test_plan_skips_counts_that_do_not_divide_the_global_batch(capsys):
  args = device_scaling._args(
    ["--devices", "1,2,3,4", "--per_device_batch", "16", "--global_batch", "64"]
  )
  plan = device_scaling._plan(args)
  assert [p for p in plan if p[0] == "weak"] == [
    ("weak", 1, 16), ("weak", 2, 32), ("weak", 3, 48), ("weak", 4, 64)
  ]  # fmt: skip
  assert [p for p in plan if p[0] == "strong"] == [
    ("strong", 1, 64), ("strong", 2, 64), ("strong", 4, 64)
  ]  # fmt: skip
  assert (
    "strong scaling: skipped 3 devices (64 % 3 != 0)" in capsys.readouterr().out
  )


def test_efficiency_is_relative_to_the_smallest_count():
  rows = [
    {"scaling": "weak", "devices": 2, "images_per_s": 100.0, "step_s": 0.2},
    {"scaling": "weak", "devices": 8, "images_per_s": 300.0, "step_s": 0.3},
    {"scaling": "strong", "devices": 2, "images_per_s": 100.0, "step_s": 0.4},
    {"scaling": "strong", "devices": 4, "images_per_s": 160.0, "step_s": 0.25},
  ]
  device_scaling.add_efficiency(rows)
  assert [r["efficiency"] for r in rows] == pytest.approx([1.0, 0.75, 1.0, 0.8])


def test_device_env_sets_the_count_and_keeps_other_flags(monkeypatch):
  monkeypatch.setenv(
    "XLA_FLAGS", "--xla_foo=1 --xla_force_host_platform_device_count=8"
  )
  env = device_scaling.device_env("cpu", 2, 8)
  assert (
    env["XLA_FLAGS"] == "--xla_foo=1 --xla_force_host_platform_device_count=2"
  )
  assert device_scaling.device_env("gpu", 2, 4)["CUDA_VISIBLE_DEVICES"] == "0,1"
  assert device_scaling.device_env("gpu", 8, 4) is None
  assert device_scaling.device_env("tpu", 4, 8) is None
  assert device_scaling.device_env("tpu", 8, 8) is not None


@pytest.mark.slow  # four step compilations, about a minute
def test_dry_run_writes_a_sweep_directory_the_report_reads(tmp_path, capsys):
  out = tmp_path / "ds"
  summary = device_scaling.main(["--dry_run", "--out", str(out)])
  rows = summary["rows"]
  assert [(r["scaling"], r["devices"], r["global_batch"]) for r in rows] == [
    ("weak", 1, 8), ("weak", 2, 16), ("strong", 1, 16), ("strong", 2, 16)
  ]  # fmt: skip
  assert all(r["backend"] == "cpu" for r in rows)
  table = (out / "table.md").read_text()
  assert "| weak | 2 | 16 | 8 |" in table and "simulated" in table
  manifest = layout.read_manifest(str(out))
  names = [p["name"] for p in manifest["points"]]
  assert names == [
    "weak-devices=1", "weak-devices=2", "strong-devices=1", "strong-devices=2"
  ]  # fmt: skip
  for name, row in zip(names, rows):
    assert layout.status(str(out), name) == layout.DONE
    with open(out / name / "results.json") as f:
      results = json.load(f)
    assert results["mode"] == "benchmark"
    assert results["details"]["devices"] == row["devices"]
    assert results["metrics"]["images_per_sec"] == row["images_per_s"]
  capsys.readouterr()
  paths = report.run(str(out))
  assert any(p.endswith("throughput_vs_devices.png") for p in paths)
  assert "| weak-devices=2 | done |" in capsys.readouterr().out
