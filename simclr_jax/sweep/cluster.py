"""Sweeps on clusters: scripts for the scheduler, which does the scheduling.

`slurm_script` writes a SLURM job array with one array task per point; each
task runs the ordinary multi-node command of docs/distributed.md (`srun`,
one process per node, JAX's cluster detection starts the distributed
runtime). A task whose point is done exits at once, so submitting the same
script again after a preemption or a failure resumes the rest.

`tpu_script` writes the `gcloud compute tpus tpu-vm ssh --worker=all`
command of each point, run one after another; every worker runs the same
training command and JAX's TPU detection connects them.

Neither launches anything: they write a file and say how to submit it.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from typing import Sequence

from simclr_jax.sweep import spec


@dataclasses.dataclass(frozen=True)
class SlurmOptions:
  """The #SBATCH resources of every array task (one point per task)."""

  nodes: int = 1
  gpus_per_node: int = 8
  time: str = "24:00:00"
  partition: str = ""
  max_parallel: int = 0  # > 0: at most this many points at once
  setup: str = ""  # shell line run before training, e.g. activating a venv


def _default_setup() -> str:
  return f"cd {shlex.quote(os.getcwd())} && . .venv/bin/activate"


def slurm_script(
  sweep: spec.Sweep,
  sweepdir: str,
  points: Sequence[spec.Point],
  opts: SlurmOptions,
) -> str:
  """The job-array script's text (module docstring)."""
  sweepdir = os.path.abspath(sweepdir)
  name = os.path.splitext(os.path.basename(sweep.path))[0]
  array = f"0-{len(points) - 1}"
  if opts.max_parallel > 0:
    array += f"%{opts.max_parallel}"
  gpus = ",".join(str(i) for i in range(opts.gpus_per_node))
  lines = [
    "#!/bin/bash",
    f"# Sweep {sweep.path} ({len(points)} points), written by",
    "# `python -m simclr_jax.sweep slurm`. Submit with: sbatch THIS_FILE",
    "# Submitting it again skips finished points and resumes the others.",
    f"#SBATCH --job-name=sweep-{name}",
    f"#SBATCH --array={array}",
    f"#SBATCH --nodes={opts.nodes}",
    "#SBATCH --ntasks-per-node=1",
    f"#SBATCH --gpus-per-node={opts.gpus_per_node}",
    f"#SBATCH --time={opts.time}",
    f"#SBATCH --output={sweepdir}/logs/slurm-%A_%a.out",
  ]
  if opts.partition:
    lines.append(f"#SBATCH --partition={opts.partition}")
  lines += [
    "set -euo pipefail",
    opts.setup or _default_setup(),
    f"export JAX_LOCAL_DEVICE_IDS={gpus}  # all GPUs of a node, one process",
    'case "$SLURM_ARRAY_TASK_ID" in',
  ]
  for i, p in enumerate(points):
    done = shlex.quote(os.path.join(sweepdir, p.name, "results.json"))
    cmd = shlex.join(p.command(sweep.base_config, sweepdir))
    lines += [
      f"  {i})  # {p.name}",
      f"    if [ -f {done} ]; then echo 'point {p.name} is done'; exit 0; fi",
      f"    srun {cmd} ;;",
    ]
  lines += [
    '  *) echo "no point for array task $SLURM_ARRAY_TASK_ID"; exit 1 ;;',
    "esac",
  ]
  return "\n".join(lines) + "\n"


def tpu_script(
  sweep: spec.Sweep,
  sweepdir: str,
  points: Sequence[spec.Point],
  setup: str = "cd ~/simclr_jax && . .venv/bin/activate",
) -> str:
  """A shell script of one `gcloud ... --worker=all` command per point, in
  sweep order (module docstring). TPU_NAME and ZONE come from the
  environment; `sweepdir` must be a path every worker sees (e.g. a
  gcsfuse-mounted bucket, docs/distributed.md)."""
  lines = [
    "#!/bin/bash",
    f"# Sweep {sweep.path} ({len(points)} points) on a TPU VM slice, written",
    "# by `python -m simclr_jax.sweep tpu`. Run it where gcloud works:",
    "#   TPU_NAME=... ZONE=... bash THIS_FILE",
    "# Running it again reports finished points and resumes the others.",
    "set -euo pipefail",
    ': "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"',
  ]
  for i, p in enumerate(points, 1):
    remote = f"{setup} && {shlex.join(p.command(sweep.base_config, sweepdir))}"
    lines += [
      f"echo '[sweep {i}/{len(points)}] {p.name}'",
      'gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" '
      f"--worker=all --command {shlex.quote(remote)}",
    ]
  return "\n".join(lines) + "\n"


def write_script(path: str, text: str) -> str:
  """Writes an executable script; returns its path."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    f.write(text)
  os.chmod(path, 0o755)
  return path
