"""Embeddings export: folder walking, decoding, sharded encoding, the CLI."""

import contextlib
import io
import dataclasses
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from simclr_jax import augment
from simclr_jax import embed
from simclr_jax import embeddings
from simclr_jax import pretrained
from simclr_jax.data import DataConfig
from simclr_jax.data import sources

ROOT = pathlib.Path(__file__).resolve().parents[1]

# name -> (mode, height, width); 16 px is the run's size (no resize).
IMAGES = {
  "top.jpg": ("RGB", 23, 31),
  "a/rgb16.png": ("RGB", 16, 16),
  "a/gray16.png": ("L", 16, 16),
  "a/b/rgba.PNG": ("RGBA", 40, 25),
  "a/b/c/wide.JPEG": ("RGB", 12, 50),
  "a/b/small.bmp": ("RGB", 9, 11),
  "z/anim.gif": ("RGB", 20, 20),
}
CORRUPT = "a/b/broken.jpg"
# A folder with classes: every image in a sub-folder. "ants" holds only a
# corrupt file; "empty" has no image, so it is no class.
CLASSED = {
  "cats/one.png": "cats",
  "cats/deep/er/two.JPG": "cats",
  "dogs/three.png": "dogs",
  "dogs/four.bmp": "dogs",
}
CLASSED_CORRUPT = "ants/broken.png"


@pytest.fixture(scope="module")
def run_dir(tiny_run):
  return tiny_run


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("images")
  rng = np.random.default_rng(0)
  for name, (mode, h, w) in IMAGES.items():
    channels = {"L": (), "RGB": (3,), "RGBA": (4,)}[mode]
    pixels = rng.integers(0, 256, (h, w) + channels, np.uint8)
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode).save(root / name)
  (root / CORRUPT).write_bytes(b"\xff\xd8 this is not a jpeg")
  (root / "notes.txt").write_text("not an image")
  (root / ".hidden.png").write_bytes(b"ignored")
  return str(root)


@pytest.fixture(scope="module")
def classed_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("classed")
  rng = np.random.default_rng(1)
  for name in CLASSED:
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 256, (18, 20, 3), np.uint8)
    Image.fromarray(pixels).save(root / name)
  (root / CLASSED_CORRUPT).parent.mkdir()
  (root / CLASSED_CORRUPT).write_bytes(b"not a png")
  (root / "empty").mkdir()
  (root / "empty" / "notes.txt").write_text("no images")
  (root / ".hidden").mkdir()
  (root / ".hidden" / "x.png").write_bytes(b"ignored")
  return str(root)


@pytest.fixture(scope="module")
def loaded(run_dir):
  return pretrained.load_pretrained(run_dir)


@pytest.fixture(scope="module")
def cli_result(run_dir, image_dir, tmp_path_factory):
  """Runs the CLI once in-process, every path relative to the current
  directory as a user would type them: (exit code, stdout, stderr, absolute
  npz path)."""
  cwd = tmp_path_factory.mktemp("cwd")
  out = str(cwd / "sub" / "emb.npz")
  before = snapshot(run_dir)
  stdout, stderr = io.StringIO(), io.StringIO()
  old = os.getcwd()
  os.chdir(cwd)
  try:
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
      code = embed.main(
        [
          "--checkpoint",
          os.path.relpath(run_dir),
          "--images",
          os.path.relpath(image_dir),
          "--out",
          os.path.join("sub", "emb.npz"),
          "--batch_size",
          "4",
          "--projection",
        ]
      )
  finally:
    os.chdir(old)
  assert snapshot(run_dir) == before, "embedding wrote into the run dir"
  return code, stdout.getvalue(), stderr.getvalue(), out


def snapshot(path):
  return {
    os.path.join(d, f): os.path.getmtime(os.path.join(d, f))
    for d, _, files in os.walk(path)
    for f in files
  }


def _direct(loaded, images, size=16):
  """The encoder and head applied to uint8 images without any sharding."""
  variables = jax.device_get(loaded.variables)
  x = augment.preprocess_eval(np.stack(images), image_size=size)
  out = loaded.model.apply(variables, x, train=False)
  return np.asarray(out["representation"]), np.asarray(out["projection"])


def test_find_images_walks_nested_mixed_case(image_dir):
  assert embed.find_images(image_dir) == sorted([*IMAGES, CORRUPT])


def test_cli_writes_sorted_embeddings_and_reports_skips(cli_result, run_dir):
  code, stdout, stderr, out = cli_result
  assert code == 0, stderr
  with np.load(out) as data:
    assert list(data["filenames"]) == sorted(IMAGES)
    assert data["representation"].shape == (len(IMAGES), 64)
    assert data["representation"].dtype == np.float32
    assert data["projection"].shape == (len(IMAGES), 16)
    assert np.isfinite(data["representation"]).all()
    # top.jpg is directly in the folder: no classes, so no labels at all.
    assert "labels" not in data and "class_names" not in data
  skipped = [l for l in stderr.splitlines() if l.startswith("skipped")]
  assert len(skipped) == 1 and skipped[0].startswith(f"skipped {CORRUPT}: ")
  assert f"Embedded {len(IMAGES)} images, skipped 1 unreadable" in stdout
  # The relative paths, resolved: valid from any directory.
  assert f"wrote {out} (" in stdout and stdout.rstrip().endswith(
    f"of {run_dir}."
  )
  assert "no labels: not every image is in a class sub-folder" in stdout
  assert f"{len(IMAGES) + 1}/{len(IMAGES) + 1} files (1 skipped)" in stderr


def test_rows_equal_encoder_applied_directly(cli_result, loaded, image_dir):
  _, _, _, out = cli_result
  with np.load(out) as data:
    names = list(data["filenames"])
    rep, proj = data["representation"], data["projection"]
  # Run-size PNGs need no resize: decode them independently with PIL.
  pil = [
    np.asarray(Image.open(os.path.join(image_dir, n)).convert("RGB"))
    for n in ("a/gray16.png", "a/rgb16.png")
  ]
  # Other sizes and formats go through the training resize.
  resized = [
    sources.decode_file(tf.constant(os.path.join(image_dir, n)), 16).numpy()
    for n in ("a/b/rgba.PNG", "a/b/c/wide.JPEG")
  ]
  want_rep, want_proj = _direct(loaded, pil + resized)
  rows = [
    names.index(n)
    for n in ("a/gray16.png", "a/rgb16.png", "a/b/rgba.PNG", "a/b/c/wide.JPEG")
  ]
  np.testing.assert_allclose(rep[rows], want_rep, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(proj[rows], want_proj, rtol=1e-5, atol=1e-5)


def test_batch_size_and_padding_do_not_change_rows(
  cli_result, loaded, image_dir
):
  _, _, _, out = cli_result
  result = embed.embed_images(loaded, image_dir, batch_size=3)
  assert result.projection is None
  assert result.skipped[0][0] == CORRUPT and len(result.skipped) == 1
  with np.load(out) as data:
    assert result.filenames == list(data["filenames"])
    np.testing.assert_allclose(
      result.representation, data["representation"], rtol=1e-5, atol=1e-5
    )


def test_image_size_override(loaded, image_dir):
  result = embed.embed_images(loaded, image_dir, image_size=24)
  image = sources.decode_file(
    tf.constant(os.path.join(image_dir, "top.jpg")), 24
  ).numpy()
  want, _ = _direct(loaded, [image], size=24)
  row = result.filenames.index("top.jpg")
  np.testing.assert_allclose(
    result.representation[row], want[0], rtol=1e-5, atol=1e-5
  )


def _run_main(capsys, *argv):
  code = embed.main(list(argv))
  return code, capsys.readouterr().err


def _assert_one_error(code, stderr, *fragments):
  assert code == 2, stderr
  errors = [l for l in stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1, stderr
  assert "Traceback" not in stderr
  for fragment in fragments:
    assert fragment in errors[0], errors[0]


def test_bad_input_is_one_error_line(run_dir, image_dir, tmp_path, capsys):
  out = str(tmp_path / "e.npz")
  empty = tmp_path / "empty" / "sub"
  empty.mkdir(parents=True)
  (empty / "readme.txt").write_text("no images here")
  blocker = tmp_path / "file"
  blocker.write_text("x")
  cases = [
    (
      ["--images", str(tmp_path / "absent"), "--out", out],
      ["absent", "does not exist"],
    ),
    (["--images", str(tmp_path / "empty"), "--out", out], ["no images"]),
    (
      ["--images", image_dir, "--out", str(blocker / "e.npz")],
      ["is a file, not a directory", "--out"],
    ),
    (["--images", image_dir, "--out", str(tmp_path)], ["is a directory"]),
    (
      ["--images", image_dir, "--out", out, "--batch_size", "0"],
      ["--batch_size=0"],
    ),
  ]
  for args, fragments in cases:
    _assert_one_error(
      *_run_main(capsys, "--checkpoint", run_dir, *args), *fragments
    )
  not_run = tmp_path / "not_a_run"
  not_run.mkdir()
  _assert_one_error(
    *_run_main(
      capsys, "--checkpoint", str(not_run), "--images", image_dir, "--out", out
    ),
    "not a simclr_jax run directory",
  )
  assert not os.path.exists(out)
  with pytest.raises(SystemExit) as e:
    embed.main(["--images", image_dir])
  _assert_one_error(e.value.code, capsys.readouterr().err, "--checkpoint")


def test_all_files_corrupt_is_an_error(run_dir, tmp_path, capsys):
  images = tmp_path / "images"
  images.mkdir()
  (images / "a.png").write_bytes(b"garbage")
  (images / "b.JPG").write_bytes(b"")
  out = tmp_path / "e.npz"
  _assert_one_error(
    *_run_main(
      capsys,
      "--checkpoint",
      run_dir,
      "--images",
      str(images),
      "--out",
      str(out),
    ),
    "none of the 2 image files",
  )
  assert not out.exists()


def test_module_entry_point(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "simclr_jax.embed",
      "--checkpoint",
      str(tmp_path / "nope"),
      "--images",
      str(tmp_path),
      "--out",
      str(tmp_path / "e.npz"),
    ],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  _assert_one_error(proc.returncode, proc.stderr, "does not exist")


def test_run_host_size_is_the_decode_size(loaded, image_dir):
  """A run trained on 24 px host squares at model size 16 is embedded as it
  was evaluated: decoded to 24 px, then resized to 16 on the device."""
  config = loaded.config.copy_and_resolve_references()
  config.data.host_size = 24
  result = embed.embed_images(
    dataclasses.replace(loaded, config=config), image_dir
  )
  image = sources.decode_file(
    tf.constant(os.path.join(image_dir, "a/b/c/wide.JPEG")), 24
  ).numpy()
  want, _ = _direct(loaded, [image], size=16)
  row = result.filenames.index("a/b/c/wide.JPEG")
  np.testing.assert_allclose(
    result.representation[row], want[0], rtol=1e-5, atol=1e-5
  )


def test_class_labels_need_every_file_in_a_sub_folder():
  names, labels = embeddings.class_labels(["b/x.png", "a/y/z.png", "b/w.png"])
  assert names == ["a", "b"]
  assert labels.dtype == np.int32 and labels.tolist() == [1, 0, 1]
  assert embeddings.class_labels(["x.png", "y.png"]) is None  # flat
  assert embeddings.class_labels(["a/x.png", "y.png"]) is None  # mixed
  assert embeddings.class_labels([]) is None


def test_labels_are_the_folder_sources(classed_dir):
  """The folder data source, on the same folder as its (flat) train split,
  gives every file the same class names and label."""
  names, labels = embeddings.class_labels(embed.find_images(classed_dir))
  mine = dict(zip(embed.find_images(classed_dir), labels.tolist()))
  # One of its files is broken on purpose (for embed's skip report): let
  # the folder source's up-front check accept that.
  cfg = DataConfig(
    source="folder",
    data_dir=classed_dir,
    eval_split="",
    max_unreadable_fraction=0.5,
  )
  source = sources.get("folder")
  n = source.num_examples(cfg, "train")
  files = source.select(cfg, "train", np.arange(n)).files
  theirs = {
    os.path.relpath(f, classed_dir): l
    for f, l in zip(files, source.labels(cfg, "train").tolist())
  }
  assert names == ["ants", "cats", "dogs"]
  assert tuple(names) == source.info(cfg).class_names
  assert mine == theirs


def test_cli_writes_labels_of_class_folders(
  run_dir, classed_dir, tmp_path, capsys
):
  out = tmp_path / "classed.npz"
  code = embed.main(
    ["--checkpoint", run_dir, "--images", classed_dir, "--out", str(out)]
  )
  stdout = capsys.readouterr().out
  assert code == 0
  with np.load(out) as data:
    names, labels = list(data["filenames"]), data["labels"]
    classes = list(data["class_names"])
    assert labels.dtype == np.int32 and labels.shape == (len(CLASSED),)
    assert data["representation"].shape[0] == len(CLASSED)
  # The unreadable file is skipped, but its class keeps its index.
  assert names == sorted(CLASSED) and classes == ["ants", "cats", "dogs"]
  assert [classes[l] for l in labels] == [CLASSED[n] for n in names]
  assert "labels of 3 classes" in stdout


def test_embed_images_of_a_flat_folder_has_no_labels(loaded, tmp_path):
  rng = np.random.default_rng(2)
  for name in ("x.png", "y.png"):
    pixels = rng.integers(0, 256, (16, 16, 3), np.uint8)
    Image.fromarray(pixels).save(tmp_path / name)
  result = embed.embed_images(loaded, str(tmp_path))
  assert result.filenames == ["x.png", "y.png"]
  assert result.labels is None and result.class_names is None


def _imported(*args):
  """(exit code, stdout, top-level modules imported) of `python -X
  importtime args` (the import log on stderr names every module)."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run(
    [sys.executable, "-X", "importtime", *args],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  modules = {
    line.rsplit("|", 1)[1].strip().split(".")[0]
    for line in proc.stderr.splitlines()
    if line.startswith("import time:") and "|" in line
  }
  assert "simclr_jax" in modules, proc.stderr[-2000:]
  return proc.returncode, proc.stdout, modules


def test_help_and_usage_errors_import_neither_jax_nor_tensorflow():
  code, stdout, modules = _imported("-m", "simclr_jax.embed", "--help")
  assert code == 0 and "--checkpoint" in stdout and "class_names" in stdout
  assert not modules & {"jax", "tensorflow"}
  code, _, modules = _imported("-m", "simclr_jax.embed", "--images", "x")
  assert code == 2 and not modules & {"jax", "tensorflow"}
  # Importing the module, and the names it re-exports, stays light too.
  code, _, modules = _imported(
    "-c", "import simclr_jax.embed; from simclr_jax.embed import main, run"
  )
  assert code == 0 and not modules & {"jax", "tensorflow"}


def test_lazy_names_are_the_library_objects():
  from simclr_jax.embed import (  # pylint: disable=import-outside-toplevel
    Embeddings,
    check_output_path,
    embed_images,
    find_images,
    write_npz,
  )

  assert Embeddings is embeddings.Embeddings
  assert (check_output_path, embed_images, find_images, write_npz) == (
    embeddings.check_output_path,
    embeddings.embed_images,
    embeddings.find_images,
    embeddings.write_npz,
  )
  assert set(embed.__all__) <= set(dir(embed))
  with pytest.raises(AttributeError, match="no_such_name"):
    _ = embed.no_such_name
