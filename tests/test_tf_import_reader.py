"""simclr_jax.tf_import.reader and .mapping on the official-code fixtures:
network order, every variable accounted for, the TF1 names, the EMA copy.

The fixtures' manifests list the model variables in the order the official
code created them; the reader must find that order from the names alone.
"""

import os

import numpy as np
import pytest

from simclr_jax.errors import UserError
from simclr_jax.tf_import import convert
from simclr_jax.tf_import import export
from simclr_jax.tf_import import reader

FIXTURES = (
  "tf2_r18_cifar_1x_sk0",
  "tf2_r50_1x_sk0",
  "tf2_r50_1x_sk1",
  "tf1_r50_1x_sk0",
)


def _manifest_layers(manifest: dict) -> dict[tuple[str, str], list[str]]:
  """(section, kind) -> layer names in creation order, from the manifest."""
  out: dict[tuple[str, str], list[str]] = {}
  for var in manifest["model_variables_in_creation_order"]:
    key = var.get("key") or var["name"]
    name = key.removesuffix(reader.TF2_SUFFIX).removeprefix("model/")
    layer = name.rpartition("/")[0]
    kind = {"kernel": "conv" if len(var["shape"]) == 4 else "dense"}.get(
      var["kind"], "bn" if var["kind"] == "moving_mean" else None
    )
    if kind is None:
      continue
    section = reader.SECTIONS[layer.split("/")[0]]
    out.setdefault((section, kind), []).append(layer)
  return out


@pytest.mark.parametrize("name", FIXTURES)
def test_layers_come_in_the_official_creation_order(name, official_checkpoint):
  folder, manifest, _ = official_checkpoint(name)
  ckpt = reader.read_checkpoint(str(folder))
  assert ckpt.format == name[:3] and ckpt.step == 1000
  expected = _manifest_layers(manifest)
  got = {
    (section, kind): [l.name for l in ckpt.layers(section, kind)]
    for section in ckpt.sections
    for kind in ("conv", "bn", "dense")
    if ckpt.layers(section, kind)
  }
  assert got == expected


@pytest.mark.parametrize("name", FIXTURES)
def test_every_variable_is_mapped_or_ignored_by_rule(name, official_checkpoint):
  folder, manifest, _ = official_checkpoint(name)
  ckpt = reader.read_checkpoint(str(folder))
  mapped = {
    k for ls in ckpt.sections.values() for l in ls for k in l.keys.values()
  }
  everything = {v.get("key") or v["name"] for v in manifest["variables"]}
  assert mapped | set(ckpt.ignored) == everything
  assert not mapped & set(ckpt.ignored)
  model = {
    v.get("key") or v["name"]
    for v in manifest["model_variables_in_creation_order"]
  }
  assert mapped == model
  assert set(ckpt.ignored.values()) <= set(reader.IGNORED.values())


def test_tf1_names_give_the_same_weights_as_tf2(official_checkpoint):
  """The TF1 fixture holds the TF2 fixture's values under TF1 names."""
  tf1 = convert.load_variables(str(official_checkpoint("tf1_r50_1x_sk0")[0]))
  tf2 = convert.load_variables(str(official_checkpoint("tf2_r50_1x_sk0")[0]))
  assert tf1[1] == tf2[1]
  import jax

  flat1 = jax.tree_util.tree_leaves_with_path(tf1[2])
  flat2 = dict(jax.tree_util.tree_leaves_with_path(tf2[2]))
  assert len(flat1) == len(flat2) > 0
  for path, value in flat1:
    np.testing.assert_array_equal(value, flat2[path], err_msg=str(path))


def _tf1_arrays(official_checkpoint) -> dict[str, np.ndarray]:
  import tensorflow as tf

  folder = official_checkpoint("tf1_r50_1x_sk0")[0]
  r = tf.train.load_checkpoint(str(folder / "model.ckpt-1000"))
  return {k: r.get_tensor(k) for k in r.get_variable_to_shape_map()}


def test_ema_picks_the_moving_average_copy(official_checkpoint, tmp_path):
  arrays = _tf1_arrays(official_checkpoint)
  model_keys = [
    k
    for k in arrays
    if k.startswith(("base_model/", "head_")) and not k.endswith("/Momentum")
  ]
  # The EMA copy: the same layers at 3/4 of the values (variances stay > 0).
  for k in model_keys:
    arrays[f"{reader.EMA_PREFIX}{k}"] = (0.75 * arrays[k]).astype(np.float32)
  prefix = str(tmp_path / "model.ckpt-1000")
  export.save_tf1(prefix, arrays)

  _, _, plain = convert.load_variables(prefix)
  ckpt, _, ema = convert.load_variables(prefix, ema=True)
  kernel = ("params", "backbone", "stem_conv", "kernel")

  def get(tree, path):
    for p in path:
      tree = tree[p]
    return tree

  np.testing.assert_array_equal(
    get(plain, kernel), arrays["base_model/conv2d/kernel"]
  )
  np.testing.assert_array_equal(
    get(ema, kernel), 0.75 * arrays["base_model/conv2d/kernel"]
  )
  var = ("batch_stats", "projection_head", "bn_2", "var")
  np.testing.assert_array_equal(
    get(ema, var),
    arrays[
      "ema_model/head_contrastive/nl_2/batch_normalization/moving_variance"
    ],
  )
  assert sum("EMA" in why for why in ckpt.ignored.values()) == len(model_keys)


def test_an_unknown_variable_is_an_error_naming_it(
  official_checkpoint, tmp_path
):
  arrays = _tf1_arrays(official_checkpoint)
  arrays["base_model/se_block/weird"] = np.zeros(3, np.float32)
  prefix = str(tmp_path / "model.ckpt-7")
  export.save_tf1(prefix, arrays)
  with pytest.raises(UserError, match="base_model/se_block"):
    reader.read_checkpoint(prefix)


def test_a_missing_variable_is_an_error_naming_it(
  official_checkpoint, tmp_path
):
  arrays = _tf1_arrays(official_checkpoint)
  del arrays["base_model/batch_normalization_20/moving_variance"]
  prefix = str(tmp_path / "model.ckpt-7")
  export.save_tf1(prefix, arrays)
  with pytest.raises(UserError, match="batch_normalization_20"):
    convert.load_variables(prefix)


def test_paths_that_hold_no_checkpoint(tmp_path):
  with pytest.raises(
    UserError, match="no TensorFlow checkpoint in this folder"
  ):
    reader.resolve_prefix(str(tmp_path))
  with pytest.raises(UserError, match="no model.ckpt-5.index"):
    reader.resolve_prefix(str(tmp_path / "model.ckpt-5"))
  (tmp_path / "ckpt-3.index").write_bytes(b"")
  assert reader.resolve_prefix(str(tmp_path)) == str(tmp_path / "ckpt-3")
  assert reader.resolve_prefix(str(tmp_path / "ckpt-3.index")) == os.path.join(
    tmp_path, "ckpt-3"
  )


def test_a_checkpoint_without_projection_head_gets_a_fresh_one(
  official_checkpoint, tmp_path
):
  """SimCLRv1's releases hold the encoder and the linear head only."""
  arrays = {
    k: v
    for k, v in _tf1_arrays(official_checkpoint).items()
    if not k.startswith("head_contrastive/")
  }
  prefix = str(tmp_path / "model.ckpt-3")
  export.save_tf1(prefix, arrays)
  ckpt, arch, variables = convert.load_variables(prefix)
  assert "projection_head" not in ckpt.sections
  assert arch["proj_head_layers"] == 2 and arch["num_classes"] == 1000
  head = variables["params"]["projection_head"]
  assert sorted(head) == ["bn_0", "bn_1", "dense_0", "dense_1"]
  assert head["dense_0"]["kernel"].shape == (2048, 2048)
  np.testing.assert_array_equal(
    variables["params"]["head_supervised"]["linear"]["bias"],
    arrays["head_supervised/linear_layer/dense/bias"],
  )
