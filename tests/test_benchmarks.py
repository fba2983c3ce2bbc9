"""The performance suite and the accelerator script run end to end (dry run)."""

import json
import os
import sys

import pytest

sys.path.insert(
  0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks")
)
import accelerator  # noqa: E402
import suite  # noqa: E402


def _step(images_per_s, **kw):
  return {
    "images_per_s": images_per_s,
    "views_per_s": 2 * images_per_s,
    "compile_s": 1.0,
    **kw,
  }


def test_table_states_side_by_side_ratios_and_errors():
  rows = [
    {
      "setting": "quickstart",
      "dtype": "float32",
      "simclr_jax": _step(300.0),
      "xla_conv": _step(200.0),
      "pytorch": _step(400.0),
      "pytorch_cl": {"error": "RuntimeError: out of memory"},
    },
  ]
  memory = [{"setting": "quickstart", "remat": True, "temp_bytes": 3 * 2**20}]
  text = suite.table(rows, memory, None)
  line = text.splitlines()[2]
  assert "| 300.0 (600) |" in line and "| 200.0 |" in line
  assert "| 400.0 | 0.75 |" in line  # ours / PyTorch's images/s
  assert "out of memory" in line and line.endswith("| - |")
  assert "model.remat=True: 3 MiB" in text


def test_unknown_setting_is_refused(capsys):
  with pytest.raises(SystemExit):
    suite.main(["--settings", "r1000", "--out", "/nonexistent"])
  assert "unknown settings ['r1000']" in capsys.readouterr().err


@pytest.mark.slow
def test_suite_dry_run(tmp_path):
  result = suite.main(["--dry_run", "--no_torch", "--out", str(tmp_path)])
  (row,) = result["rows"]
  assert row["simclr_jax"]["images_per_s"] > 0, row
  assert row["simclr_jax"]["first_step_s"] >= row["simclr_jax"]["compile_s"]
  assert result["memory"][0]["temp_bytes"] > 0
  assert result["input"]["folder_images_per_s"] > 0, result["input"]
  assert result["machine"]["versions"]["jax"]
  saved = json.loads((tmp_path / "results.json").read_text())
  assert saved["rows"] == json.loads(json.dumps(result["rows"]))
  assert "| quickstart | float32 |" in (tmp_path / "table.md").read_text()


@pytest.mark.slow
def test_accelerator_script_dry_run(tmp_path):
  result = accelerator.main(["--dry_run", "--out", str(tmp_path)])
  assert all("error" not in r["simclr_jax"] for r in result["rows"]), result
  assert [r["dtype"] for r in result["rows"]] == [
    "bfloat16",
    "bfloat16",
    "float32",
  ]
  assert [m["remat"] for m in result["memory"]] == [False, True]
  assert all(m["temp_bytes"] > 0 for m in result["memory"]), result["memory"]
  assert "bfloat16, model.remat=True:" in (tmp_path / "table.md").read_text()
  assert result["pretrain"]["steps"] == 2, result["pretrain"]
  trained = result["pretrain"]["metrics"]["trained"]
  assert 0 <= trained["knn_k5_top1"] <= 1
  assert "CIFAR-10 pretraining, 2 steps" in (tmp_path / "table.md").read_text()
