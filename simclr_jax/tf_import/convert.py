"""An official checkpoint -> an ordinary simclr_jax run directory.

The run directory is what pretraining leaves (`run_config.json`, an orbax
checkpoint of the whole train state), so every downstream feature takes it:
`--config.mode=knn|linear|finetune --config.init_checkpoint=RUN_DIR`,
`python -m simclr_jax.embed --checkpoint RUN_DIR`, `load_pretrained`. The
optimiser state in it is a fresh one (the converter keeps weights, not
LARS momenta), and `imported_from.json` records the source.

It is written to a sibling folder and renamed into place at the end, so an
interrupted conversion leaves no half-written run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from simclr_jax import checkpointing
from simclr_jax import configlib
from simclr_jax import defaults
from simclr_jax import sharding as sharding_lib
from simclr_jax.errors import UserError
from simclr_jax.pretrain import setup as setup_lib
from simclr_jax.tf_import import architecture
from simclr_jax.tf_import import mapping
from simclr_jax.tf_import import reader
from simclr_jax.training.state import new_state

PROVENANCE = "imported_from.json"
MODEL_KEYS = tuple(k for k in architecture.KEYS if k != "num_classes")


@dataclasses.dataclass(frozen=True)
class Converted:
  """The result of a conversion: the run and what it came from."""

  run_dir: str
  step: int
  architecture: dict[str, Any]  # the architecture.KEYS values
  variables: dict[str, Any]  # {'params', 'batch_stats'} as numpy
  checkpoint: reader.TFCheckpoint


def run_config(
  arch: dict[str, Any], base: ml_collections.ConfigDict | None = None
) -> ml_collections.ConfigDict:
  """`base` (default: defaults.base_config(), with CIFAR-10 at 32 px for a
  CIFAR stem, else ImageNet at 224 px) with the checkpoint's model keys."""
  config = (
    defaults.base_config()
    if base is None
    else base.copy_and_resolve_references()
  )
  if base is None and arch["cifar_stem"]:
    config.data.name = "cifar10"
    config.data.eval_split = "test"
    config.data.image_size = 32
  with config.unlocked():
    for key in MODEL_KEYS:
      config.model[key] = type(config.model[key])(arch[key])
  return config


def load_variables(
  checkpoint: str, *, ema: bool = False, **given: Any
) -> tuple[reader.TFCheckpoint, dict[str, Any], dict[str, Any]]:
  """(checkpoint, architecture, {'params', 'batch_stats'}) without writing
  anything; `given` architecture keys override the inferred ones."""
  ckpt = reader.read_checkpoint(checkpoint, ema=ema)
  arch = architecture.infer(ckpt, given)
  return ckpt, arch, mapping.convert_variables(ckpt, build_model(arch), 32)


def build_model(arch: dict[str, Any]) -> Any:
  """The SimCLRModel of the architecture keys `arch`."""
  config = run_config(arch)
  return setup_lib.create_model(
    configlib.model_config(config), arch["num_classes"]
  )


def _check_out(out: str) -> str:
  out = checkpointing.resolve_path(out)
  if os.path.lexists(out) and not (os.path.isdir(out) and not os.listdir(out)):
    raise UserError(
      f"--out {out} already exists; give the converted run a new folder "
      "(nothing was changed)."
    )
  checkpointing.check_workdir(out, "--out")
  return out


def _write(
  path: str, config: ml_collections.ConfigDict, variables: dict, step: int
) -> None:
  tx = setup_lib.create_optimizer(
    configlib.optim_config(config),
    optax.constant_schedule(0.0),
    variables["params"],
  )
  rng = jax.random.split(jax.random.PRNGKey(config.seed))[1]
  state = new_state(
    variables["params"], variables["batch_stats"], tx, rng
  ).replace(step=jnp.asarray(step, jnp.int32))
  mesh = sharding_lib.make_mesh()
  state = jax.device_put(state, sharding_lib.replicated(mesh))
  ckpt = checkpointing.Checkpointer(
    path, keep=1, every_steps=1, async_save=False
  )
  try:
    ckpt.maybe_save(step, state, force=True)
  finally:
    ckpt.close()
  checkpointing.write_run_config(
    path, config.to_json_best_effort(), configlib.model_signature(config)
  )


def convert_checkpoint(
  checkpoint: str,
  out: str,
  *,
  ema: bool = False,
  config: ml_collections.ConfigDict | None = None,
  **given: Any,
) -> Converted:
  """Converts the official TF1/TF2 checkpoint at `checkpoint` (a folder, a
  prefix or one of its files) into the new run directory `out`.

  `ema` takes the `ema_model/` copy of the weights. `config` supplies every
  section but the model's (data, eval, ...), which downstream runs inherit;
  `given` keys of `architecture.KEYS` (e.g. `sk_ratio=0.0625`) override
  what is read off the checkpoint. UserError for anything that does not
  fit, before `out` is created.
  """
  out = _check_out(out)
  ckpt, arch, variables = load_variables(checkpoint, ema=ema, **given)
  cfg = run_config(arch, config)
  parent = os.path.dirname(out)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(
    prefix=f".{os.path.basename(out)}.partial-", dir=parent
  )
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 -> a normal folder
  try:
    _write(tmp, cfg, variables, ckpt.step)
    with open(os.path.join(tmp, PROVENANCE), "w") as f:
      json.dump(
        {
          "checkpoint": ckpt.prefix,
          "format": ckpt.format,
          "global_step": ckpt.step,
          "ema": ema,
          "architecture": arch,
          "projection_head": "checkpoint"
          if "projection_head" in ckpt.sections
          else "fresh: the checkpoint has none",
          "ignored_variables": len(ckpt.ignored),
        },
        f,
        indent=2,
      )
    if os.path.isdir(out):
      os.rmdir(out)  # empty (checked above)
    os.rename(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return Converted(out, ckpt.step, arch, variables, ckpt)
