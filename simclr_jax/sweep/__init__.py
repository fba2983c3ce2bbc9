"""Declarative sweeps: expand, run (locally or via SLURM / TPU VM scripts)
and report. A sweep file needs only the helpers exported here:

  from simclr_jax.sweep import product
  base_config = "../cifar10_cpu.py"
  points = product(batch_size=[128, 256, 512], epochs=[1, 2])

`python -m simclr_jax.sweep --help` lists the commands; docs/scaling.md
describes them.
"""

from simclr_jax.sweep.spec import product
from simclr_jax.sweep.spec import zipped

__all__ = ["product", "zipped"]
