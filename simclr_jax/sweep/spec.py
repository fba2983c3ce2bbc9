"""Sweep files: a base config plus a list of override dicts, one per point.

A sweep file is a Python file (by convention in configs/sweeps/) that sets

  base_config = "../cifar10_cpu.py"   # relative to the sweep file or cwd
  points = product(batch_size=[128, 256, 512], epochs=[1, 2])

and may define `derive(point) -> dict`: settings that follow from a point
(e.g. a warm-up that depends on the epochs), added to its overrides but not
to its name. Keys are the dotted keys of `--config.KEY=VALUE`; positional
dicts allow dotted names: `product({"model.depth": [18, 50]}, epochs=[100])`.

Each point is named by its own keys and values in order, e.g.
`batch_size=256,epochs=2`; a key is shortened to its last part
(`model.depth` -> `depth`) unless two keys of the sweep end alike. The
name is the point's run directory under the sweep directory, so it must
stay the same for the same overrides: it depends on nothing else.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
import runpy
from typing import Any, Callable, Mapping, Sequence

from simclr_jax import configlib
from simclr_jax.errors import UserError

Overrides = dict[str, Any]
_SAFE = re.compile(r"[^A-Za-z0-9._+-]")


def _axes(axes: Sequence[Any], named: Mapping[str, Sequence[Any]]) -> list:
  """Each axis as a list of override dicts (one per value)."""
  out = []
  for axis in list(axes) + [named]:
    if isinstance(axis, Mapping):
      for key, values in axis.items():
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
          raise UserError(
            f"sweep axis {key!r} needs a list of values, got {values!r}"
          )
        out.append([{key: v} for v in values])
    else:  # already a list of points, e.g. from zipped(...)
      out.append([dict(p) for p in axis])
  return out


def product(*axes: Any, **named: Sequence[Any]) -> list[Overrides]:
  """Every combination of the axes' values, the last axis varying fastest:
  product(batch_size=[256, 512], epochs=[100, 200]) gives 4 points. An axis
  is `key=[values]`, a `{"dotted.key": [values]}` dict, or a list of points
  (e.g. zipped(...))."""
  combos = itertools.product(*_axes(axes, named))
  return [{k: v for part in combo for k, v in part.items()} for combo in combos]


def zipped(*axes: Any, **named: Sequence[Any]) -> list[Overrides]:
  """The axes' values taken together, position by position:
  zipped({"model.depth": [18, 50]}, batch_size=[512, 256]) gives 2
  points. Every axis must have the same length."""
  lists = _axes(axes, named)
  lengths = sorted({len(values) for values in lists})
  if len(lengths) > 1:
    raise UserError(f"zipped(...) axes have different lengths {lengths}")
  return [
    {k: v for part in parts for k, v in part.items()} for parts in zip(*lists)
  ]


def _value_text(value: Any) -> str:
  if isinstance(value, float):
    return f"{value:g}"
  if isinstance(value, (tuple, list)):
    return "-".join(_value_text(v) for v in value)
  return _SAFE.sub("_", str(value))


def point_names(points: Sequence[Overrides]) -> list[str]:
  """The readable, stable name of every point (module docstring)."""
  keys = {k for p in points for k in p}
  ends = [k.split(".")[-1] for k in keys]
  short = {k: k.split(".")[-1] for k in keys}
  for k in keys:
    if ends.count(short[k]) > 1:
      short[k] = k
  names = []
  for p in points:
    parts = [f"{short[k]}={_value_text(v)}" for k, v in p.items()]
    names.append(",".join(parts) or "base")
  return names


def flag(key: str, value: Any) -> str:
  """`--config.KEY=VALUE` as the command line parses it back."""
  if isinstance(value, (tuple, list)):
    value = (
      "("
      + ",".join(str(v) for v in value)
      + ("," if len(value) == 1 else "")
      + ")"
    )
  return f"--config.{key}={value}"


@dataclasses.dataclass(frozen=True)
class Point:
  """One run of a sweep: its name, the point's own overrides (which name
  it) and every override it runs with (derived settings included)."""

  name: str
  own: Overrides
  overrides: Overrides

  def command(self, base_config: str, sweepdir: str) -> list[str]:
    """The training command of this point (`python` is the interpreter)."""
    workdir = os.path.join(sweepdir, self.name)
    flags = [flag(k, v) for k, v in self.overrides.items()]
    return [
      "python", "-m", "simclr_jax.main", "--config", base_config,
      "--workdir", workdir, *flags,
    ]  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Sweep:
  path: str
  base_config: str
  points: tuple[Point, ...]

  def select(self, only: Sequence[str] | None) -> list[Point]:
    """The points named in `only` (all when empty), in sweep order."""
    if not only:
      return list(self.points)
    names = [p.name for p in self.points]
    unknown = [n for n in only if n not in names]
    if unknown:
      raise UserError(
        f"--only {' '.join(unknown)}: not a point of {self.path}; its points "
        f"are: {' '.join(names)}"
      )
    return [p for p in self.points if p.name in only]


def _base_config(path: str, given: Any) -> str:
  if not isinstance(given, str) or not given:
    raise UserError(
      f"sweep file {path} must set base_config = 'CONFIG.py' (a config file "
      "defining get_config())"
    )
  given = os.path.expanduser(given)
  if os.path.isabs(given):
    if os.path.isfile(given):
      return given
  else:
    beside = os.path.normpath(os.path.join(os.path.dirname(path), given))
    for candidate in (beside, given):
      if os.path.isfile(candidate):
        return os.path.relpath(candidate)
  raise UserError(
    f"sweep file {path}: base_config {given!r} is neither a file next to "
    "the sweep file nor relative to the current directory"
  )


def _derived(derive: Callable | None, name: str, own: Overrides) -> Overrides:
  if derive is None:
    return dict(own)
  extra = derive(dict(own)) or {}
  if not isinstance(extra, Mapping):
    raise UserError(f"point {name}: derive() must return a dict of overrides")
  clash = sorted(set(extra) & set(own))
  if clash:
    raise UserError(
      f"point {name}: derive() sets {', '.join(clash)}, which the point "
      "itself sets; derive only keys the points do not vary"
    )
  return {**own, **extra}


def load(path: str) -> Sweep:
  """Reads and expands a sweep file; UserError for a malformed one."""
  if not os.path.isfile(path):
    raise UserError(f"sweep file {path} does not exist")
  try:
    namespace = runpy.run_path(path)
  except UserError as e:
    raise UserError(f"sweep file {path}: {e}") from e
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f"sweep file {path} raised {type(e).__name__}: {e}") from e
  base = _base_config(path, namespace.get("base_config"))
  raw = namespace.get("points")
  if not isinstance(raw, (list, tuple)) or not raw:
    raise UserError(
      f"sweep file {path} must set points = [...] (a non-empty list of "
      "override dicts, e.g. product(batch_size=[256, 512]))"
    )
  if not all(isinstance(p, Mapping) for p in raw):
    raise UserError(f"sweep file {path}: every point must be a dict")
  names = point_names(raw)
  seen: dict[str, int] = {}
  for i, name in enumerate(names):
    if name in seen:
      raise UserError(
        f"sweep file {path}: points {seen[name]} and {i} are both named "
        f"{name} (the same overrides); remove one"
      )
    seen[name] = i
  derive = namespace.get("derive")
  points = tuple(
    Point(name, dict(own), _derived(derive, name, own))
    for name, own in zip(names, raw)
  )
  return Sweep(path=path, base_config=base, points=points)


def check(sweep: Sweep, device_count: int, process_count: int = 1) -> None:
  """Builds every point's config as training would (same checks) and fails
  on the first bad one, naming it, before anything runs."""
  for point in sweep.points:
    try:
      config = configlib.load_config(sweep.base_config, point.overrides)
      configlib.build(config, device_count, process_count)
    except UserError as e:
      raise UserError(f"point {point.name}: {e}") from e
