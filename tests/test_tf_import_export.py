"""simclr_jax.tf_import.export: a run's weights back under the official
code's TF1 names, checked against the TF1 fixture that code wrote."""

import jax
import numpy as np
import pytest

from simclr_jax.errors import UserError
from simclr_jax.tf_import import convert
from simclr_jax.tf_import import export


def test_export_writes_the_official_names_and_values(
  official_checkpoint, tmp_path
):
  import tensorflow as tf

  folder, manifest, _ = official_checkpoint("tf1_r50_1x_sk0")
  ckpt, arch, variables = convert.load_variables(str(folder))
  model = convert.build_model(arch)
  out = tmp_path / "tf1"
  prefix = export.export_tf1(model, variables, ckpt.step, str(out))
  assert tf.train.latest_checkpoint(str(out)) == prefix
  written = tf.train.load_checkpoint(prefix)
  shapes = written.get_variable_to_shape_map()
  official = {
    v["name"]: v["shape"] for v in manifest["model_variables_in_creation_order"]
  }
  assert {
    n: list(s) for n, s in shapes.items() if n != "global_step"
  } == official
  assert written.get_tensor("global_step") == 1000
  source = tf.train.load_checkpoint(str(folder / "model.ckpt-1000"))
  for name in official:
    np.testing.assert_array_equal(
      written.get_tensor(name), source.get_tensor(name)
    )
  # And back again: the same architecture and variables.
  _, arch_again, again = convert.load_variables(str(out))
  assert arch_again == arch
  for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(again)):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(UserError, match="export into a new folder"):
    export.export_tf1(model, variables, ckpt.step, str(out))
