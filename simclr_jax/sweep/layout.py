"""A sweep directory on disk: the manifest and one run directory per point.

  SWEEPDIR/sweep.json    the manifest `python -m simclr_jax.sweep run` writes
                         before any point starts (schema below)
  SWEEPDIR/<name>/       the point's run directory, an ordinary --workdir
                         (checkpoints/, metrics.jsonl, results.json, ...)
  SWEEPDIR/logs/<name>.log  the point's console output (local runs)

sweep.json:

  schema_version  1
  sweep           path of the sweep file it came from (or the benchmark)
  base_config     path of the config file every point starts from
  points          [{"name": str, "overrides": {dotted key: value},
                    "command": [argv of the point's training command]}]
  created         UTC timestamp, ISO 8601

A point is "done" when its run directory holds results.json, "unfinished"
when the directory exists without it (started, interrupted or failed), and
"missing" when there is no directory yet.
"""

from __future__ import annotations

import datetime
import json
import os
from typing import Any

from simclr_jax.errors import UserError

MANIFEST = "sweep.json"
SCHEMA_VERSION = 1
LOGS = "logs"
DONE, UNFINISHED, MISSING = "done", "unfinished", "missing"


def point_dir(sweepdir: str, name: str) -> str:
  return os.path.join(sweepdir, name)


def log_path(sweepdir: str, name: str) -> str:
  return os.path.join(sweepdir, LOGS, f"{name}.log")


def status(sweepdir: str, name: str) -> str:
  """DONE, UNFINISHED or MISSING (module docstring)."""
  path = point_dir(sweepdir, name)
  if os.path.isfile(os.path.join(path, "results.json")):
    return DONE
  return UNFINISHED if os.path.isdir(path) else MISSING


def read_manifest(sweepdir: str) -> dict[str, Any] | None:
  """The manifest of `sweepdir`, or None where there is none yet."""
  path = os.path.join(sweepdir, MANIFEST)
  if not os.path.isfile(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      manifest = json.load(f)
    names = [p["name"] for p in manifest["points"]]
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise UserError(
      f"{path} is not a readable sweep manifest ({e}); restore it, or "
      "use another --sweepdir."
    ) from e
  if len(set(names)) != len(names):
    raise UserError(f"{path} lists a point name twice; restore the file.")
  return manifest


def write_manifest(
  sweepdir: str, sweep: str, base_config: str, points: list[dict[str, Any]]
) -> str:
  """Writes sweep.json atomically (a crash never leaves half a file)."""
  os.makedirs(sweepdir, exist_ok=True)
  manifest = {
    "schema_version": SCHEMA_VERSION,
    "sweep": sweep,
    "base_config": base_config,
    "points": points,
    "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
      timespec="seconds"
    ),
  }
  path = os.path.join(sweepdir, MANIFEST)
  tmp = f"{path}.tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(manifest, f, indent=2)
    f.write("\n")
  os.replace(tmp, path)
  return path
