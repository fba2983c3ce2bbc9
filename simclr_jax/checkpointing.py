"""Orbax checkpoints of the train state, with a compatibility guard.

A run directory holds `checkpoints/<step>/` (orbax, keep-N) and
`run_config.json` (the config that created it). Before anything is written we
compare the model signature of the new config with the stored one, so a
mismatched config is refused with a clear message instead of crashing halfway
through a restore or silently mixing runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Any, Iterator

from etils import epath
import jax
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp

from simclr_jax.errors import UserError

RUN_CONFIG = "run_config.json"


def resolve_path(path: str) -> str:
  """A user's path made absolute (relative to the current directory, `~`
  expanded), as orbax needs; "" and URLs such as gs://... stay as given."""
  if not path or "://" in path:
    return path
  return os.path.abspath(os.path.expanduser(path))


def nearest_existing(path: str, flag: str = "--workdir") -> str:
  """`path` made absolute, or its closest ancestor that exists (where it
  would be created). A symbolic link on the way that resolves nowhere
  (dangling, or a loop) is a UserError naming `flag`: nothing can be
  created through it."""
  given, path = path, os.path.abspath(path)
  while not os.path.lexists(path):
    path = os.path.dirname(path)
  if not os.path.exists(path):
    try:
      target = os.readlink(path)
    except OSError as e:
      target = e.strerror
    raise UserError(
      f"{flag} {given}: {path} is a symbolic link that leads nowhere "
      f"(to {target}); fix the link or choose another {flag}."
    )
  return path


def check_workdir(workdir: str, flag: str = "--workdir") -> None:
  """Fails early if `workdir` cannot be created, read or written (a URL
  such as gs://... is left to orbax); messages name it as `flag`."""
  if "://" in workdir:
    return
  path = nearest_existing(workdir, flag)
  if not os.path.isdir(path):
    raise UserError(
      f"{flag} {workdir}: {path} is a file, not a "
      f"directory; choose another {flag}."
    )
  if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
    raise UserError(
      f"{flag} {workdir}: {path} is not readable and "
      f"writable by this user; choose another {flag} or fix "
      "its permissions."
    )
  # os.access says yes to root, and to /proc or /sys, where nothing can be
  # made: try it (a nameless temporary file in an existing workdir, a
  # directory removed at once in the parent of a new one).
  try:
    if path == os.path.abspath(workdir):
      tempfile.TemporaryFile(dir=path).close()
    else:
      os.rmdir(tempfile.mkdtemp(prefix=".simclr_probe_", dir=path))
  except OSError as e:
    raise UserError(
      f"{flag} {workdir}: cannot write in {path} ({e.strerror}); "
      f"choose another {flag} on a writable file system."
    ) from None
  ckpts = os.path.join(workdir, "checkpoints")
  if os.path.exists(ckpts) and not os.access(ckpts, os.R_OK | os.X_OK):
    raise UserError(
      f"{flag} {workdir}: cannot read {ckpts}; fix its "
      f"permissions or choose another {flag}."
    )


def check_compatible(workdir: str, signature: dict) -> None:
  """Raises UserError if `workdir` was created with another model signature."""
  path = os.path.join(workdir, RUN_CONFIG)
  if not os.path.exists(path):
    return
  try:
    with open(path) as f:
      stored = json.load(f).get("model_signature", {})
  except (OSError, ValueError) as e:
    raise UserError(
      f"{path} is unreadable ({e}); restore it or use a new --workdir."
    ) from None
  diffs = [
    f"{k}: checkpoint {stored.get(k)!r} vs config {v!r}"
    for k, v in signature.items()
    if stored.get(k) != v
  ]
  if diffs:
    raise UserError(
      f"--workdir {workdir} holds a run with a different model "
      f"({'; '.join(diffs)}); use a new --workdir or the "
      "original config."
    )


def write_run_config(workdir: str, config_json: str, signature: dict) -> None:
  """Records the config (once per run directory; resumes keep the original)."""
  path = os.path.join(workdir, RUN_CONFIG)
  if jax.process_index() != 0 or os.path.exists(path):
    return
  os.makedirs(workdir, exist_ok=True)
  payload = {"model_signature": signature, "config": json.loads(config_json)}
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(payload, f, indent=2, sort_keys=True)
  os.replace(tmp, path)


def _first_line(e: BaseException) -> str:
  """The gist of an orbax/TensorStore error (their messages run long)."""
  text = str(e).split("See full TensorStore details")[0].strip()
  return text.splitlines()[0].strip() if text else repr(e)


class CheckpointMismatch(UserError):
  """A checkpoint whose tree does not fit the restore target; `detail` is
  orbax's reason, for callers that give their own advice."""

  def __init__(self, message: str, detail: str):
    super().__init__(message)
    self.detail = detail


class Checkpointer:
  """Periodic and final saves with keep-N, and restore of the latest step.

  Saves are asynchronous (`async_save`, orbax's default): `maybe_save`
  returns once the state is copied to host memory and the files are written
  by a background thread while training goes on; the next save, `close`
  and `wait` wait for the previous write. benchmarks/checkpoint_stall.py
  measures the step-time hiccup of both modes.
  """

  def __init__(
    self, workdir: str, *, keep: int, every_steps: int, async_save: bool = True
  ):
    self.directory = resolve_path(os.path.join(workdir, "checkpoints"))
    self.every_steps = every_steps
    self._options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=True, enable_async_checkpointing=async_save
    )
    self._writing: int | None = None  # the step of a write in flight
    self._manager = self._open()

  def _open(self) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(self.directory, options=self._options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def restore(self, abstract_state: Any, step: int | None = None) -> Any:
    """Restores into the shapes, dtypes and shardings of `abstract_state`."""
    step = self.latest_step() if step is None else step
    try:
      return self._manager.restore(
        step, args=ocp.args.StandardRestore(abstract_state)
      )
    except Exception as e:  # pylint: disable=broad-except
      first = _first_line(e)
      raise CheckpointMismatch(
        f"the checkpoint at {self.directory}/{step} does not "
        f"fit this config ({first[:300]}); use a new --workdir "
        "or the config it was trained with.",
        detail=first[:300],
      ) from None

  def restore_newest_intact(
    self, abstract_state: Any
  ) -> tuple[Any, int] | None:
    """(state, step) of the newest checkpoint that restores; None if there
    is none. Newer ones that fail (damaged: missing, truncated or garbled
    files) are moved to `checkpoints_damaged/` beside `checkpoints/`, kept
    for inspection, and reported on stdout; if none restores, a UserError
    (a CheckpointMismatch when all fail alike: another config)."""
    failed: list[tuple[int, CheckpointMismatch]] = []
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        state = self.restore(abstract_state, step)
      except CheckpointMismatch as e:
        failed.append((step, e))
        self._manager.close()  # it may have cached what it read of `step`
        self._manager = self._open()
        continue
      if failed:
        self._set_aside(failed, step)
      return state, step
    if not failed:
      return None
    if len({e.detail.replace(str(s), "#") for s, e in failed}) == 1:
      raise failed[0][1]
    reasons = "; ".join(f"step {s}: {e.detail[:120]}" for s, e in failed[:3])
    raise UserError(
      f"no checkpoint in {self.directory} can be restored ({reasons}); "
      "nothing was changed: restore the directory from a backup, or move it "
      "away to start again."
    )

  def _set_aside(self, failed: list, good: int) -> None:
    """Moves damaged steps out of the manager's sight (process 0), so that
    keep-N and `latest_step` see only intact ones; reopens the manager."""
    aside = epath.Path(self.directory).parent / "checkpoints_damaged"
    if jax.process_index() == 0:
      aside.mkdir(parents=True, exist_ok=True)
      for step, e in failed:
        target = aside / str(step)
        n = 1
        while target.exists():
          target, n = aside / f"{step}.{n}", n + 1
        (epath.Path(self.directory) / str(step)).rename(target)
        print(
          f"warning: checkpoint {step} in {self.directory} is damaged "
          f"({e.detail[:200]}); moved it to {target} and resumed from step "
          f"{good}.",
          flush=True,
        )
    multihost_utils.sync_global_devices("simclr_jax.checkpoints_set_aside")
    self._manager.close()
    self._manager = self._open()

  def maybe_save(self, step: int, state: Any, force: bool = False) -> bool:
    """Saves `step` when due (or `force`); False if not due or already
    saved. A failed write (disk full, lost permissions) is a UserError that
    says the checkpoints before it are intact."""
    if not force and step % self.every_steps:
      return False
    if self._manager.latest_step() == step:
      return False
    with self._write_errors(step):
      saved = self._manager.save(
        step, args=ocp.args.StandardSave(state), force=True
      )
    self._writing = step
    return saved

  @contextlib.contextmanager
  def _write_errors(self, step: int) -> Iterator[None]:
    """Turns an error of the write of `step` (or of the previous async
    write, which surfaces here) into one clear UserError."""
    try:
      yield
    except UserError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      writing = self._writing if self._writing is not None else step
      intact = [s for s in self._manager.all_steps() if s < writing]
      newest = f"step {max(intact)}" if intact else "none yet"
      raise UserError(
        f"writing the checkpoint of step {writing} to {self.directory} "
        f"failed ({_first_line(e)[:200]}); the checkpoints before it are "
        f"intact (newest: {newest}); free disk space or fix the filesystem, "
        "then rerun the same command to resume."
      ) from None

  def wait(self) -> None:
    """Blocks until the last save is on disk."""
    with self._write_errors(-1):
      self._manager.wait_until_finished()
    self._writing = None

  def close(self) -> None:
    try:
      self.wait()
    finally:
      self._manager.close()
