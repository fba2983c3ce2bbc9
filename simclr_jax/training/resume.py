"""Checkpoints of the downstream trainers (fine-tuning, SGD linear
evaluation) in their own workdir, so that a run that was stopped (SIGTERM,
Ctrl-C) or killed resumes from its newest checkpoint instead of starting
over, and the fine-tuned network is kept when the run ends.

The workdir is guarded before anything is written: `training_setup.json`,
written by the first invocation, records what it trains (the protocol's
settings, the encoder it started from, data, seed, batch and steps). A
later invocation with other settings, or a workdir that holds checkpoints
of another kind of run (a pretraining run), is a UserError that leaves the
directory as it was.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Protocol

import jax

from simclr_jax import checkpointing
from simclr_jax.errors import UserError
from simclr_jax.reporting import print_main

SETUP_FILE = "training_setup.json"


class Saver(Protocol):
  """Where `loop.run_steps` saves: periodic checkpoints (`due`), the last
  step, and the step a stop request ends on; `latest_step` is what the NaN
  report offers to resume from."""

  directory: str

  def due(self, step: int) -> bool: ...

  def save(self, step: int, state: Any) -> None: ...

  def latest_step(self) -> int | None: ...


def _plain(setup: dict) -> dict:
  """`setup` as it reads back from JSON (tuples become lists)."""
  return json.loads(json.dumps(setup, sort_keys=True))


def _flat(tree: dict, prefix: str = "") -> dict[str, Any]:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flat(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


class TrainerCheckpoints:
  """A downstream trainer's checkpoints in `workdir/checkpoints/`, and the
  loop's `Saver`. `what` names the trainer ("fine-tuning"); `setup` (plain
  JSON values) is what must be equal for a resume."""

  def __init__(
    self,
    workdir: str,
    *,
    what: str,
    setup: dict,
    keep: int,
    every_steps: int,
  ):
    if every_steps < 1 or keep < 1:
      raise UserError(
        f"{what} checkpoints need checkpoint_every_steps >= 1 and "
        f"keep_checkpoints >= 1, got {every_steps} and {keep}."
      )
    self.workdir = checkpointing.resolve_path(workdir)
    self.what, self.setup = what, _plain({"what": what, **setup})
    self.keep, self.every_steps = keep, every_steps
    self.directory = os.path.join(self.workdir, "checkpoints")
    self._path = os.path.join(self.workdir, SETUP_FILE)
    self._ckpt: checkpointing.Checkpointer | None = None
    self.check()

  def check(self) -> None:
    """UserError if the workdir holds another run (nothing is written)."""
    stored = self._stored()
    if stored is None:
      if os.path.isdir(self.directory) and os.listdir(self.directory):
        raise UserError(
          f"--workdir {self.workdir} holds checkpoints but no {SETUP_FILE}: "
          f"it is not a {self.what} run (a pretraining run?); give the "
          f"{self.what} run a new --workdir."
        )
      return
    old, new = _flat(stored), _flat(self.setup)
    diffs = [
      f"{k}: {old.get(k)!r} there, {new.get(k)!r} now"
      for k in sorted(set(old) | set(new))
      if old.get(k) != new.get(k)
    ]
    if diffs:
      shown = "; ".join(diffs[:4]) + ("; ..." if len(diffs) > 4 else "")
      raise UserError(
        f"--workdir {self.workdir} holds a {stored.get('what', 'training')} "
        f"run with other settings ({shown}); use a new --workdir, or the "
        "settings it was started with to resume it."
      )

  def _stored(self) -> dict | None:
    if not os.path.exists(self._path):
      return None
    try:
      with open(self._path, encoding="utf-8") as f:
        stored = json.load(f)
      if not isinstance(stored, dict):
        raise ValueError("not a JSON object")
      return stored
    except (OSError, ValueError) as e:
      raise UserError(
        f"{self._path} is unreadable ({e}); restore it, or use a new --workdir."
      ) from None

  def start(
    self, init: Callable[[], Any], sharding: jax.sharding.Sharding
  ) -> tuple[Any, int]:
    """(state, step): the newest intact checkpoint (damaged newer ones are
    set aside, said on stdout), or `init()` and 0. Opens the checkpoints
    and records the setup (first invocation)."""
    abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
      jax.eval_shape(init),
    )
    self._ckpt = checkpointing.Checkpointer(
      self.workdir, keep=self.keep, every_steps=self.every_steps
    )
    self._write_setup()
    restored = self._ckpt.restore_newest_intact(abstract)
    if restored is None:
      return init(), 0
    state, step = restored
    print_main(f"{self.what}: resumed from {self.directory} at step {step}.")
    return state, step

  def _write_setup(self) -> None:
    if jax.process_index() != 0 or os.path.exists(self._path):
      return
    tmp = self._path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
      json.dump(self.setup, f, indent=2, sort_keys=True)
    os.replace(tmp, self._path)

  def due(self, step: int) -> bool:
    return step % self.every_steps == 0

  def save(self, step: int, state: Any) -> None:
    self._opened().maybe_save(step, state, force=True)

  def latest_step(self) -> int | None:
    return self._opened().latest_step()

  def close(self) -> None:
    """Waits for the last write; the checkpoints stay (the trained state)."""
    if self._ckpt is not None:
      self._ckpt.close()

  def _opened(self) -> checkpointing.Checkpointer:
    if self._ckpt is None:
      raise RuntimeError("TrainerCheckpoints.start() was not called")
    return self._ckpt
