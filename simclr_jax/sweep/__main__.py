"""`python -m simclr_jax.sweep COMMAND ...`: run, schedule and report sweeps.

  run SWEEP.py --sweepdir DIR [--only NAME ...] [--dry-run]
      every point on this machine, one after another; again: skips finished
      points and resumes interrupted ones
  slurm SWEEP.py --sweepdir DIR [--nodes N --gpus_per_node G --time T ...]
      writes DIR/sweep.sbatch, a job array with one task per point
  tpu SWEEP.py --sweepdir DIR --devices D --hosts H [--setup CMD]
      writes DIR/tpu_sweep.sh, one `gcloud ... --worker=all` per point
  report DIR [--out OUT]
      one CSV, a markdown table and the paper-style figures

Every point of the sweep file is checked as training would check it (keys,
types, batch vs devices) before anything runs or is written. Bad input ends
in one `error:` line and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from simclr_jax.errors import UserError  # noqa: E402


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
    prog="python -m simclr_jax.sweep",
    description=(
      "Declarative sweeps over a config (docs/scaling.md): run them here, "
      "write SLURM / TPU VM scripts, and report them."
    ),
  )
  sub = p.add_subparsers(dest="command", required=True)

  def sweep_command(name: str, help_: str) -> argparse.ArgumentParser:
    s = sub.add_parser(name, help=help_, description=help_)
    s.add_argument("sweep", help="the sweep file, e.g. configs/sweeps/x.py")
    s.add_argument(
      "--sweepdir", required=True, help="one run directory per point in it"
    )
    s.add_argument(
      "--only", nargs="+", default=[], metavar="NAME", help="these points"
    )
    return s

  r = sweep_command("run", "Run the points on this machine, in order.")
  r.add_argument(
    "--dry-run",
    "--dry_run",
    action="store_true",
    help="list the points, their status and commands; run nothing",
  )
  r.add_argument(
    "--devices",
    type=int,
    default=0,
    help="devices to check batches against (default: this machine's)",
  )
  s = sweep_command("slurm", "Write a SLURM job array, one task per point.")
  s.add_argument("--nodes", type=int, default=1)
  s.add_argument("--gpus_per_node", type=int, default=8)
  s.add_argument("--time", default="24:00:00", help="per point")
  s.add_argument("--partition", default="")
  s.add_argument("--max_parallel", type=int, default=0)
  s.add_argument("--setup", default="", help="default: cd here, activate .venv")
  t = sweep_command("tpu", "Write the gcloud commands for a TPU VM slice.")
  t.add_argument("--devices", type=int, required=True, help="chips")
  t.add_argument("--hosts", type=int, required=True, help="TPU VM workers")
  t.add_argument("--setup", default="cd ~/simclr_jax && . .venv/bin/activate")
  rep = sub.add_parser("report", help="Collect a sweep into tables/figures.")
  rep.add_argument("sweepdir")
  rep.add_argument("--out", default=None, help="default: SWEEPDIR/report")
  return p


def _local_devices() -> int:
  """This machine's device count, from a child process: initialising JAX
  here would hold the accelerator that every point needs."""
  code = "import jax; print(jax.device_count())"
  out = subprocess.run(
    [sys.executable, "-c", code], capture_output=True, text=True, check=False
  )
  try:
    return int(out.stdout.strip().splitlines()[-1])
  except (ValueError, IndexError) as e:
    raise UserError(
      f"could not count this machine's devices ({out.stderr.strip()[-300:]}); "
      "pass --devices N"
    ) from e


def _load(args: argparse.Namespace, devices: int, processes: int):
  from simclr_jax.sweep import spec  # pylint: disable=g-import-not-at-top

  sweep = spec.load(args.sweep)
  spec.check(sweep, devices, processes)
  return sweep, sweep.select(args.only)


def _cluster(args: argparse.Namespace) -> int:
  from simclr_jax.sweep import cluster  # pylint: disable=g-import-not-at-top
  from simclr_jax.sweep import layout  # pylint: disable=g-import-not-at-top
  from simclr_jax.sweep import runner  # pylint: disable=g-import-not-at-top

  if args.command == "slurm":
    sweep, points = _load(args, args.nodes * args.gpus_per_node, args.nodes)
    opts = cluster.SlurmOptions(
      nodes=args.nodes,
      gpus_per_node=args.gpus_per_node,
      time=args.time,
      partition=args.partition,
      max_parallel=args.max_parallel,
      setup=args.setup,
    )
    text = cluster.slurm_script(sweep, args.sweepdir, points, opts)
    path, how = os.path.join(args.sweepdir, "sweep.sbatch"), "sbatch"
  else:
    sweep, points = _load(args, args.devices, args.hosts)
    text = cluster.tpu_script(sweep, args.sweepdir, points, args.setup)
    path, how = os.path.join(args.sweepdir, "tpu_sweep.sh"), "bash"
  layout.write_manifest(
    args.sweepdir,
    sweep.path,
    sweep.base_config,
    runner.manifest_points(sweep, args.sweepdir),
  )
  cluster.write_script(path, text)
  print(f"wrote {path} ({len(points)} point(s)); submit it with: {how} {path}")
  return 0


def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  try:
    if args.command == "report":
      from simclr_jax.sweep import report  # pylint: disable=g-import-not-at-top

      report.run(args.sweepdir, out=args.out)
      return 0
    if args.command in ("slurm", "tpu"):
      return _cluster(args)
    from simclr_jax.sweep import runner  # pylint: disable=g-import-not-at-top

    sweep, points = _load(args, args.devices or _local_devices(), 1)
    if args.dry_run:
      print(runner.describe(sweep, args.sweepdir, points))
      return 0
    return runner.run(sweep, args.sweepdir, args.only)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    return 2


if __name__ == "__main__":
  sys.exit(main())
