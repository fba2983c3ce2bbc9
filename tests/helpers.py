"""Helpers the test modules share: the tiny configs and CLI runs.

Fixtures built from them (the shared tiny run) live in conftest.py.
"""

import os
import pathlib
import subprocess
import sys

from simclr_jax import defaults
from simclr_jax.data.config import DataConfig

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Checkpoints written by the official SimCLR code (synthetic weights) with
# its outputs, next to the repository (README.md there); tests skip without.
OFFICIAL_CHECKPOINTS = ROOT.parent / "shared" / "reference" / "checkpoints"
TINY = [
  "--config.data.image_size=16",
  "--config.model.width_multiplier=0.125",
  "--config.data.builtin_train_examples=64",
  "--config.data.builtin_eval_examples=32",
  "--config.batch_size=32",
  "--config.train_steps=1",
  "--config.eval.enabled=False",
]


# Two steps on a ResNet-18 x1/16 at 16 px, one device, no end-of-run
# evaluation: tests/test_readme_commands.py appends the same to the README's
# pretraining commands, so the two files' subprocesses compile the same
# programs and share them through the test run's compilation cache
# (conftest.py).
TINY_RUN = [
  "--config.train_steps=2",
  "--config.batch_size=16",
  "--config.model.depth=18",
  "--config.model.width_multiplier=0.0625",
  "--config.data.image_size=16",
  "--config.data.builtin_train_examples=32",
  "--config.data.builtin_eval_examples=16",
  "--config.eval.enabled=False",
  "--config.optim.warmup_epochs=0",
]
# Downstream runs of one or two steps on that model.
TINY_DOWNSTREAM = [
  "--config.eval.batch_size=16",
  "--config.eval.probe_max_iters=10",
  "--config.linear_eval.epochs=1",
  "--config.linear_eval.batch_size=16",
  "--config.finetune.epochs=1",
  "--config.finetune.batch_size=16",
  "--config.linear_eval.val_fraction=0.25",  # >= 1 per class of 3 or 4
]


# The data most data tests start from: the builtin dataset at 32 px with its
# 'test' split for evaluation, cached. (DataConfig's own defaults are
# base_config's ImageNet ones: tfds imagenet2012 at 224 px, eval split
# 'validation', no cache.)
SMALL_DATA = dict(
  source="builtin", name="", eval_split="test", image_size=32, cache=True
)


def data_config(**fields) -> DataConfig:
  """A DataConfig of SMALL_DATA, with `fields` on top."""
  return DataConfig(**{**SMALL_DATA, **fields})


def run_cli(
  *args, devices=1, cwd=ROOT, env=None, module="simclr_jax.main", timeout=300
):
  """`python -m module args` on `devices` CPU devices; `env` adds to (or,
  with None values, removes from) this process's environment."""
  full = dict(os.environ)
  full["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  full["JAX_PLATFORMS"] = "cpu"
  for key, value in (env or {}).items():
    if value is None:
      full.pop(key, None)
    else:
      full[key] = value
  return subprocess.run(
    [sys.executable, "-m", module, *args],
    cwd=cwd,
    env=full,
    capture_output=True,
    text=True,
    timeout=timeout,
  )


def assert_one_line_error(proc, *fragments):
  assert proc.returncode == 2, proc.stderr[-3000:]
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  for fragment in fragments:
    assert fragment in errors[0], errors[0]


def tiny_config(**data):
  """A config that trains in seconds on CPU: 16 px, ResNet-18 x1/8."""
  c = defaults.base_config()
  c.data.source = "builtin"
  c.data.name = ""
  c.data.image_size = 16
  c.data.eval_split = "test"
  c.data.builtin_train_examples = 128
  c.data.builtin_eval_examples = 64
  c.data.shuffle_buffer = 128
  c.data.cache = True
  for k, v in data.items():
    c.data[k] = v
  c.augment.blur_prob = 0.0
  c.model.depth = 18
  c.model.width_multiplier = 0.125
  c.model.cifar_stem = True
  c.model.proj_head_layers = 2
  c.model.proj_out_dim = 16
  c.loss.temperature = 0.5
  c.optim.base_learning_rate = 0.3
  c.optim.lr_scaling = "linear"
  c.optim.warmup_epochs = 0.0
  c.batch_size = 32
  c.train_steps = 4
  c.log_every_steps = 2
  c.checkpoint_every_steps = 2
  c.keep_checkpoints = 2
  c.eval.batch_size = 32
  c.eval.knn_ks = (10,)
  return c


def tiny_run_config():
  """Two steps, one checkpoint, no evaluation: the fastest real run."""
  c = tiny_config()
  c.train_steps = 2
  c.eval.enabled = False
  return c


def snapshot(path):
  """{file: (mtime, size)} under path, to show a run directory unchanged."""
  return {
    p: (
      os.path.getmtime(os.path.join(d, p)),
      os.path.getsize(os.path.join(d, p)),
    )
    for d, _, files in os.walk(path)
    for p in files
  }
