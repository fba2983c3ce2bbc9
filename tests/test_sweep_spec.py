"""Sweep files: expansion, naming and the checks made before anything runs."""

import os
import textwrap

import pytest

from simclr_jax.errors import UserError
from simclr_jax.sweep import spec

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEPS = os.path.join(REPO, "configs", "sweeps")


def write_sweep(tmp_path, body, name="s.py"):
  path = tmp_path / name
  path.write_text(textwrap.dedent(body))
  return str(path)


def test_product_varies_the_last_axis_fastest():
  points = spec.product({"model.depth": [18, 50]}, epochs=[1, 2])
  assert points == [
    {"model.depth": 18, "epochs": 1},
    {"model.depth": 18, "epochs": 2},
    {"model.depth": 50, "epochs": 1},
    {"model.depth": 50, "epochs": 2},
  ]


def test_zipped_pairs_values_and_nests_in_product():
  pairs = spec.zipped({"model.depth": [18, 50]}, batch_size=[512, 256])
  assert pairs == [
    {"model.depth": 18, "batch_size": 512},
    {"model.depth": 50, "batch_size": 256},
  ]
  points = spec.product(pairs, epochs=[1, 2])
  assert len(points) == 4
  assert points[1] == {"model.depth": 18, "batch_size": 512, "epochs": 2}
  with pytest.raises(UserError, match="different lengths"):
    spec.zipped(batch_size=[1, 2], epochs=[1])
  with pytest.raises(UserError, match="list of values"):
    spec.product(batch_size=256)


def test_names_are_readable_stable_and_distinct():
  points = spec.product(
    {"model.depth": [18], "augment.crop_area": [(0.2, 1.0)]},
    epochs=[1],
    **{"optim.weight_decay": [1e-4]},
  )
  assert spec.point_names(points) == [
    "depth=18,crop_area=0.2-1,epochs=1,weight_decay=0.0001"
  ]
  # Keys that end alike keep their full path.
  clash = [{"batch_size": 8, "eval.batch_size": 16}]
  assert spec.point_names(clash) == ["batch_size=8,eval.batch_size=16"]
  # Unsafe characters in string values do not make paths.
  assert spec.point_names([{"data.data_dir": "a/b c"}]) == ["data_dir=a_b_c"]
  # The same point gets the same name whatever else the sweep holds.
  alone = spec.point_names([{"epochs": 2, "batch_size": 64}])
  among = spec.point_names(spec.product(epochs=[2], batch_size=[32, 64]))
  assert alone[0] == among[1] == "epochs=2,batch_size=64"


def test_flags_parse_back_on_the_command_line():
  assert spec.flag("epochs", 2) == "--config.epochs=2"
  assert spec.flag("augment.crop_area", (0.2, 1.0)) == (
    "--config.augment.crop_area=(0.2,1.0)"
  )
  assert spec.flag("eval.knn_ks", (20,)) == "--config.eval.knn_ks=(20,)"


def test_load_resolves_base_and_derives_settings(tmp_path):
  path = write_sweep(
    tmp_path,
    f"""
    from simclr_jax.sweep import product
    base_config = {os.path.join(REPO, "configs", "default.py")!r}
    points = product(batch_size=[64, 128])
    def derive(point):
      return {{"log_every_steps": point["batch_size"] // 8}}
    """,
  )
  sweep = spec.load(path)
  assert [p.name for p in sweep.points] == ["batch_size=64", "batch_size=128"]
  assert sweep.points[1].own == {"batch_size": 128}
  assert sweep.points[1].overrides == {"batch_size": 128, "log_every_steps": 16}
  cmd = sweep.points[1].command(sweep.base_config, "/s")
  assert cmd[:5] == ["python", "-m", "simclr_jax.main", "--config", cmd[4]]
  assert cmd[5:7] == ["--workdir", "/s/batch_size=128"]
  assert cmd[7:] == ["--config.batch_size=128", "--config.log_every_steps=16"]
  spec.check(sweep, device_count=8)


def test_base_config_relative_to_the_sweep_file(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  sweep = spec.load(os.path.join(SWEEPS, "cifar10_cpu_batch_epochs.py"))
  assert os.path.samefile(
    sweep.base_config, os.path.join(REPO, "configs", "cifar10_cpu.py")
  )
  assert len(sweep.points) == 6


@pytest.mark.parametrize(
  "body, message",
  [
    (
      "points = product(batch_size=[64, 100])",
      r"point batch_size=100: .*batch_size.*8",
    ),
    (
      "points = product(bach_size=[64])",
      r"point bach_size=64: .*bach_size.*batch_size",
    ),
    (
      "points = [{'epochs': 1}, {'epochs': 1}]",
      r"points 0 and 1 are both named epochs=1",
    ),
    (
      "points = product(epochs=[1])\ndef derive(p):\n  return {'epochs': 2}",
      r"point epochs=1: derive\(\) sets epochs",
    ),
    ("points = []", r"must set points"),
    ("points = product(epochs=[1])\n1/0", r"raised ZeroDivisionError"),
  ],
)
def test_bad_sweeps_are_refused_naming_the_point(tmp_path, body, message):
  head = (
    "from simclr_jax.sweep import product\n"
    f"base_config = {os.path.join(REPO, 'configs', 'default.py')!r}\n"
  )
  path = write_sweep(tmp_path, head + body + "\n")
  with pytest.raises(UserError, match=message):
    spec.check(spec.load(path), device_count=8)


def test_missing_base_config_and_unknown_only(tmp_path):
  path = write_sweep(
    tmp_path, "base_config = 'nope.py'\npoints = [{'epochs': 1}]\n"
  )
  with pytest.raises(UserError, match="base_config 'nope.py' is neither"):
    spec.load(path)
  sweep = spec.load(os.path.join(SWEEPS, "cifar10_cpu_batch_epochs.py"))
  with pytest.raises(UserError, match="--only x: not a point.*epochs=1"):
    sweep.select(["x"])
  assert [p.name for p in sweep.select(["batch_size=512,epochs=2"])] == [
    "batch_size=512,epochs=2"
  ]


@pytest.mark.parametrize(
  "name, devices",
  [("imagenet_batch_epochs.py", 32), ("imagenet_depth_width.py", 32)],
)
def test_shipped_sweeps_pass_their_checks(name, devices):
  sweep = spec.load(os.path.join(SWEEPS, name))
  spec.check(sweep, device_count=devices, process_count=4)


def test_the_docs_example_expands_as_documented(tmp_path):
  """The sweep file of docs/scaling.md loads and names its points as the
  text says."""
  with open(os.path.join(REPO, "docs", "scaling.md")) as f:
    doc = f.read()
  example = doc.split("```python\n", 1)[1].split("```", 1)[0]
  base = os.path.join(REPO, "configs", "imagenet.py")
  path = write_sweep(tmp_path, example.replace('"../imagenet.py"', repr(base)))
  sweep = spec.load(path)
  names = [p.name for p in sweep.points]
  assert len(names) == 8
  for name in (
    "batch_size=256,epochs=100",
    "depth=101,batch_size=2048,epochs=100",
  ):
    assert name in names and f"`{name}`" in doc
  deep = sweep.select(["depth=152,batch_size=1024,epochs=100"])[0]
  assert deep.overrides["optim.warmup_epochs"] == 10
  spec.check(sweep, device_count=32, process_count=4)
