"""docs/api.md cannot rot: its examples run and its signatures are the code's.

Every ```python block of docs/api.md is executed in a fresh namespace, in
this process (so the 8 simulated devices of conftest.py apply). Every line
of a ```text block that starts with `simclr_jax.` and looks like a call is
read as a signature and compared with `inspect.signature` of the object it
names: parameter names, kinds and (evaluated) defaults must all agree.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pathlib
import re

import flax.linen as nn
import jax.numpy as jnp
import pytest

API_MD = pathlib.Path(__file__).resolve().parents[1] / "docs" / "api.md"
_FENCE = re.compile(r"^```(\w*)[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)
# Flax modules take these two extra constructor arguments; not API.
_FLAX_EXTRA = ("parent", "name")


def _blocks(language: str) -> list[tuple[int, str]]:
  """(line number, source) of every fenced block in the given language."""
  text = API_MD.read_text()
  return [
    (text.count("\n", 0, m.start()) + 1, m.group(2))
    for m in _FENCE.finditer(text)
    if m.group(1) == language
  ]


def _heading_before(line: int) -> str:
  """The last Markdown heading (outside code fences) before `line`."""
  heading, in_fence = "top", False
  for text in API_MD.read_text().splitlines()[: line - 1]:
    if text.startswith("```"):
      in_fence = not in_fence
    elif text.startswith("#") and not in_fence:
      heading = re.sub(r"\W+", "_", text.lstrip("# ")).strip("_").lower()
  return heading


_PYTHON = _blocks("python")


def test_the_doc_has_examples_and_signatures():
  assert len(_PYTHON) >= 10
  assert len(_signatures()) >= 30


@pytest.mark.parametrize(
  "line, source",
  _PYTHON,
  ids=[f"line{line}_{_heading_before(line)}" for line, _ in _PYTHON],
)
def test_python_example_runs(line, source):
  # Leading newlines make tracebacks point at the right line of api.md.
  code = compile("\n" * line + source, str(API_MD), "exec")
  exec(code, {"__name__": f"api_md_line{line}"})  # pylint: disable=exec-used


# ------------------------------------------------------------ signatures ---


def _signatures() -> list[str]:
  """Signature entries of ```text blocks; one entry may span lines."""
  entries = []
  for _, source in _blocks("text"):
    for raw in source.splitlines():
      if re.match(r"simclr_jax\.[\w.]+\(", raw):
        entries.append(raw.strip())
      elif (
        entries
        and raw.startswith(" ")
        and entries[-1].count("(") > entries[-1].count(")")
      ):
        entries[-1] += " " + raw.strip()
  return entries


def _resolve(dotted: str):
  """The object named by a dotted path: longest importable module + attrs."""
  parts = dotted.split(".")
  for i in range(len(parts), 0, -1):
    try:
      obj = importlib.import_module(".".join(parts[:i]))
    except ImportError:
      continue
    for attr in parts[i:]:
      obj = getattr(obj, attr)
    return obj
  raise ImportError(dotted)


def _documented(entry: str) -> tuple[str, list[tuple[str, str, object]]]:
  """Parses `pkg.mod.name(a, b=1, *, c, **kw)` into (name, params).

  params: (name, kind name, default expression AST or None) in order.
  """
  name, _, rest = entry.partition("(")
  depth, end = 1, None
  for i, ch in enumerate(rest):
    depth += {"(": 1, ")": -1}.get(ch, 0)
    if depth == 0:
      end = i
      break
  assert end is not None, f"unbalanced parentheses in {entry!r}"
  fn = ast.parse(f"def f({rest[:end]}): pass").body[0]
  args = fn.args
  params = []
  positional = args.posonlyargs + args.args
  defaults = [None] * (len(positional) - len(args.defaults)) + args.defaults
  for i, (arg, default) in enumerate(zip(positional, defaults)):
    kind = (
      "POSITIONAL_ONLY"
      if i < len(args.posonlyargs)
      else "POSITIONAL_OR_KEYWORD"
    )
    params.append((arg.arg, kind, default))
  if args.vararg:
    params.append((args.vararg.arg, "VAR_POSITIONAL", None))
  for arg, default in zip(args.kwonlyargs, args.kw_defaults):
    params.append((arg.arg, "KEYWORD_ONLY", default))
  if args.kwarg:
    params.append((args.kwarg.arg, "VAR_KEYWORD", None))
  return name, params


def _actual(obj) -> list[inspect.Parameter]:
  """The parameters a caller passes: no `self`, no Flax `parent`/`name`."""
  params = list(inspect.signature(obj).parameters.values())
  if params and params[0].name == "self":  # e.g. ResNet.__call__
    params = params[1:]
  if inspect.isclass(obj) and issubclass(obj, nn.Module):
    params = [p for p in params if p.name not in _FLAX_EXTRA]
  return params


_SIGNATURES = _signatures()


@pytest.mark.parametrize(
  "entry", _SIGNATURES, ids=[e.partition("(")[0] for e in _SIGNATURES]
)
def test_documented_signature_matches_code(entry):
  name, documented = _documented(entry)
  obj = _resolve(name)
  actual = _actual(obj)
  assert [p[0] for p in documented] == [p.name for p in actual], name
  # Defaults in the doc are evaluated where the object is defined, so
  # `mask_fn=lars_mask` or `dtype=jnp.float32` mean what they say.
  scope = {**vars(inspect.getmodule(obj)), "jnp": jnp}
  for (p_name, kind, default), param in zip(documented, actual):
    assert kind == param.kind.name, (name, p_name, kind, param.kind.name)
    if default is None:
      assert param.default is inspect.Parameter.empty, (
        f"{name}: {p_name} has a default in the code but not in the doc"
      )
      continue
    assert param.default is not inspect.Parameter.empty, (
      f"{name}: {p_name} has a default in the doc but not in the code"
    )
    value = eval(compile(ast.Expression(default), "<doc>", "eval"), scope)  # pylint: disable=eval-used
    assert value == param.default, (name, p_name, value, param.default)
