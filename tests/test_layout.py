"""The package layout rules of docs/architecture.md, checked on the source.

- no library module over 400 lines, no function over 80 (the default config
  listing excepted);
- only `simclr_jax/sharding.py` builds a `NamedSharding` or spells the mesh
  axis name;
- downstream code does not import the pretraining package, except what
  loading a pretraining run needs.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "simclr_jax"
MODULES = sorted(PACKAGE.rglob("*.py"))
LONG_FUNCTIONS_ALLOWED = {("defaults.py", "base_config")}


def _rel(path: pathlib.Path) -> str:
  return str(path.relative_to(PACKAGE))


def test_the_package_has_modules():
  assert len(MODULES) > 30


@pytest.mark.parametrize("path", MODULES, ids=_rel)
def test_module_is_under_400_lines(path):
  lines = path.read_text().count("\n")
  assert lines <= 400, f"{_rel(path)} has {lines} lines; split it by concern"


@pytest.mark.parametrize("path", MODULES, ids=_rel)
def test_functions_are_under_80_lines(path):
  tree = ast.parse(path.read_text())
  long = [
    f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
    for node in ast.walk(tree)
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    and node.end_lineno - node.lineno + 1 > 80
    and (path.name, node.name) not in LONG_FUNCTIONS_ALLOWED
  ]
  assert not long, f"{_rel(path)}: {', '.join(long)}"


def _layout_violations(path: pathlib.Path) -> list[str]:
  """Where `path` builds a sharding, a mesh or a spec, or spells 'data'."""
  tree = ast.parse(path.read_text())
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Call):
      func = node.func
      name = getattr(func, "attr", getattr(func, "id", ""))
      owner = getattr(getattr(func, "value", None), "id", "")
      if name in ("NamedSharding", "PartitionSpec", "Mesh") or (
        name == "make_mesh" and owner == "jax"
      ):
        found.append(f"line {node.lineno}: {name}(...)")
    if isinstance(node, ast.ImportFrom) and node.module == "jax.sharding":
      if any(a.name == "PartitionSpec" for a in node.names):
        found.append(f"line {node.lineno}: imports PartitionSpec")
    if isinstance(node, ast.Constant) and node.value == "data":
      found.append(f"line {node.lineno}: the string 'data'")
  return found


@pytest.mark.parametrize("path", MODULES, ids=_rel)
def test_only_the_sharding_module_names_the_layout(path):
  if path.name == "sharding.py":
    return
  found = _layout_violations(path)
  assert not found, (
    f"{_rel(path)} builds shardings or names the mesh axis ({'; '.join(found)});"
    " use simclr_jax.sharding"
  )


def test_the_layout_check_sees_a_violation(tmp_path):
  """The check above fails on code that builds its own sharding."""
  bad = tmp_path / "bad.py"
  bad.write_text(
    "from jax.sharding import NamedSharding, PartitionSpec as P\n"
    "x = NamedSharding(m, P('data'))\n"
  )
  assert _layout_violations(bad) == [
    "line 1: imports PartitionSpec",
    "line 2: NamedSharding(...)",
    "line 2: the string 'data'",
  ]
