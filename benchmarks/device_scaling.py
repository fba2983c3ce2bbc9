"""Weak and strong scaling of the pretraining step over 1, 2, 4, 8 devices.

  python benchmarks/device_scaling.py --out runs/device_scaling
      [--config configs/default.py] [--devices 1,2,4,8]
      [--per_device_batch 32] [--global_batch 256] [--steps 5] [--dry_run]
      [--override KEY=VALUE ...]
  python -m simclr_jax.sweep report runs/device_scaling

Weak scaling keeps the per-device batch (global batch = n x per device);
strong scaling keeps the global batch (a count that does not divide it is
skipped, and said so). Each measurement is benchmarks/train_step.py in a
process of its own, so each device count gets a fresh JAX:
- CPU: n simulated devices (`--xla_force_host_platform_device_count=n`).
  They share the machine's cores, so on CPU the efficiency measures the
  SPMD program's overhead and its collectives, not a parallel speed-up.
- GPU: the first n GPUs (CUDA_VISIBLE_DEVICES).
- TPU: only the chip count the host has (restricting a TPU host to fewer
  chips is not supported here); other counts are skipped.

Efficiency: weak = rate(n) / (n x rate(n0)), strong = time(n0) / ((n / n0)
x time(n)), n0 the smallest count measured. Writes OUT/results.json, OUT/table.md
and a sweep directory (OUT/sweep.json, one OUT/<scaling>-devices=<n>/
results.json per measurement) that `python -m simclr_jax.sweep report`
reads. `--dry_run`: 1 and 2 devices, one timed step of a tiny model.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import suite  # noqa: E402

from simclr_jax.sweep import layout  # noqa: E402

DRY_RUN = {
  "model.width_multiplier": 0.125,
  "data.image_size": 16,
  "model.proj_out_dim": 16,
}
SHARED_CORES = (
  "CPU devices are simulated: they share this machine's cores, so the CPU "
  "efficiency measures SPMD overhead and collectives, not parallel speed-up."
)


def backend() -> tuple[str, int]:
  """(platform, device count) of this machine, from a child process."""
  code = "import jax; print(jax.default_backend(), jax.device_count())"
  out = subprocess.run(
    [sys.executable, "-c", code], capture_output=True, text=True, check=True
  )
  name, count = out.stdout.split()[-2:]
  return name, int(count)


def device_env(platform: str, n: int, available: int) -> dict | None:
  """The environment that gives a child process n devices, or None."""
  env = dict(os.environ)
  if platform == "cpu":
    flags = [
      f
      for f in env.get("XLA_FLAGS", "").split()
      if not f.startswith("--xla_force_host_platform_device_count")
    ]
    env["XLA_FLAGS"] = " ".join(
      flags + [f"--xla_force_host_platform_device_count={n}"]
    )
    return env
  if platform == "gpu" and n <= available:
    env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(n))
    return env
  return env if n == available else None


def measure(
  config: str, batch: int, steps: int, overrides: dict, env: dict
) -> tuple[dict, list[str], float]:
  """(train_step.py's JSON, its argv, wall seconds) for one measurement."""
  cmd = [
    sys.executable, os.path.join(HERE, "train_step.py"), "--json",
    f"--steps={steps}", "--config", config, f"--config.batch_size={batch}",
  ] + [f"--config.{k}={v}" for k, v in overrides.items()]  # fmt: skip
  start = time.monotonic()
  result = suite._run(cmd, env=env)
  wall = time.monotonic() - start
  if "error" in result:
    raise RuntimeError(f"{' '.join(cmd)} failed: {result['error']}")
  return result, cmd, wall


def add_efficiency(rows: list[dict]) -> None:
  """Scaling efficiency of each row against the smallest count of its kind."""
  for kind in ("weak", "strong"):
    mine = sorted(
      (r for r in rows if r["scaling"] == kind), key=lambda r: r["devices"]
    )
    if not mine:
      continue
    base = mine[0]
    for r in mine:
      ratio = r["devices"] / base["devices"]
      if kind == "weak":
        r["efficiency"] = r["images_per_s"] / (ratio * base["images_per_s"])
      else:
        r["efficiency"] = base["step_s"] / (ratio * r["step_s"])


def point_results(row: dict, out_dir: str) -> dict[str, Any]:
  """A sweep point's results.json (simclr_jax/results.py, mode benchmark)."""
  return {
    "schema_version": 2,
    "mode": "benchmark",
    "metrics": {
      "images_per_sec": row["images_per_s"],
      "views_per_sec": row["views_per_s"],
      "step_time_s": row["step_s"],
      "scaling_efficiency": row["efficiency"],
    },
    "checkpoint": {"dir": os.path.abspath(out_dir), "step": row["steps"]},
    "dataset": {},
    "config": {"batch_size": row["global_batch"]},
    "time_s": row["wall_s"],
    "total_time_s": row["wall_s"],
    "details": {
      "devices": row["devices"],
      "processes": 1,
      "scaling": row["scaling"],
      "per_device_batch": row["global_batch"] // row["devices"],
      "global_batch": row["global_batch"],
      "backend": row["backend"],
      "simulated_devices": row["backend"] == "cpu",
    },
    "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
      timespec="seconds"
    ),
  }


def table(rows: list[dict]) -> str:
  lines = [
    "| scaling | devices | global batch | per device | step s | images/s | efficiency |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
  ]
  for r in rows:
    lines.append(
      f"| {r['scaling']} | {r['devices']} | {r['global_batch']} | "
      f"{r['global_batch'] // r['devices']} | {r['step_s']:.3f} | "
      f"{r['images_per_s']:.1f} | {r['efficiency']:.2f} |"
    )
  return "\n".join(lines) + "\n"


def _plan(args: argparse.Namespace) -> list[tuple[str, int, int]]:
  """(scaling, devices, global batch) to measure; prints what is skipped."""
  plan = []
  for n in args.devices:
    plan.append(("weak", n, n * args.per_device_batch))
  for n in args.devices:
    if args.global_batch % n:
      print(
        f"strong scaling: skipped {n} devices ({args.global_batch} % {n} != 0)"
      )
    else:
      plan.append(("strong", n, args.global_batch))
  return plan


def _args(argv: list[str] | None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--out", default="runs/device_scaling")
  p.add_argument(
    "--config", default=os.path.join(suite.ROOT, "configs/default.py")
  )
  p.add_argument("--devices", default="1,2,4,8")
  p.add_argument("--per_device_batch", type=int, default=32)
  p.add_argument("--global_batch", type=int, default=256)
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
  p.add_argument("--dry_run", action="store_true")
  args = p.parse_args(argv)
  args.config = os.path.abspath(args.config)  # measurements run from ROOT
  args.devices = [int(n) for n in args.devices.split(",")]
  args.overrides = dict(o.split("=", 1) for o in args.override)
  if args.dry_run:
    args.devices, args.steps, args.per_device_batch = [1, 2], 1, 8
    args.global_batch = 16
    args.overrides = {**DRY_RUN, **args.overrides}
  return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
  args = _args(argv)
  platform, available = backend()
  rows = []
  for kind, n, batch in _plan(args):
    env = device_env(platform, n, available)
    if env is None:
      print(f"{kind} scaling: skipped {n} devices ({platform} has {available})")
      continue
    print(
      f"[device_scaling] {kind} {n} device(s), batch {batch} ...", flush=True
    )
    result, cmd, wall = measure(
      args.config, batch, args.steps, args.overrides, env
    )
    rows.append({
      "scaling": kind, "devices": n, "global_batch": batch, "steps": args.steps,
      "backend": result["backend"], "step_s": result["step_s"],
      "images_per_s": result["images_per_s"], "views_per_s": result["views_per_s"],
      "compile_s": result["compile_s"], "wall_s": round(wall, 1), "command": cmd,
    })  # fmt: skip
  add_efficiency(rows)
  os.makedirs(args.out, exist_ok=True)
  points = []
  for r in rows:
    name = f"{r['scaling']}-devices={r['devices']}"
    point_dir = layout.point_dir(args.out, name)
    os.makedirs(point_dir, exist_ok=True)
    with open(os.path.join(point_dir, "results.json"), "w") as f:
      json.dump(point_results(r, point_dir), f, indent=2)
    overrides = {"devices": r["devices"], "batch_size": r["global_batch"]}
    points.append(
      {"name": name, "overrides": overrides, "command": r["command"]}
    )
  layout.write_manifest(
    args.out, "benchmarks/device_scaling.py", args.config, points
  )
  text = table(rows) + ("\n" + SHARED_CORES + "\n" if platform == "cpu" else "")
  with open(os.path.join(args.out, "table.md"), "w") as f:
    f.write(text)
  summary = {"machine": suite.machine(), "argv": sys.argv, "rows": rows}
  with open(os.path.join(args.out, "results.json"), "w") as f:
    json.dump(summary, f, indent=2)
  print(text, end="")
  print(
    f"[device_scaling] wrote {args.out}; plot: python -m simclr_jax.sweep report {args.out}"
  )
  return summary


if __name__ == "__main__":
  main()
