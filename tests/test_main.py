"""The command line: help, --print_config, a tiny run and an incompatible
rerun, relative paths in every mode. Bad input in general (one `error:`
line, exit code 2) is tests/test_bad_input.py's table."""

import json
import os
import re
import runpy
import subprocess
import sys

import ml_collections
import pytest

from helpers import (
  ROOT,
  TINY,
  TINY_DOWNSTREAM,
  TINY_RUN,
  assert_one_line_error,
  run_cli,
)

from simclr_jax import defaults
from simclr_jax import config_docs


# Bad input on the command line (unknown keys, values of the wrong type, a
# missing config file or data folder, a workdir that is a file, ...) is the
# table of tests/test_bad_input.py, run in one process.


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
  # A downstream mode takes the run's settings; only a key typed on the
  # command line that contradicts the checkpoint is an error.
  proc = run_cli(
    "--config",
    "configs/default.py",
    "--workdir",
    str(tmp_path / "knn"),
    "--config.mode=knn",
    f"--config.init_checkpoint={workdir}",
    "--config.data.image_size=28",
  )
  assert_one_line_error(
    proc, "checkpoint has data.image_size=16, config asks for 28", "leave"
  )
  assert {p: p.stat().st_mtime for p in workdir.rglob("*")} == before


def _results(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


def test_relative_and_home_paths_in_pretraining_and_downstream(tmp_path):
  """A new user's session: every path relative to the current directory (or
  `~/...`, which no shell expands after `=`), pretraining and then a
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

  # Downstream (the README test runs each mode on relative paths): `~`
  # and `..` in both paths, and the run's settings without repeating them.
  init, out = "~/runs/../runs/tiny", "~/out/knn"
  proc = run_cli(
    "--config",
    str(ROOT / "configs" / "cifar10.py"),
    f"--workdir={out}",
    *TINY_DOWNSTREAM,
    "--config.mode=knn",
    f"--config.init_checkpoint={init}",
    cwd=cwd,
    env=env,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = _results(cwd / "out" / "knn")
  assert results["mode"] == "knn"
  assert results["checkpoint"] == {"dir": str(run), "step": 2}
  assert results["config"]["init_checkpoint"] == str(run)
  assert results["config"]["data"]["source"] == "builtin"  # the run's
  assert 0.0 <= min(results["metrics"].values())
  assert max(results["metrics"].values()) <= 1.0
  assert not (cwd / "~").exists()  # no folder named "~"


def _leaf_keys(config, prefix=""):
  keys = []
  for key in config.keys():
    if isinstance(config[key], ml_collections.ConfigDict):
      keys += _leaf_keys(config[key], f"{prefix}{key}.")
    else:
      keys.append(f"{prefix}{key}")
  return keys


@pytest.mark.parametrize("flag", ["--help", "--helpshort", "-h"])
def test_help_is_usage_and_exit_0(flag):
  from simclr_jax.eval import registry  # pylint: disable=import-outside-toplevel

  proc = run_cli(flag)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "error" not in proc.stderr
  for fragment in ("--config CONFIG.py", "--workdir DIR", "--print_config"):
    assert fragment in proc.stdout
  assert "--config.KEY=VALUE" in proc.stdout
  for name in os.listdir(ROOT / "configs"):
    if name.endswith(".py"):
      assert re.search(rf"^  {re.escape(name)} +\S", proc.stdout, re.M), name
  for mode in registry.MODES:
    assert f'"{mode}"' in proc.stdout, mode


def test_helpfull_also_lists_absl_flags():
  proc = run_cli("--helpfull")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "--print_config" in proc.stdout and "--verbosity" in proc.stdout


def test_print_config_lists_every_key_without_workdir_or_jax():
  overrides = ["--config.batch_size=64", "--config.data.source=folder"]
  proc = subprocess.run(
    [sys.executable, "-X", "importtime", "-m", "simclr_jax.main"]
    + ["--config", "configs/default.py", "--print_config", *overrides],
    cwd=ROOT,
    env=dict(os.environ, JAX_PLATFORMS="cpu"),
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  imported = {
    line.rsplit("|", 1)[1].strip().split(".")[0]
    for line in proc.stderr.splitlines()
    if line.startswith("import time:")
  }
  assert "ml_collections" in imported
  assert not imported & {"jax", "tensorflow", "flax", "optax"}
  printed = re.findall(r"^([\w.]+) = ", proc.stdout, re.M)
  config = runpy.run_path(str(ROOT / "configs" / "default.py"))["get_config"]()
  assert sorted(printed) == sorted(_leaf_keys(config))
  assert max(len(line) for line in proc.stdout.splitlines()) <= 80
  lines = proc.stdout.splitlines()
  assert "batch_size = 64  # global batch, split over all devices" in lines
  assert 'data.source = \'folder\'  # "builtin" | "tfds" | "folder"' in lines
  assert "model.depth = 18" in lines  # no comment in defaults.py
  # A long comment goes above its key; a section's heads the section.
  row = {l.split(" = ")[0]: i for i, l in enumerate(lines) if " = " in l}
  top = row["mode"]
  while lines[top - 1].startswith("# "):
    top -= 1
  assert lines[top].startswith("# What the run does") and top < row["mode"]
  assert lines[row["mode"]] == "mode = 'pretrain'"
  head = lines[row["distributed.coordinator_address"] - 1]
  assert head.startswith("# Multi-process runs")


def test_config_comments_cover_every_key():
  comments = config_docs.config_comments()
  assert set(_leaf_keys(defaults.base_config())) <= set(comments)
  assert comments["init_checkpoint"] == (
    "pretraining run directory (downstream modes)"
  )
  assert comments["mode"].startswith('What the run does: "pretrain"')
  assert comments["mode"].endswith('or "knn".')
  assert comments["eval"].startswith("Evaluation of the frozen encoder")
  assert comments["model.depth"] == ""
  # A comment continued on the lines below its key.
  assert comments["augment.blur_sigma"] == (
    '"per_image" (ours) | "per_batch" (one sigma per view and step, like '
    "the reference)"
  )
  # A block above a key, after a key without a comment.
  assert comments["optim.trust_coefficient"] == ""
  assert comments["optim.decay_supervised_head"].startswith(
    "The reference also decays"
  )
  # data.* from DataConfig: a capital starts the next key's block, it does
  # not continue the comment of the key above it.
  assert comments["data.image_size"] == (
    "model input size: the side of every view"
  )
  assert comments["data.host_size"].startswith("Side of the square")


def test_source_comments_edge_cases(tmp_path):
  source = tmp_path / "defaults.py"
  source.write_text(
    """
import ml_collections


def base_config():
  c = ml_collections.ConfigDict()
  c.a = 1  # ends a sentence.
  # lower case, but the line above ended: the block of b
  c.b = 2  # noqa: E501
  # a comment with a blank line after it belongs to no key

  c.s = ml_collections.ConfigDict(
    {
      "x": 1,  # x, continued
      # on this line
      "y": 2,
    }
  )
  c.t = ml_collections.ConfigDict(dict(z=3))  # pylint: disable=foo
  return c
"""
  )
  assert config_docs.source_comments(str(source)) == {
    "a": "ends a sentence.",
    "b": "lower case, but the line above ended: the block of b",
    "s": "",
    "s.x": "x, continued on this line",
    "s.y": "",
    "t": "",
    "t.z": "",
  }
