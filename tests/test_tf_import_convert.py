"""simclr_jax.tf_import.convert and the `import_tf` command: converted runs
reproduce the official code's outputs, and work wherever a pretraining run
does (kNN, linear evaluation, fine-tuning, embed).

The fixtures (../shared/reference/checkpoints) were written by the official
SimCLR code with synthetic weights, with that code's inference-mode
outputs on a fixed batch; the ResNet-50 ones are `slow` (about 15-30 s of
CPU each), the ResNet-18 CIFAR one runs by default. The downstream test is
`slow` too.
"""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from simclr_jax import downstream
from simclr_jax import embed
from simclr_jax import import_tf
from simclr_jax import pretrained
from simclr_jax.tf_import import convert
from helpers import snapshot, tiny_config

R18 = "tf2_r18_cifar_1x_sk0"
TOLERANCE = 1e-4  # absolute; the outputs are O(1)


def reference_outputs(run_dir: str, images: np.ndarray) -> dict:
  """Our model's counterparts of the fixtures' official outputs."""
  p = pretrained.load_pretrained(run_dir)
  out, state = p.model.apply(
    p.variables, jnp.asarray(images), train=False, mutable=["intermediates"]
  )
  head = {c: v["projection_head"] for c, v in p.variables.items()}
  _, hiddens = p.model.projection_head.apply(
    head, out["representation"], train=False, return_hiddens=True
  )
  ends = state["intermediates"]["backbone"]
  return {
    "final_avg_pool": out["representation"],
    "proj_head_output": out["projection"],
    "proj_head_hidden1": hiddens[0],
    "logits_sup": out["logits"],
    **{f"intermediate_{k}": v[0] for k, v in ends.items()},
  }


@pytest.mark.parametrize(
  "name",
  [
    R18,
    pytest.param("tf2_r50_1x_sk0", marks=pytest.mark.slow),
    pytest.param("tf2_r50_1x_sk1", marks=pytest.mark.slow),
    pytest.param("tf1_r50_1x_sk0", marks=pytest.mark.slow),
  ],
)
def test_outputs_equal_the_official_code(name, official_checkpoint, tmp_path):
  folder, manifest, ref = official_checkpoint(name)
  result = convert.convert_checkpoint(str(folder), str(tmp_path / "run"))
  ours = reference_outputs(result.run_dir, ref["images"])
  assert set(ours) == set(ref) - {"images", "images_uint8"}
  errors = {
    k: float(np.max(np.abs(np.asarray(v) - ref[k]))) for k, v in ours.items()
  }
  print(f"{name} max abs errors: {json.dumps(errors)}")
  assert max(errors.values()) <= TOLERANCE, errors
  flags = manifest["config"]["flags"]
  assert result.architecture["depth"] == flags["resnet_depth"]
  assert result.architecture["sk_ratio"] == flags["sk_ratio"]
  assert result.architecture["proj_head_layers"] == flags["num_proj_layers"]
  assert result.step == 1000


@pytest.mark.slow  # about 50 s: three downstream modes and embed
def test_a_converted_run_works_downstream(
  official_checkpoint, tmp_path, capsys
):
  folder = official_checkpoint(R18)[0]
  # The run records the data of `config` (the builtin set at 32 px, the
  # fixture's input size), which the downstream runs below inherit.
  data = tiny_config(image_size=32)
  data.data.builtin_train_examples = 48
  data.data.builtin_eval_examples = 16
  run_dir = str(tmp_path / "imported")
  convert.convert_checkpoint(str(folder), run_dir, config=data)
  with open(os.path.join(run_dir, convert.PROVENANCE)) as f:
    assert json.load(f)["format"] == "tf2"
  before = snapshot(run_dir)

  def config(mode, **section):
    c = tiny_config()
    c.mode, c.init_checkpoint = mode, run_dir
    c.eval.batch_size = 16
    for key, value in section.items():
      c[mode if mode != "linear" else "linear_eval"][key] = value
    return c

  knn = downstream.run(config("knn"), str(tmp_path / "knn"))
  top1 = [v for k, v in knn["metrics"].items() if k.endswith("_top1")]
  assert top1 and all(0 <= v <= 1 for v in top1)
  assert knn["checkpoint"]["step"] == 1000
  linear = downstream.run(
    config("linear", epochs=1, batch_size=16), str(tmp_path / "linear")
  )
  assert 0 <= linear["metrics"]["linear_top1"] <= 1
  tuned = downstream.run(
    config("finetune", epochs=1, batch_size=16, label_fraction=0.5),
    str(tmp_path / "finetune"),
  )
  assert 0 <= tuned["metrics"]["finetune_top1"] <= 1
  assert "model and data settings from the run's" in capsys.readouterr().out
  images = tmp_path / "images" / "a"
  images.mkdir(parents=True)
  from PIL import Image

  for i in range(3):
    Image.fromarray(np.full((40, 36, 3), 60 * i, np.uint8)).save(
      images / f"{i}.png"
    )
  out = str(tmp_path / "e.npz")
  assert (
    embed.main(
      ["--checkpoint", run_dir, "--images", str(images.parent), "--out", out]
    )
    == 0
  )
  with np.load(out) as npz:
    assert npz["representation"].shape == (3, 512)
  assert snapshot(run_dir) == before  # every use left the run as it was


def test_cli_converts_and_refuses_an_existing_out(
  official_checkpoint, tmp_path, capsys
):
  folder = official_checkpoint(R18)[0]
  out = tmp_path / "run"
  assert (
    import_tf.main(
      ["--checkpoint", str(folder / "ckpt-1000.index"), "--out", str(out)]
    )
    == 0
  )
  printed = capsys.readouterr().out
  assert (
    "ResNet-18 1x, sk_ratio 0, CIFAR stem, 2-layer projection head, 10 classes"
    in printed
  )
  assert "--config configs/cifar10.py" in printed
  config = pretrained.load_run_config(str(out))
  assert (config.data.name, config.data.image_size) == ("cifar10", 32)
  before = snapshot(out)
  assert import_tf.main(["--checkpoint", str(folder), "--out", str(out)]) == 2
  err = capsys.readouterr().err
  assert err.count("error:") == 1 and "already exists" in err
  assert snapshot(out) == before


@pytest.mark.parametrize(
  "args, expect",
  [
    (["--ema"], "has no exponential-moving-average copy"),
    (["--depth", "34"], "pass the architecture"),
    (["--depth", "7"], "--depth=7 must be one of 18, 34"),
    (["--num_classes", "0"], "pass --num_classes"),
    (["--width", "0.5"], "does not fit"),
  ],
)
def test_cli_bad_input_is_one_error_and_writes_nothing(
  args, expect, official_checkpoint, tmp_path, capsys
):
  folder = official_checkpoint(R18)[0]
  out = tmp_path / "run"
  assert (
    import_tf.main(["--checkpoint", str(folder), "--out", str(out), *args]) == 2
  )
  err = capsys.readouterr().err
  assert err.count("error:") == 1 and expect in err, err
  assert "Traceback" not in err
  assert not out.exists() and os.listdir(tmp_path) == []
