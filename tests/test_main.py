"""The command line: bad input ends in one `error:` line and exit code 2."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = [
    "--config.data.image_size=16", "--config.model.width_multiplier=0.125",
    "--config.data.builtin_train_examples=64",
    "--config.data.builtin_eval_examples=32", "--config.batch_size=32",
    "--config.train_steps=1", "--config.eval.enabled=False",
]


def run_cli(*args, devices=1, cwd=ROOT):
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["JAX_PLATFORMS"] = "cpu"
  return subprocess.run(
      [sys.executable, "-m", "simclr_jax.main", *args], cwd=cwd, env=env,
      capture_output=True, text=True, timeout=300)


def assert_one_line_error(proc, *fragments):
  assert proc.returncode == 2, proc.stderr[-3000:]
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  for fragment in fragments:
    assert fragment in errors[0], errors[0]


@pytest.mark.parametrize("override, fragments", [
    ("--config.optim.base_lerning_rate=1",
     ["unknown config key 'optim.base_lerning_rate'",
      "did you mean optim.base_learning_rate"]),
    ("--config.modle.depth=50", ["unknown config key 'modle'", "model"]),
    ("--config.batch_size=abc", ["batch_size", "abc"]),
])
def test_bad_flags(tmp_path, override, fragments):
  proc = run_cli("--config", "configs/default.py", "--workdir",
                 str(tmp_path / "w"), override)
  assert_one_line_error(proc, *fragments)
  assert not (tmp_path / "w").exists()


def test_missing_config_file(tmp_path):
  proc = run_cli("--config", "configs/nope.py", "--workdir", str(tmp_path))
  assert_one_line_error(proc, "configs/nope.py does not exist")


def test_batch_not_divisible_by_devices(tmp_path):
  proc = run_cli("--config", "configs/default.py", "--workdir",
                 str(tmp_path / "w"), "--config.batch_size=60", devices=8)
  assert_one_line_error(proc, "not divisible by the 8 devices",
                        "--config.batch_size=64")
  assert not (tmp_path / "w").exists()


def test_unknown_tfds_dataset(tmp_path):
  proc = run_cli("--config", "configs/default.py", "--workdir",
                 str(tmp_path / "w"), "--config.data.source=tfds",
                 "--config.data.name=cifar_10")
  assert_one_line_error(proc, "cifar_10", "cifar10")
  assert not (tmp_path / "w").exists()


def test_missing_and_empty_folder(tmp_path):
  proc = run_cli("--config", "configs/default.py", "--workdir",
                 str(tmp_path / "w"), "--config.data.source=folder",
                 f"--config.data.data_dir={tmp_path / 'absent'}")
  assert_one_line_error(proc, "absent")
  empty = tmp_path / "empty" / "train" / "a"
  empty.mkdir(parents=True)
  proc = run_cli("--config", "configs/default.py", "--workdir",
                 str(tmp_path / "w"), "--config.data.source=folder",
                 f"--config.data.data_dir={tmp_path / 'empty'}")
  assert_one_line_error(proc, "no images")
  assert not (tmp_path / "w").exists()


def test_workdir_that_is_a_file(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  proc = run_cli("--config", "configs/default.py", "--workdir",
                 str(blocker / "run"))
  assert_one_line_error(proc, "is a file, not a directory")
  assert blocker.read_text() == "not a directory"


def test_tiny_run_and_incompatible_rerun(tmp_path):
  workdir = tmp_path / "run"
  proc = run_cli("--config", "configs/default.py", "--workdir", str(workdir),
                 *TINY)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "step 1/1" in proc.stdout
  ckpts = sorted(os.listdir(workdir / "checkpoints"))
  before = {p: p.stat().st_mtime for p in workdir.rglob("*")}
  proc = run_cli("--config", "configs/default.py", "--workdir", str(workdir),
                 *TINY, "--config.model.depth=34")
  assert_one_line_error(proc, "different model", "depth")
  assert sorted(os.listdir(workdir / "checkpoints")) == ckpts
  assert {p: p.stat().st_mtime for p in workdir.rglob("*")} == before
