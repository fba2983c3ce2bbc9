"""The command line: bad input ends in one `error:` line and exit code 2;
relative paths work in every mode."""

import json
import os

import pytest

from helpers import (
  ROOT,
  TINY,
  TINY_DOWNSTREAM,
  TINY_RUN,
  assert_one_line_error,
  run_cli,
)


@pytest.mark.parametrize(
  "override, fragments",
  [
    (
      "--config.optim.base_lerning_rate=1",
      [
        "unknown config key 'optim.base_lerning_rate'",
        "did you mean optim.base_learning_rate",
      ],
    ),
    ("--config.modle.depth=50", ["unknown config key 'modle'", "model"]),
    ("--config.batch_size=abc", ["batch_size", "abc"]),
  ],
)
def test_bad_flags(tmp_path, override, fragments):
  proc = run_cli(
    "--config", "configs/default.py", "--workdir", str(tmp_path / "w"), override
  )
  assert_one_line_error(proc, *fragments)
  assert not (tmp_path / "w").exists()


def test_missing_config_file(tmp_path):
  proc = run_cli("--config", "configs/nope.py", "--workdir", str(tmp_path))
  assert_one_line_error(proc, "configs/nope.py does not exist")


def test_batch_not_divisible_by_devices(tmp_path):
  proc = run_cli(
    "--config",
    "configs/default.py",
    "--workdir",
    str(tmp_path / "w"),
    "--config.batch_size=60",
    devices=8,
  )
  assert_one_line_error(
    proc, "not divisible by the 8 devices", "--config.batch_size=64"
  )
  assert not (tmp_path / "w").exists()


def test_unknown_tfds_dataset(tmp_path):
  proc = run_cli(
    "--config",
    "configs/default.py",
    "--workdir",
    str(tmp_path / "w"),
    "--config.data.source=tfds",
    "--config.data.name=cifar_10",
  )
  assert_one_line_error(proc, "cifar_10", "cifar10")
  assert not (tmp_path / "w").exists()


def test_tfds_data_dir_with_home(tmp_path):
  # `~` after `=` reaches the program unexpanded, and tfds would take it
  # literally; it means $HOME.
  proc = run_cli(
    "--config",
    "configs/default.py",
    "--workdir",
    str(tmp_path / "w"),
    "--config.data.source=tfds",
    "--config.data.name=mnist",
    "--config.data.data_dir=~/tfds",
    env={"HOME": str(tmp_path)},
  )
  assert_one_line_error(proc, f"not prepared in {tmp_path / 'tfds'} ")


def test_missing_and_empty_folder(tmp_path):
  proc = run_cli(
    "--config",
    "configs/default.py",
    "--workdir",
    str(tmp_path / "w"),
    "--config.data.source=folder",
    f"--config.data.data_dir={tmp_path / 'absent'}",
  )
  assert_one_line_error(proc, "absent")
  empty = tmp_path / "empty" / "train" / "a"
  empty.mkdir(parents=True)
  proc = run_cli(
    "--config",
    "configs/default.py",
    "--workdir",
    str(tmp_path / "w"),
    "--config.data.source=folder",
    f"--config.data.data_dir={tmp_path / 'empty'}",
  )
  assert_one_line_error(proc, "no images")
  assert not (tmp_path / "w").exists()


def test_workdir_that_is_a_file(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  proc = run_cli(
    "--config", "configs/default.py", "--workdir", str(blocker / "run")
  )
  assert_one_line_error(proc, "is a file, not a directory")
  assert blocker.read_text() == "not a directory"


def test_tiny_run_and_incompatible_rerun(tmp_path):
  workdir = tmp_path / "run"
  proc = run_cli(
    "--config", "configs/default.py", "--workdir", str(workdir), *TINY
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "step 1/1" in proc.stdout
  ckpts = sorted(os.listdir(workdir / "checkpoints"))
  before = {p: p.stat().st_mtime for p in workdir.rglob("*")}
  proc = run_cli(
    "--config",
    "configs/default.py",
    "--workdir",
    str(workdir),
    *TINY,
    "--config.model.depth=34",
  )
  assert_one_line_error(proc, "different model", "depth")
  assert sorted(os.listdir(workdir / "checkpoints")) == ckpts
  assert {p: p.stat().st_mtime for p in workdir.rglob("*")} == before


def _results(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


def test_relative_paths_in_every_mode(tmp_path):
  """A new user's session: every path relative to the current directory (or
  `~/...`, which no shell expands after `=`), pretraining and then each
  downstream mode on that run. Orbax only takes absolute paths."""
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  env = {"HOME": str(cwd)}
  # The README's CIFAR-10 recipe on built-in data (the same 32 / 16 images
  # as the README test's stand-ins): the compiled programs are those of
  # tests/test_readme_commands.py, which then finds them in the cache.
  config = [
    str(ROOT / "configs" / "cifar10.py"),
    *TINY_RUN,
    "--config.data.source=builtin",
    "--config.data.name=",
  ]
  # keep_checkpoints=1 with a checkpoint every step: only step 2 may stay.
  proc = run_cli(
    "--config",
    *config,
    "--workdir",
    "runs/tiny",
    "--config.checkpoint_every_steps=1",
    "--config.keep_checkpoints=1",
    cwd=cwd,
    env=env,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  run = cwd / "runs" / "tiny"
  assert sorted(os.listdir(run / "checkpoints")) == ["2"]
  assert _results(run)["checkpoint"] == {"dir": str(run), "step": 2}

  for mode, init, out in [
    ("knn", "runs/tiny", "out/knn"),
    ("linear", "./runs/../runs/tiny", "out/linear"),
    ("finetune", "~/runs/tiny", "~/out/finetune"),
  ]:
    proc = run_cli(
      "--config",
      *config,
      f"--workdir={out}",
      *TINY_DOWNSTREAM,
      f"--config.mode={mode}",
      f"--config.init_checkpoint={init}",
      cwd=cwd,
      env=env,
    )
    assert proc.returncode == 0, (mode, init, proc.stderr[-3000:])
    results = _results(cwd / out.removeprefix("~/"))
    assert results["mode"] == mode
    assert results["checkpoint"] == {"dir": str(run), "step": 2}
    assert results["config"]["init_checkpoint"] == str(run)
    assert 0.0 <= min(results["metrics"].values())
    assert max(results["metrics"].values()) <= 1.0
  assert not (cwd / "~").exists()  # no folder named "~"
