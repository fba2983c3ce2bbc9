"""Running a sweep on this machine, one point after another.

Each point runs as its own `python -m simclr_jax.main` process, so it gets
exactly the checks, resume and results of a hand-typed command. Re-running
the same `run` skips points that are done (results.json), resumes the
unfinished ones from their checkpoints and starts the rest. A point that
fails does not stop the others; the run ends with the list of failures and
exit status 1. Ctrl-C or SIGTERM stops the point in progress and the
sweep, and says how to go on.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from typing import Any, Sequence

from simclr_jax.errors import UserError
from simclr_jax.sweep import layout
from simclr_jax.sweep import spec

INTERRUPTED = 130


def manifest_points(sweep: spec.Sweep, sweepdir: str) -> list[dict[str, Any]]:
  """The manifest entries of `sweep`, merged with those already in
  `sweepdir`: a point that exists there with other overrides, or a sweep
  dir made from another base config, is refused (its run stays untouched)."""
  new = [
    {
      "name": p.name,
      "overrides": p.overrides,
      "command": p.command(sweep.base_config, sweepdir),
    }
    for p in sweep.points
  ]
  old = layout.read_manifest(sweepdir)
  if old is None:
    return new
  if os.path.abspath(old["base_config"]) != os.path.abspath(sweep.base_config):
    raise UserError(
      f"{sweepdir} holds a sweep from base config {old['base_config']}, not "
      f"{sweep.base_config}; use another --sweepdir"
    )
  before = {p["name"]: p for p in old["points"]}
  for p in new:
    stored = before.pop(p["name"], None)
    if stored is not None and stored["overrides"] != _as_json(p["overrides"]):
      raise UserError(
        f"point {p['name']} in {sweepdir} ran with overrides "
        f"{stored['overrides']}, the sweep file now gives {p['overrides']} "
        "(e.g. a changed derive()); restore the sweep file or use another "
        "--sweepdir"
      )
  return new + list(before.values())  # points of earlier sweep files stay


def _as_json(overrides: dict[str, Any]) -> dict[str, Any]:
  """What `overrides` reads back as from sweep.json (tuples are lists)."""
  return {
    k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()
  }


def describe(sweep: spec.Sweep, sweepdir: str, points: Sequence) -> str:
  """The --dry-run listing: each point's status and full command."""
  lines = [
    f"{len(points)} point(s) of {sweep.path} (base {sweep.base_config}) "
    f"in {sweepdir}:"
  ]
  for i, p in enumerate(points, 1):
    state = layout.status(sweepdir, p.name)
    lines.append(f"[{i}/{len(points)}] {p.name} ({state})")
    lines.append("  " + shlex.join(p.command(sweep.base_config, sweepdir)))
  return "\n".join(lines)


def _stream(cmd: list[str], log: str) -> int:
  """Runs `cmd`, copying its output to stdout and to `log`; returns its
  exit status. On Ctrl-C / SIGTERM the child is stopped first."""
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  os.makedirs(os.path.dirname(log), exist_ok=True)
  with open(log, "a", encoding="utf-8") as out:
    out.write(f"$ {shlex.join(cmd)}\n")
    # A session of its own: a Ctrl-C reaches only this process, which
    # passes exactly one signal on (a second one may mean "exit at once").
    child = subprocess.Popen(
      cmd,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
      env=env,
      start_new_session=True,
    )
    try:
      for line in child.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        out.write(line)
      return child.wait()
    except KeyboardInterrupt:
      _stop(child)
      raise


def _stop(child: subprocess.Popen) -> None:
  """Passes the signal that stopped the sweep on, and waits for the point
  to exit (it may be writing a checkpoint)."""
  if child.poll() is None:
    child.send_signal(_received[0])
    try:
      child.wait(timeout=60)
    except subprocess.TimeoutExpired:
      child.kill()
      child.wait()


_received = [signal.SIGINT]


def _raise_interrupt(signum: int, frame: Any) -> None:
  del frame
  _received[0] = signum
  raise KeyboardInterrupt


def run(sweep: spec.Sweep, sweepdir: str, only: Sequence[str] = ()) -> int:
  """Runs the selected points in order; returns the exit status."""
  points = sweep.select(only)
  layout.write_manifest(
    sweepdir, sweep.path, sweep.base_config, manifest_points(sweep, sweepdir)
  )
  _received[0] = signal.SIGINT
  # Both explicitly: a job started in the background of a script inherits
  # SIGINT ignored, and Python then installs no KeyboardInterrupt for it.
  previous = {
    s: signal.signal(s, _raise_interrupt)
    for s in (signal.SIGINT, signal.SIGTERM)
  }
  failed, started = [], time.monotonic()
  try:
    for i, p in enumerate(points, 1):
      head = f"[sweep {i}/{len(points)}] {p.name}"
      state = layout.status(sweepdir, p.name)
      if state == layout.DONE:
        print(f"{head}: done, skipped.", flush=True)
        continue
      cmd = p.command(sweep.base_config, sweepdir)
      verb = "resuming" if state == layout.UNFINISHED else "starting"
      print(f"{head}: {verb}: {shlex.join(cmd)}", flush=True)
      rc = _stream(
        [sys.executable, *cmd[1:]], layout.log_path(sweepdir, p.name)
      )
      if rc != 0:
        failed.append(p.name)
        print(
          f"{head}: failed with exit status {rc}; its output is in "
          f"{layout.log_path(sweepdir, p.name)}",
          flush=True,
        )
  except KeyboardInterrupt:
    print(
      f"\n[sweep] interrupted during {p.name}; run the same command again "
      "to resume it and the points after it.",
      flush=True,
    )
    return INTERRUPTED
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
  minutes = (time.monotonic() - started) / 60
  if failed:
    print(
      f"[sweep] {len(failed)} of {len(points)} point(s) failed: "
      f"{' '.join(failed)} ({minutes:.1f} min); fix them and run the same "
      "command again (finished points are skipped).",
      flush=True,
    )
    return 1
  print(
    f"[sweep] all {len(points)} point(s) done in {sweepdir} "
    f"({minutes:.1f} min); `python -m simclr_jax.sweep report {sweepdir}` "
    "collects them.",
    flush=True,
  )
  return 0
