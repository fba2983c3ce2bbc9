"""Loading a pretraining run directory for downstream use (read-only).

A run directory, the `--workdir` of `python -m simclr_jax.main`, holds
`run_config.json` (the config and the model signature) and orbax checkpoints
of the whole train state. This module turns it back into a model and its
variables without touching the directory and without the training data:

  from simclr_jax import pretrained
  p = pretrained.load_pretrained("runs/cifar10")       # latest checkpoint
  out = p.model.apply(p.variables, images, train=False)  # preprocessed f32
  out["representation"], out["projection"]

`load_pretrained(..., expect={"depth": 50})` refuses a checkpoint whose
architecture differs from what the caller needs, naming every difference.
Run directories may be relative to the current directory or start with `~`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

from etils import epath
import jax
import ml_collections
import optax
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding
from orbax.checkpoint import checkpoint_manager

from simclr_jax import checkpointing
from simclr_jax import configlib
from simclr_jax import defaults
from simclr_jax import models
from simclr_jax import optim
from simclr_jax import sharding as sharding_lib
from simclr_jax.pretrain import setup as setup_lib
from simclr_jax.training.state import TrainState, abstract_state
from simclr_jax.errors import UserError

_MISSING = "<missing>"


@dataclasses.dataclass(frozen=True)
class Pretrained:
  """A restored encoder: `model.apply(variables, x, train=False)` runs it."""

  config: ml_collections.ConfigDict  # the pretraining config
  model: models.SimCLRModel
  variables: dict[str, Any]  # {'params', 'batch_stats'}, replicated
  step: int  # optimiser steps of the checkpoint
  num_classes: int  # online linear head size (0: none)
  image_size: int  # the size the model was trained at
  mesh: jax.sharding.Mesh  # the mesh `variables` live on


def _read_run_file(run_dir: str) -> dict[str, Any]:
  """The parsed run_config.json of `run_dir`, or a UserError."""
  if not os.path.exists(run_dir):
    raise UserError(
      f"run directory {run_dir} does not exist; pass the "
      "--workdir of a pretraining run (python -m "
      "simclr_jax.main ... --workdir DIR)."
    )
  if not os.path.isdir(run_dir):
    raise UserError(
      f"{run_dir} is a file, not a run directory; pass the "
      "--workdir of a pretraining run."
    )
  path = os.path.join(run_dir, checkpointing.RUN_CONFIG)
  if not os.path.isfile(path):
    raise UserError(
      f"{run_dir} is not a simclr_jax run directory (it has no "
      f"{checkpointing.RUN_CONFIG}); pass the --workdir of a "
      "pretraining run."
    )
  try:
    with open(path) as f:
      payload = json.load(f)
  except (OSError, ValueError) as e:
    raise UserError(
      f"{path} is unreadable ({e}); restore it from a backup "
      "or use another run directory."
    ) from None
  if not isinstance(payload, dict) or not isinstance(
    payload.get("config"), dict
  ):
    raise UserError(
      f"{path} has no 'config' section; it was not written by "
      "simclr_jax.train, so use another run directory."
    )
  return payload


def _merge(
  base: ml_collections.ConfigDict,
  stored: Mapping[str, Any],
  where: str,
  prefix: str = "",
) -> None:
  """Overwrites `base` with the stored values; keys unknown today are
  dropped (removed options), keys missing from the file keep the default."""
  for key, value in stored.items():
    if key not in base:
      continue
    current = base[key]
    if isinstance(current, ml_collections.ConfigDict):
      if isinstance(value, Mapping):
        _merge(current, value, where, f"{prefix}{key}.")
      continue
    if isinstance(current, tuple) and isinstance(value, list):
      value = tuple(value)  # JSON has no tuples
    try:
      base[key] = value
    except TypeError:
      raise UserError(
        f"{where}: config.{prefix}{key}={value!r} does not "
        f"have the type of the default {current!r}; fix the "
        "value in the file."
      ) from None


def load_run_config(run_dir: str) -> ml_collections.ConfigDict:
  """The pretraining config of `run_dir`, over today's `base_config()` so a
  run written before a key existed still loads (with that key's default)."""
  run_dir = checkpointing.resolve_path(run_dir)
  payload = _read_run_file(run_dir)
  config = defaults.base_config()
  _merge(
    config, payload["config"], os.path.join(run_dir, checkpointing.RUN_CONFIG)
  )
  return config


def run_signature(run_dir: str) -> dict[str, Any]:
  """The stored model signature (`configlib.model_signature` at training),
  completed from the stored config for keys older runs did not record."""
  run_dir = checkpointing.resolve_path(run_dir)
  stored = _read_run_file(run_dir).get("model_signature") or {}
  return {**configlib.model_signature(load_run_config(run_dir)), **stored}


def _key_name(key: str) -> str:
  return "data.image_size" if key == "image_size" else f"model.{key}"


def _differences(
  have: Mapping[str, Any],
  want: Mapping[str, Any],
  have_name: str,
  want_name: str,
) -> list[str]:
  return [
    f"{have_name} {_key_name(k)}={have.get(k, _MISSING)}, {want_name} {v}"
    for k, v in want.items()
    if have.get(k, _MISSING) != v
  ]


def check_architecture(
  run_signature: Mapping[str, Any],
  expected: Mapping[str, Any],
  advice: str = "use a checkpoint trained with this architecture or "
  "change the config to the checkpoint's values",
) -> None:
  """Raises UserError naming every key of `expected` the run differs in."""
  diffs = _differences(
    run_signature, expected, "checkpoint has", "config asks for"
  )
  if diffs:
    raise UserError(
      f"the pretrained model does not match ({'; '.join(diffs)}); {advice}."
    )


def _checkpoint_steps(directory: str) -> list[int]:
  """Committed-looking step folders, without creating anything."""
  if not os.path.isdir(directory):
    return []
  return sorted(
    int(n)
    for n in os.listdir(directory)
    if n.isdigit() and os.path.isdir(os.path.join(directory, n))
  )


def _num_classes(step_dir: str) -> int:
  """Size of the stored online linear head (0 if the run had no labels).

  The pretraining config does not record it (it comes from the dataset), so
  it is read from the checkpoint's own metadata instead of the data.
  """
  item = os.path.join(step_dir, checkpoint_manager.DEFAULT_ITEM_NAME)
  tree = ocp.StandardCheckpointHandler().metadata(epath.Path(item))
  head = tree["params"].get(optim.SUPERVISED_HEAD)
  if not head:
    return 0
  return int(head["linear"]["bias"].shape[0])


def abstract_train_state(
  config: ml_collections.ConfigDict,
  num_classes: int,
  sharding: NamedSharding,
) -> tuple[models.SimCLRModel, TrainState]:
  """The model and the shapes of its saved TrainState, as pretrain.setup.TrainSetup
  builds them (no compute, no memory), placed with `sharding`.

  Only the layout of the optimiser state matters for a restore target, and
  LARS keeps the same leaves for any learning-rate schedule, so a constant
  one stands in for the run's (which needs the dataset size).
  """
  model = setup_lib.create_model(configlib.model_config(config), num_classes)
  make_tx = lambda params: setup_lib.create_optimizer(  # noqa: E731
    configlib.optim_config(config), optax.constant_schedule(0.0), params
  )
  init_fn = setup_lib.make_init_fn(model, config.data.image_size, make_tx)
  return model, abstract_state(init_fn, sharding)


def _consistent_run_config(
  run_dir: str,
) -> tuple[ml_collections.ConfigDict, dict[str, Any]]:
  """The run's config and model signature, which must agree."""
  config = load_run_config(run_dir)
  signature = run_signature(run_dir)
  # A hand-edited or mixed-up run_config.json: its config and its signature
  # must describe the same network.
  diffs = _differences(
    signature,
    configlib.model_signature(config),
    "model_signature has",
    "config has",
  )
  if diffs:
    raise UserError(
      f"{os.path.join(run_dir, checkpointing.RUN_CONFIG)} "
      f"contradicts itself ({'; '.join(diffs)}); restore the "
      "file as the run wrote it."
    )
  return config, signature


def _pick_step(
  run_dir: str, ckpt_dir: str, step: int | None
) -> tuple[list[int], int]:
  """The run's checkpoint steps and the one to load (default: latest)."""
  steps = _checkpoint_steps(ckpt_dir)
  if not steps:
    raise UserError(
      f"{run_dir} has no checkpoint yet (nothing in "
      f"{ckpt_dir}); let the run reach "
      "config.checkpoint_every_steps or finish, then retry."
    )
  if step is None:
    step = steps[-1]
  elif step not in steps:
    raise UserError(
      f"{run_dir} has no checkpoint for step {step}; "
      f"available steps: {', '.join(map(str, steps))}."
    )
  return steps, step


def load_pretrained(
  run_dir: str,
  step: int | None = None,
  mesh: jax.sharding.Mesh | None = None,
  expect: Mapping[str, Any] | None = None,
) -> Pretrained:
  """Restores checkpoint `step` (default: the latest) of `run_dir`.

  The variables are replicated over `mesh` (default: every device, as in
  training). `expect` (keys of `configlib.model_signature`) is checked
  against the run's architecture first. Nothing is written to `run_dir`,
  which may be relative to the current directory (orbax itself needs
  absolute paths, so it is resolved here).
  """
  run_dir = checkpointing.resolve_path(run_dir)
  config, signature = _consistent_run_config(run_dir)
  if expect:
    check_architecture(signature, expect)

  ckpt_dir = os.path.join(run_dir, "checkpoints")
  steps, step = _pick_step(run_dir, ckpt_dir, step)

  mesh = mesh or sharding_lib.make_mesh()
  where = os.path.join(ckpt_dir, str(step))
  try:
    num_classes = _num_classes(where)
  except Exception as e:  # pylint: disable=broad-except
    raise _unreadable(where, e, steps) from None
  model, abstract = abstract_train_state(
    config, num_classes, sharding_lib.replicated(mesh)
  )
  # The directory exists and holds steps, so the manager creates nothing.
  ckpt = checkpointing.Checkpointer(run_dir, keep=len(steps), every_steps=1)
  try:
    state = ckpt.restore(abstract, step)
  except checkpointing.CheckpointMismatch as e:
    detail = e.detail
    # Every step of a run has the same layout, so another step cannot help.
    raise UserError(
      f"the checkpoint {where} cannot be restored into the model its "
      f"{checkpointing.RUN_CONFIG} describes ({detail}); put back the "
      f"{checkpointing.RUN_CONFIG} this run wrote (or use the run "
      "directory this one came from), or load it with the simclr_jax "
      "version that trained it."
    ) from None
  except Exception as e:  # pylint: disable=broad-except
    raise _unreadable(where, e, steps) from None
  finally:
    ckpt.close()
  return Pretrained(
    config=config,
    model=model,
    variables={"params": state.params, "batch_stats": state.batch_stats},
    step=int(state.step),
    num_classes=num_classes,
    image_size=config.data.image_size,
    mesh=mesh,
  )


def _unreadable(where: str, e: BaseException, steps: list[int]) -> UserError:
  """Damaged files fail in orbax/TensorStore with assorted exception types
  (plain `Exception` included); the advice depends on what else the run
  holds, and is only about the data: paths were resolved before."""
  text = str(e).split(" See full TensorStore details")[0].strip()
  first = (text.splitlines()[0] if text else repr(e))[:300]
  if isinstance(e, PermissionError) or "ermission denied" in text:
    advice = (
      "make its files readable by this user (check their "
      "permissions), then retry"
    )
  else:
    others = [s for s in steps if s != int(os.path.basename(where))]
    advice = "its files are damaged or incomplete (a crash or a partial copy?)"
    if others:
      advice += (
        f"; other checkpoints of this run: step{'s' * (len(others) > 1)} "
        f"{', '.join(map(str, others))}"
        ": load one with load_pretrained(..., step=N) or `python -m "
        f"simclr_jax.embed --step N`, or move {where} out of the run "
        "directory so that the latest remaining step is used"
      )
    else:
      advice += (
        "; it is this run's only checkpoint: copy the run directory "
        "again from where it was trained, or re-run the pretraining "
        "with a new --workdir"
      )
  return UserError(
    f"the checkpoint {where} cannot be read ({first}); {advice}."
  )
