"""Official SimCLR TensorFlow checkpoints (TF1 and TF2) -> simclr_jax runs.

  from simclr_jax import tf_import
  converted = tf_import.convert_checkpoint("r50_1x_sk0", "runs/r50_1x_sk0")

`reader` lists a checkpoint's layers in network order, `architecture` reads
the ResNet off their shapes, `mapping` places them in our model, `convert`
writes the run directory, `export` goes back to the official TF1 names;
`python -m simclr_jax.import_tf` is the command line. docs/pretrained.md
lists the published checkpoints.
"""

from simclr_jax.tf_import.convert import Converted
from simclr_jax.tf_import.convert import build_model
from simclr_jax.tf_import.convert import convert_checkpoint
from simclr_jax.tf_import.convert import load_variables
from simclr_jax.tf_import.export import export_tf1
from simclr_jax.tf_import.reader import read_checkpoint

__all__ = [
  "Converted",
  "build_model",
  "export_tf1",
  "convert_checkpoint",
  "load_variables",
  "read_checkpoint",
]
