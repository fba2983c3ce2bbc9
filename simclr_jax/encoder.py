"""A ready-to-use frozen encoder from a run directory, in one call:

  from simclr_jax import encoder
  enc = encoder.load_encoder("runs/quickstart")      # latest checkpoint
  features = enc(images)                # (N, F) float32 numpy
  projections = enc(images, projection=True)

`images` are (N, H, W, 3) (or one (H, W, 3) image), uint8 in 0..255 or
floats in [0, 1], any size: they get the run's evaluation preprocessing on
the device (centre crop and resize to its input size, BatchNorm in inference
mode), in batches sharded over every device. Images of the run's host size
(`data.host_size`, else its image size), as its data pipeline produces
them, give exactly the features its evaluation used.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import numpy as np

from simclr_jax import pretrained as pretrained_lib
from simclr_jax import sharding
from simclr_jax.eval import features as features_lib


def projection_fn(model: Any, mesh: jax.sharding.Mesh) -> Callable:
  """Jitted (variables, representations) -> projection-head outputs, with
  BatchNorm in inference mode."""
  data = sharding.batch_sharding(mesh)

  def project(variables, representation):
    head = {
      k: v["projection_head"]
      for k, v in variables.items()
      if "projection_head" in v
    }
    return model.projection_head.apply(head, representation, train=False)

  return jax.jit(
    project, in_shardings=(sharding.replicated(mesh), data), out_shardings=data
  )


@dataclasses.dataclass
class Encoder:
  """`encoder(images) -> features`; `pretrained` holds the model, variables,
  config and step it came from."""

  pretrained: pretrained_lib.Pretrained
  _features: Callable = dataclasses.field(repr=False)
  _project: Callable = dataclasses.field(repr=False)

  @property
  def image_size(self) -> int:
    """The model input size the run was trained at."""
    return self.pretrained.image_size

  @property
  def step(self) -> int:
    return self.pretrained.step

  def __call__(
    self,
    images: Any,
    *,
    batch_size: int = 256,
    projection: bool = False,
  ) -> np.ndarray:
    """Representations (or, with `projection`, projection-head outputs) of
    `images`, as float32 numpy; the same on every process."""
    images = np.asarray(images)
    single = images.ndim == 3
    if single:
      images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(
        "images must be (N, H, W, 3) or (H, W, 3) RGB arrays; got shape "
        f"{images.shape}"
      )
    if batch_size < 1:
      raise ValueError(f"batch_size={batch_size} must be at least 1")
    mesh = self.pretrained.mesh
    devices = mesh.size
    batch = -(-min(batch_size, max(len(images), 1)) // devices) * devices
    data = sharding.batch_sharding(mesh)
    variables = self.pretrained.variables
    out = []
    for start in range(0, len(images), batch):
      chunk = images[start : start + batch]
      x = sharding.put_rows(chunk, batch, data)
      y = self._features(variables, x)
      if projection:
        y = self._project(variables, y)
      out.append(sharding.to_host(y)[: len(chunk)])
    if not out:
      dim = self(np.zeros((1, *images.shape[1:]), images.dtype)).shape[-1]
      return np.zeros((0, dim), np.float32)
    result = np.concatenate(out).astype(np.float32)
    return result[0] if single else result


def load_encoder(
  run_dir: str,
  step: int | None = None,
  mesh: jax.sharding.Mesh | None = None,
) -> Encoder:
  """The frozen encoder of checkpoint `step` (default: the latest) of the
  pretraining run `run_dir`, with its model and data settings from the
  run's `run_config.json`; nothing in `run_dir` is written."""
  p = pretrained_lib.load_pretrained(run_dir, step=step, mesh=mesh)
  return Encoder(
    pretrained=p,
    _features=features_lib.make_feature_fn(p.model, p.mesh, p.image_size),
    _project=projection_fn(p.model, p.mesh),
  )
