"""Every command README.md shows that can run on a CPU, run as written.

README.md is parsed when the tests run: its ```bash blocks and the inline
`python -m simclr_jax...` commands of its prose, in document order, with
shell variables (`RUN=...`, `$HOME`) substituted as one shell session would.
Each `python -m simclr_jax.<module>` command is run as a subprocess from a
temporary working directory (so its relative paths mean what the README
says), with overrides appended that make it two steps of a tiny model, and
its outputs are checked. Paths that exist only on the README's machine
(`../shared/data`, `/data/...`, `~/tensorflow_datasets`, the placeholder
`DIR`) are tiny stand-ins written here in the layout the README describes.

To keep this file fast, the subprocesses compile without XLA's expensive
optimisations and share JAX's persistent compilation cache (also with
tests/test_main.py, which runs the same programs), so a program several
commands need compiles once; and the commands no other test depends on run
in a background thread while the others run.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import pathlib
import re
import runpy
import shlex
import subprocess
import tarfile

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from tensorflow_datasets.image_classification import cifar

from helpers import ROOT, TINY_DOWNSTREAM, TINY_RUN, run_cli

README = ROOT / "README.md"
WORK = "work"  # the working directory under the temporary root

# Train / test images of every stand-in dataset (10 classes): one epoch is
# the two steps of TINY_RUN's batch of 16.
NUM_TRAIN, NUM_TEST = 32, 16
CLASSES = (
  "airplane",
  "automobile",
  "bird",
  "cat",
  "deer",
  "dog",
  "frog",
  "horse",
  "ship",
  "truck",
)

# The commands the test expects, by `_key`, and what each needs.
RUN = {
  "main configs/default.py runs/quickstart": "quickstart, built-in data",
  "plots runs/quickstart": "curves of the quickstart run",
  "main configs/cifar10.py --print_config": "the resolved config, no run",
  "main --help": "usage",
  "main configs/cifar10_cpu.py runs/cifar10_cpu": "after the README's mkdir + tar of a stand-in ../shared archive",
  "main configs/cifar10.py runs/cifar10": "tfds cifar10 in $HOME (stand-in)",
  "main configs/cifar10.py runs/cifar10 folder": "/data/cifar10 (stand-in)",
  "main configs/cifar10.py runs/c10_knn": "kNN on $RUN",
  "main configs/cifar10.py runs/c10_linear": "linear evaluation on $RUN",
  "main configs/cifar10.py runs/c10_probe": "logistic probe on $RUN",
  "main configs/cifar10.py runs/c10_ft10": "fine-tuning on $RUN",
  "embed": "embeddings of DIR (stand-in) from $RUN",
  "main configs/imagenet.py runs/mine folder": "unlabelled /data/my_images (stand-in)",
  "main configs/folder_cpu.py runs/my_images": "flat class folders /data/my_labelled_images (stand-in)",
}
# Not run here, and why.
SKIP = {
  # Needs a TPU VM: jax[tpu], and a ResNet-50 recipe sized for a slice.
  "main configs/tpu_v3.py runs/r50": "TPU VM",
  # Needs CUDA GPUs (jax[cuda12], bfloat16 compute) and ImageNet in tfds.
  "main configs/imagenet.py runs/r50": "several GPUs",
  # One process per host of a cluster, waiting for its coordinator.
  "main configs/imagenet.py /shared/run": "multi-host",
  # Six CIFAR-10 trainings (about 40 minutes); tests/test_sweep_runner.py
  # runs a tiny sweep through the same run and report commands.
  "sweep run": "real CIFAR-10 sweep",
  "sweep report": "report of that sweep",
  # A checkpoint downloaded from Google Cloud Storage; the command itself
  # runs on the official-code fixtures in tests/test_tf_import_convert.py.
  "import_tf": "a released TF checkpoint",
}
# Other commands in the bash blocks. mkdir and tar run as written (they
# unpack the stand-in archive); the set-up commands are what made the
# environment these tests run in, and `python -m pytest` is this suite.
OTHER = {
  "mkdir": "run",
  "tar": "run",
  "python3 -m venv": "set-up",
  ". .venv/bin/activate": "set-up",
  "pip install": "set-up",
  "python -m pytest": "this test suite",
}
# README paths that cannot exist here -> stand-ins, under the temporary
# root; an absolute README path becomes an absolute one, a relative one
# (DIR, the README's placeholder for a folder of images) a relative one.
STAND_INS = {
  "/data/cifar10": "standin/cifar10",
  "/data/my_images": "standin/my_images",
  "/data/my_labelled_images": "standin/my_labelled_images",
  "DIR": f"{WORK}/photos",
}


@dataclasses.dataclass
class Command:
  text: str  # as the README writes it (one line, \ joined)
  argv: list[str]  # after variable and stand-in substitution
  line: int  # README line it starts on


def _expand(token: str, variables: dict[str, str], line: int) -> str:
  def value(m: re.Match) -> str:
    name = m.group(1) or m.group(2)
    if name not in variables:
      raise AssertionError(
        f"README.md:{line}: ${name} is not set by an "
        "earlier NAME=value line and is not in the "
        "environment; a shell would pass ''."
      )
    return variables[name]

  return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, token)


def _stand_in(token: str, root: pathlib.Path, used: set[str]) -> str:
  flag, eq, path = token.rpartition("=")
  path = path if eq else token
  if path not in STAND_INS:
    return token
  used.add(path)
  stand_in = root / STAND_INS[path]
  if not os.path.isabs(path):
    stand_in = os.path.relpath(stand_in, root / WORK)
  return f"{flag}{eq}{stand_in}"


def parse_readme(
  text: str, environ: dict[str, str], root: pathlib.Path, used: set[str]
) -> list[Command]:
  """Shell commands of the ```bash blocks and inline `python -m simclr_jax.`
  spans, in document order; `NAME=value` lines set variables for later
  commands as in one shell session."""
  variables = dict(environ)
  commands = []
  pattern = re.compile(
    r"^```(?P<lang>[\w-]*)[ \t]*\n(?P<block>.*?)^```[ \t]*$"
    r"|`(?P<inline>python -m simclr_jax\.[^`]+)`",
    re.S | re.M,
  )
  for m in pattern.finditer(text):
    start = text.count("\n", 0, m.start()) + 1
    if m.group("inline"):
      pieces = [(start, " ".join(m.group("inline").split()))]
    elif m.group("lang") == "bash":
      lines, pieces, i = m.group("block").split("\n"), [], 0
      while i < len(lines):  # join backslash continuations
        first, joined = i, lines[i]
        while joined.endswith("\\") and i + 1 < len(lines):
          i += 1
          joined = joined[:-1] + " " + lines[i]
        pieces.append((start + 1 + first, joined))
        i += 1
    else:
      continue  # program output, not commands
    for line_no, line in pieces:
      tokens = shlex.split(line, comments=True)
      simple: list[list[str]] = [[]]
      for token in tokens:
        if token in ("&&", ";"):
          simple.append([])
        else:
          simple[-1].append(token)
      for words in filter(None, simple):
        if all(re.fullmatch(r"[A-Za-z_]\w*=.*", w) for w in words):
          for w in words:
            name, value = w.split("=", 1)
            variables[name] = _expand(value, variables, line_no)
          continue
        argv = [
          _stand_in(_expand(w, variables, line_no), root, used) for w in words
        ]
        commands.append(Command(" ".join(words), argv, line_no))
  return commands


def _flag(argv: list[str], name: str) -> str | None:
  """The last value of `--name=v` or `--name v` in argv."""
  value = None
  for i, arg in enumerate(argv):
    if arg.startswith(f"{name}="):
      value = arg.split("=", 1)[1]
    elif arg == name and i + 1 < len(argv):
      value = argv[i + 1]
  return value


def _is_simclr(argv: list[str]) -> bool:
  return argv[:2] == ["python", "-m"] and argv[2].startswith("simclr_jax.")


def _key(argv: list[str]) -> str:
  module = argv[2].split(".", 1)[1]
  if module == "main":
    if "--help" in argv:
      return "main --help"
    where = "--print_config" if "--print_config" in argv else None
    key = f"main {_flag(argv, '--config')} {where or _flag(argv, '--workdir')}"
    source = _flag(argv, "--config.data.source")
    return f"{key} {source}" if source else key
  if module == "plots":
    return " ".join(["plots", *(a for a in argv[3:] if not a.startswith("-"))])
  if module == "sweep":
    return f"sweep {argv[3]}"
  return module


def _other(argv: list[str]) -> str:
  for prefix in OTHER:
    if argv[: len(prefix.split())] == prefix.split():
      return prefix
  raise AssertionError(
    f"README command {' '.join(argv)!r} is neither a "
    "`python -m simclr_jax.` command nor listed in OTHER "
    "of tests/test_readme_commands.py; run it there or "
    "add it to OTHER with the reason it is not run."
  )


# ------------------------------------------------------------- stand-ins


def _write_images(folder: pathlib.Path, count: int, seed: int) -> None:
  """`count` 32 px JPEGs in folder/<class>/NNNN.jpg, classes in turn."""
  rng = np.random.default_rng(seed)
  for i in range(count):
    where = folder / CLASSES[i % len(CLASSES)]
    where.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 256, (32, 32, 3), np.uint8)
    Image.fromarray(pixels).save(where / f"{i:04d}.jpg")


def _image_folder(root: pathlib.Path) -> pathlib.Path:
  """root/train/<class>/*.jpg and root/test/<class>/*.jpg, as CIFAR-10's."""
  _write_images(root / "train", NUM_TRAIN, seed=0)
  _write_images(root / "test", NUM_TEST, seed=1)
  return root


def _mixed_images(root: pathlib.Path, count: int, nested: bool) -> list[str]:
  """Unlabelled images of every format and mode the README names, in
  assorted sizes, directly in `root` (and one level down if `nested`)."""
  rng = np.random.default_rng(2)
  kinds = [
    ("RGB", ".jpg"),
    ("L", ".png"),
    ("RGBA", ".png"),
    ("RGB", ".bmp"),
    ("RGB", ".gif"),
    ("RGB", ".JPEG"),
  ]
  names = []
  for i in range(count):
    mode, ext = kinds[i % len(kinds)]
    h, w = 20 + 3 * (i % 5), 40 - 2 * (i % 7)
    shape = (h, w) + {"L": (), "RGB": (3,), "RGBA": (4,)}[mode]
    name = f"{'nested/' if nested and i % 4 == 3 else ''}img{i:02d}{ext}"
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape, np.uint8), mode).save(
      root / name
    )
    names.append(name)
  return sorted(names)


class _TinyCifar10(cifar.Cifar10, skip_registration=True):
  """tfds `cifar10` as `tfds build cifar10` prepares it, with random images
  instead of the download."""

  name = "cifar10"

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    return {
      "train": self._examples(NUM_TRAIN, 0),
      "test": self._examples(NUM_TEST, 1),
    }

  def _examples(self, count, seed):
    rng = np.random.default_rng(seed)
    for i in range(count):
      yield (
        f"{seed}_{i}",
        {
          "id": f"{seed}_{i}",
          "label": i % 10,
          "image": rng.integers(0, 256, (32, 32, 3), np.uint8),
        },
      )


@dataclasses.dataclass
class Workspace:
  root: pathlib.Path  # temporary root holding everything below
  cwd: pathlib.Path  # where the README's commands run ("the repo")
  env: dict[str, str | None]
  commands: list[Command]
  used_stand_ins: set[str]

  def find(self, key: str) -> Command:
    found = [
      c for c in self.commands if _is_simclr(c.argv) and _key(c.argv) == key
    ]
    assert len(found) == 1, f"README.md has {len(found)} commands {key!r}"
    return found[0]

  def run(self, key: str, *extra: str, cwd: pathlib.Path | None = None):
    """The README command `key` with `extra` appended, from `cwd`."""
    command = self.find(key)
    argv = command.argv
    proc = run_cli(
      *argv[3:],
      *extra,
      module=argv[2],
      cwd=cwd or self.cwd,
      env=self.env,
      timeout=600,
    )
    assert proc.returncode == 0, (
      f"README.md:{command.line}: {command.text}\nfailed as\n"
      f"{' '.join(argv)} {' '.join(extra)}\nin {cwd or self.cwd}:\n"
      f"{proc.stderr[-4000:]}"
    )
    return proc


def _checkout(path: pathlib.Path) -> pathlib.Path:
  """A working directory laid out like the repository for the README."""
  path.mkdir(parents=True)
  (path / "configs").symlink_to(ROOT / "configs")
  return path


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
  root = tmp_path_factory.mktemp("readme")
  cwd = _checkout(root / WORK)
  home = root / "home"
  # tfds cifar10 in ~/tensorflow_datasets, where `tfds build` puts it.
  _TinyCifar10(data_dir=str(home / "tensorflow_datasets")).download_and_prepare(
    download_config=tfds.download.DownloadConfig(try_download_gcs=False)
  )
  # ../shared/data/cifar10-jpg.tar.gz as seen from the working directory.
  archive = root / "shared" / "data" / "cifar10-jpg.tar.gz"
  archive.parent.mkdir(parents=True)
  folder = _image_folder(root / "archive_content")
  with tarfile.open(archive, "w:gz") as tar:
    for split in ("train", "test"):
      tar.add(folder / split, arcname=split)
  _image_folder(root / STAND_INS["/data/cifar10"])
  _mixed_images(root / STAND_INS["/data/my_images"], NUM_TRAIN, nested=False)
  # Flat class folders, 4 images each: one of each class is held out.
  _write_images(root / STAND_INS["/data/my_labelled_images"], 40, seed=3)
  _mixed_images(root / STAND_INS["DIR"], 14, nested=True)
  env = {"HOME": str(home), "TFDS_DATA_DIR": None}
  used: set[str] = set()
  commands = parse_readme(README.read_text(), {"HOME": str(home)}, root, used)
  return Workspace(root, cwd, env, commands, used)


def _overrides(argv: list[str]) -> list[str]:
  """TINY_RUN, plus what this config needs to match it."""
  extra = list(TINY_RUN)
  config = runpy.run_path(str(ROOT / _flag(argv, "--config")))["get_config"]()
  if "host_size" in config.data:  # some configs read from a larger square
    extra.append("--config.data.host_size=0")
  return extra


def _pretrain(
  ws: Workspace, key: str, *extra: str, cwd: pathlib.Path | None = None
):
  return ws.run(key, *_overrides(ws.find(key).argv), *extra, cwd=cwd)


def _results(workdir: pathlib.Path) -> dict:
  with open(workdir / "results.json") as f:
    return json.load(f)


def _check_pretraining(
  ws: Workspace, key: str, proc, cwd=None, *, source: str, num_classes: int = 10
) -> pathlib.Path:
  workdir = (cwd or ws.cwd) / _flag(ws.find(key).argv, "--workdir")
  assert "step 2/2" in proc.stdout, proc.stdout[-2000:]
  results = _results(workdir)
  assert results["mode"] == "pretrain"
  assert results["checkpoint"] == {"dir": str(workdir), "step": 2}
  assert results["dataset"]["source"] == source
  assert results["dataset"]["num_train"] == NUM_TRAIN
  assert results["dataset"]["num_classes"] == num_classes
  assert (workdir / "checkpoints" / "2").is_dir()
  for name in ("run_config.json", "metrics.jsonl"):
    assert (workdir / name).is_file(), name
  return workdir


# ------------------------------------------- commands no other one needs
# They run one after another in a background thread while the tests below
# run the others (a command is mostly one busy core: import, tracing, XLA
# compile), and their tests wait for them at the end of the file.


def _cifar10_cpu(ws: Workspace):
  block = [c for c in ws.commands if c.argv[0] in ("mkdir", "tar")]
  assert [c.argv[0] for c in block] == ["mkdir", "tar"], block
  for command in block:  # as written, from the working directory
    subprocess.run(command.argv, cwd=ws.cwd, check=True, timeout=60)
  return _pretrain(ws, "main configs/cifar10_cpu.py runs/cifar10_cpu")


def _cifar10_folder(ws: Workspace):
  # Its own working directory: in the README's it would resume the tfds run.
  cwd = _checkout(ws.root / "work_folder")
  return cwd, _pretrain(
    ws, "main configs/cifar10.py runs/cifar10 folder", cwd=cwd
  )


BACKGROUND = {  # test -> command; the slowest (a program of its own) first
  "test_your_own_unlabelled_images": lambda ws: _pretrain(
    ws,
    "main configs/imagenet.py runs/mine folder",
    "--config.eval.enabled=True",
  ),
  "test_your_own_labelled_images_on_a_cpu": lambda ws: ws.run(
    "main configs/folder_cpu.py runs/my_images",
    *TINY_RUN,
    "--config.eval.enabled=True",
    "--config.eval.batch_size=16",
    "--config.eval.probe_max_iters=10",
    "--config.linear_eval.val_fraction=0.25",
  ),
  "test_cifar10_cpu_from_the_shared_archive": _cifar10_cpu,
  "test_cifar10_from_an_image_folder": _cifar10_folder,
}


@pytest.fixture(scope="module", autouse=True)
def background(request, ws):
  """{test name: future} of the BACKGROUND commands of the selected tests."""
  selected = {
    item.originalname
    for item in request.session.items
    if item.module.__name__ == __name__
  }
  pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
  futures = {
    name: pool.submit(run, ws)
    for name, run in BACKGROUND.items()
    if name in selected
  }
  yield futures
  pool.shutdown(wait=True, cancel_futures=True)


# ----------------------------------------------------------------- tests


def test_readme_lists_every_expected_command(ws):
  keys = [_key(c.argv) for c in ws.commands if _is_simclr(c.argv)]
  assert sorted(keys) == sorted([*RUN, *SKIP]), (
    "README.md's `python -m simclr_jax.` commands changed; update RUN / "
    "SKIP in tests/test_readme_commands.py"
  )
  others = {_other(c.argv) for c in ws.commands if not _is_simclr(c.argv)}
  assert others == set(OTHER)
  assert ws.used_stand_ins == set(STAND_INS)


@pytest.fixture(scope="module")
def quickstart(ws):
  key = "main configs/default.py runs/quickstart"
  return key, _pretrain(ws, key)


def test_quickstart(ws, quickstart):
  key, proc = quickstart
  _check_pretraining(ws, key, proc, source="builtin")


def test_help(ws):
  proc = ws.run("main --help")
  assert "usage: python -m simclr_jax.main" in proc.stdout
  assert "cifar10_cpu.py" in proc.stdout


def test_print_config(ws):
  proc = ws.run("main configs/cifar10.py --print_config")
  assert "batch_size = 256" in proc.stdout
  assert "data.image_size = 32" in proc.stdout
  assert "# global batch, split over all devices" in proc.stdout


def test_plots_of_the_quickstart(ws, quickstart):
  proc = ws.run("plots runs/quickstart")
  plots = ws.cwd / "runs" / "quickstart" / "plots"
  names = ["loss.png", "accuracy.png", "learning_rate.png", "throughput.png"]
  assert proc.stdout.split() == [str(plots / n) for n in names]
  for name in names:
    with Image.open(plots / name) as image:
      assert image.format == "PNG" and image.size[0] > 100


@pytest.fixture(scope="module")
def cifar10_run(ws) -> pathlib.Path:
  """The README's tfds CIFAR-10 pretraining: the run $RUN names."""
  key = "main configs/cifar10.py runs/cifar10"
  return _check_pretraining(ws, key, _pretrain(ws, key), source="tfds")


def test_cifar10_from_tfds(cifar10_run):
  assert (cifar10_run / "checkpoints").is_dir()


@pytest.mark.parametrize(
  "name, mode, details",
  [
    ("c10_knn", "knn", {}),
    ("c10_linear", "linear", {"method": "sgd"}),
    ("c10_probe", "linear", {"method": "logistic"}),
    ("c10_ft10", "finetune", {"label_fraction": 0.1}),
  ],
)
def test_downstream_modes_on_run(ws, cifar10_run, name, mode, details):
  key = f"main configs/cifar10.py runs/{name}"
  argv = ws.find(key).argv
  assert ws.cwd / _flag(argv, "--config.init_checkpoint") == cifar10_run
  # The run was made with TINY_RUN's overrides (16 px where the config file
  # says 32, another width and depth): a downstream run takes them from its
  # run_config.json, so they are not repeated here.
  ws.run(key, *TINY_DOWNSTREAM)
  results = _results(ws.cwd / "runs" / name)
  assert results["config"]["data"]["image_size"] == 16
  assert results["mode"] == mode
  assert results["checkpoint"] == {"dir": str(cifar10_run), "step": 2}
  assert results["dataset"]["num_eval"] == NUM_TEST
  assert results["metrics"] and all(
    0.0 <= v <= 1.0 for v in results["metrics"].values()
  )
  assert details.items() <= results["details"].items()


def _all_files(root: pathlib.Path) -> list[str]:
  return sorted(
    p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()
  )


def test_embed_a_folder(ws, cifar10_run):
  proc = ws.run("embed")
  with np.load(ws.cwd / "emb.npz") as data:
    names = list(data["filenames"])
    assert names == _all_files(ws.root / STAND_INS["DIR"])
    assert data["representation"].shape[0] == len(names)
    assert np.isfinite(data["representation"]).all()
  assert f"Embedded {len(names)} images, skipped 0" in proc.stdout
  assert f"of {cifar10_run}." in proc.stdout


def test_your_own_unlabelled_images(ws, background):
  proc = background["test_your_own_unlabelled_images"].result()
  workdir = _check_pretraining(
    ws,
    "main configs/imagenet.py runs/mine folder",
    proc,
    source="folder",
    num_classes=0,
  )
  assert _results(workdir)["metrics"] == {}  # evaluation needs labels
  assert "No evaluation: the training data has no labels." in proc.stdout


def test_your_own_labelled_images_on_a_cpu(ws, background):
  """configs/folder_cpu.py on flat class folders: a tenth of each class is
  held out and evaluated on, for the trained, random and pixel rows."""
  proc = background["test_your_own_labelled_images_on_a_cpu"].result()
  results = _results(ws.cwd / "runs" / "my_images")
  assert "step 2/2" in proc.stdout
  d = results["dataset"]
  assert (d["source"], d["num_classes"]) == ("folder", 10)
  assert (d["num_train"], d["num_eval"]) == (30, 10)
  assert set(results["metrics"]) == {"trained", "random_init", "raw_pixels"}
  for row in results["metrics"].values():
    assert {"knn_k200_top1", "knn_k20_top1", "linear_top1"} <= set(row)
  assert "raw_pixels" in proc.stdout and "(10 images)" in proc.stdout


def test_cifar10_cpu_from_the_shared_archive(ws, background):
  proc = background["test_cifar10_cpu_from_the_shared_archive"].result()
  assert sorted(os.listdir(ws.cwd / "data" / "cifar10")) == ["test", "train"]
  _check_pretraining(
    ws, "main configs/cifar10_cpu.py runs/cifar10_cpu", proc, source="folder"
  )


def test_cifar10_from_an_image_folder(ws, background):
  cwd, proc = background["test_cifar10_from_an_image_folder"].result()
  _check_pretraining(
    ws,
    "main configs/cifar10.py runs/cifar10 folder",
    proc,
    cwd,
    source="folder",
  )
