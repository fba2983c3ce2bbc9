"""docs/fidelity.md cannot point at code or tests that do not exist.

Every `tests/FILE.py::NAME` it cites must be a test function (or class) of
that file, and every `simclr_jax/FILE.py:NAME` or `configs/FILE.py:NAME` a
function, class, method or assignment there; a renamed or deleted test
otherwise leaves a row claiming a proof that no longer runs.
"""

from __future__ import annotations

import ast
import functools
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "fidelity.md"
_TEST_REF = re.compile(r"(tests/[\w/]+\.py)::(\w+)")
_CODE_REF = re.compile(r"((?:simclr_jax|configs)/[\w/]+\.py):([A-Za-z_][\w.]*)")


@functools.lru_cache(maxsize=None)
def _names(path: str) -> frozenset[str]:
  """Top-level and class-level names defined in a Python file, with
  `Class.method` for methods."""
  tree = ast.parse((ROOT / path).read_text())
  names = set()
  for node in tree.body:
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
      names.add(node.name)
      if isinstance(node, ast.ClassDef):
        for item in node.body:
          if isinstance(item, (ast.FunctionDef, ast.AnnAssign, ast.Assign)):
            for target in _targets(item):
              names.add(f"{node.name}.{target}")
    for target in _targets(node):
      names.add(target)
  return frozenset(names)


def _targets(node: ast.AST) -> list[str]:
  if isinstance(node, ast.FunctionDef):
    return [node.name]
  if isinstance(node, ast.Assign):
    return [t.id for t in node.targets if isinstance(t, ast.Name)]
  if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
    return [node.target.id]
  return []


def _refs(pattern: re.Pattern) -> list[tuple[str, str]]:
  return sorted(set(pattern.findall(DOC.read_text())))


@pytest.mark.parametrize("path, name", _refs(_TEST_REF))
def test_cited_tests_exist(path, name):
  assert (ROOT / path).exists(), f"docs/fidelity.md cites missing {path}"
  assert name in _names(path), f"docs/fidelity.md cites {path}::{name}"


@pytest.mark.parametrize("path, name", _refs(_CODE_REF))
def test_cited_code_exists(path, name):
  assert (ROOT / path).exists(), f"docs/fidelity.md cites missing {path}"
  assert name in _names(path), f"docs/fidelity.md cites {path}:{name}"


def test_the_doc_cites_something():
  assert len(_refs(_TEST_REF)) > 100 and len(_refs(_CODE_REF)) > 50
