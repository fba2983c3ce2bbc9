"""`python -m simclr_jax.sweep run`: points in order, skip, resume, report."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from simclr_jax.sweep import __main__ as cli
from simclr_jax.sweep import layout

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)


def _write(tmp_path, points, name="tiny.py"):
  """A base config of tests/helpers.tiny_config and a sweep file over it."""
  base = tmp_path / "base.py"
  base.write_text(
    textwrap.dedent(f"""
    import sys
    sys.path.insert(0, {TESTS!r})
    from helpers import tiny_config

    def get_config():
      c = tiny_config()
      c.eval.compare_random_init = False
      c.eval.compare_raw_pixels = False
      c.eval.probe_max_iters = 20
      return c
    """)
  )
  sweep = tmp_path / name
  sweep.write_text(f"base_config = 'base.py'\npoints = {points!r}\n")
  return str(sweep)


def _cli(*args, **kw):
  return subprocess.Popen(
    [sys.executable, "-m", "simclr_jax.sweep", *args],
    cwd=REPO,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
    **kw,
  )


def _wait_for(path, proc, timeout=300):
  start = time.monotonic()
  while not os.path.exists(path):
    assert proc.poll() is None, proc.stdout.read()
    assert time.monotonic() - start < timeout, f"no {path}"
    time.sleep(0.05)


@pytest.mark.slow  # three training processes (about a minute); CI runs it
def test_run_fail_interrupt_resume_and_report(tmp_path):
  nothing = str(tmp_path / "nothing")
  sweep = _write(
    tmp_path,
    [
      {"data.source": "folder", "data.data_dir": nothing},
      {"train_steps": 4},
      {"train_steps": 40},
    ],
  )
  sweepdir = str(tmp_path / "sw")
  bad = f"source=folder,data_dir={nothing.replace('/', '_')}"
  short, long = "train_steps=4", "train_steps=40"

  proc = _cli("run", sweep, "--sweepdir", sweepdir)
  # Interrupt the last point once it has a checkpoint.
  _wait_for(os.path.join(sweepdir, long, "checkpoints", "2"), proc)
  proc.send_signal(signal.SIGINT)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 130, out
  # A failed point does not stop the others.
  assert f"[sweep 1/3] {bad}: failed with exit status 2" in out
  assert "error:" in out  # the point's own one-line error, passed through
  assert f"[sweep 2/3] {short}: starting:" in out
  assert f"interrupted during {long}; run the same command again" in out
  assert layout.status(sweepdir, short) == layout.DONE
  assert layout.status(sweepdir, long) == layout.UNFINISHED

  proc = _cli("run", sweep, "--sweepdir", sweepdir)
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 1, out
  assert f"[sweep 2/3] {short}: done, skipped." in out
  assert f"[sweep 3/3] {long}: resuming:" in out
  assert "Resumed from" in out
  assert f"1 of 3 point(s) failed: {bad}" in out
  with open(layout.log_path(sweepdir, long)) as f:
    log = f.read()
  assert log.count("$ ") == 2 and "Resumed from" in log  # both invocations
  for name, steps in ((short, 4), (long, 40)):
    with open(os.path.join(sweepdir, name, "results.json")) as f:
      assert json.load(f)["checkpoint"]["step"] == steps

  proc = _cli("report", sweepdir)
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0, out
  with open(os.path.join(sweepdir, "report", "report.md")) as f:
    table = f.read()
  assert short in table and long in table and bad in table


def test_dry_run_lists_commands_and_writes_nothing(tmp_path, capsys):
  sweep = _write(tmp_path, [{"batch_size": 16}, {"batch_size": 32}])
  sweepdir = tmp_path / "sw"
  assert cli.main(["run", sweep, "--sweepdir", str(sweepdir), "--dry-run"]) == 0
  out = capsys.readouterr().out
  assert "[1/2] batch_size=16 (missing)" in out
  assert f"--workdir {sweepdir}/batch_size=32 --config.batch_size=32" in out
  assert not sweepdir.exists()


def test_changed_point_overrides_are_refused_untouched(tmp_path, capsys):
  sweep = _write(tmp_path, [{"train_steps": 2}])
  sweepdir = tmp_path / "sw"
  layout.write_manifest(
    str(sweepdir),
    sweep,
    str(tmp_path / "base.py"),
    [{"name": "train_steps=2", "overrides": {"train_steps": 2, "seed": 1},
      "command": []}],
  )  # fmt: skip
  before = (sweepdir / "sweep.json").read_text()
  assert (
    cli.main(["run", sweep, "--sweepdir", str(sweepdir), "--devices", "8"]) == 2
  )
  out = capsys.readouterr().err
  assert out.startswith("error: point train_steps=2 in "), out
  assert "restore the sweep file or use another --sweepdir" in out
  assert (sweepdir / "sweep.json").read_text() == before
  assert not (sweepdir / "train_steps=2").exists()


def test_unknown_only_names_the_points(tmp_path, capsys):
  sweep = _write(tmp_path, [{"train_steps": 2}])
  argv = [
    "run",
    sweep,
    "--sweepdir",
    str(tmp_path),
    "--only",
    "nope",
    "--devices",
    "8",
  ]
  assert cli.main(argv) == 2
  err = capsys.readouterr().err
  assert "error: --only nope: not a point" in err and "train_steps=2" in err
