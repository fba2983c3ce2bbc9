"""Old module paths still import for one release: each warns and is the very
module at the new path (so every name, private ones included, is there)."""

import importlib
import pathlib
import sys

import pytest

import simclr_jax

MOVED = {
  "classify": "eval.supervised",
  "crops": "augment.crops",
  "evaluation": "eval.features",
  "finetune": "eval.finetune",
  "knn": "eval.knn",
  "linear_eval": "eval.linear",
  "probe": "eval.logistic",
  "train_step": "pretrain.step",
  "views": "augment.views",
}


@pytest.mark.parametrize("old, new", sorted(MOVED.items()))
def test_old_path_warns_and_is_the_new_module(monkeypatch, old, new):
  # Import afresh (the first import may have happened anywhere); the
  # original entries come back after the test.
  monkeypatch.delitem(sys.modules, f"simclr_jax.{old}", raising=False)
  monkeypatch.delattr(simclr_jax, old, raising=False)
  with pytest.warns(DeprecationWarning, match=f"import simclr_jax.{new} "):
    shim = importlib.import_module(f"simclr_jax.{old}")
  assert shim is importlib.import_module(f"simclr_jax.{new}")


def test_every_alias_module_is_listed():
  package = pathlib.Path(simclr_jax.__file__).parent
  aliases = {
    p.stem
    for p in package.glob("*.py")
    if "Deprecated alias" in p.read_text()[:200]
  }
  assert aliases == set(MOVED)
