"""The notebooks of notebooks/: in sync with their .py twins, stored without
outputs, and executed top to bottom on CPU, offline, with tiny parameters.

Each notebook `notebooks/NAME.ipynb` is generated from its jupytext twin
`notebooks/NAME.py` (percent format, the reviewed source). Execution follows
papermill's convention without needing papermill: the cells tagged "colab"
(install from the network, Drive mount) are dropped, and a cell with
`CI_PARAMETERS[NAME]` is inserted right after the cell tagged "parameters".
The three notebooks run in that order in one temporary working directory,
so 02 finds the run 01 made under runs/nb01.

The kernel is this interpreter (`sys.executable`, checked from inside the
kernel) with the environment a CPU user has: one CPU device, that is
without the test suite's `--xla_force_host_platform_device_count=8` (the
notebooks' shapes then match a laptop's, and nothing is sharded 8 ways on
2 cores). It keeps the suite's persistent compilation cache and its
`JAX_DISABLE_MOST_OPTIMIZATIONS` (conftest.py): the notebooks compile
programs that run for a few steps, and share them with each other.
"""

from __future__ import annotations

import copy
import os
import pathlib
import sys
import tarfile
import time

import jupytext
import nbclient
import nbformat
import pytest

from helpers import OFFICIAL_CHECKPOINTS

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
# The one address of the repository: every notebook's badge and clone.
REPO_URL = "https://github.com/simclr-jax/simclr_jax"
NAMES = (
  "01_pretrain_on_tpu",
  "02_explore_representations",
  "03_scaling_experiments",
)

# The tiny CPU runs of 01 and 03: ResNet-18 x1/8 at 16 px, a few steps each.
# Their evaluation programs (batches of 128 at 16 px) and 02's embedding of
# 01's run are compiled once, through the persistent compilation cache.
_TINY = {
  "data.image_size": 16,
  "model.width_multiplier": 0.125,
  "model.proj_out_dim": 16,
  "data.builtin_train_examples": 128,
  "data.builtin_eval_examples": 120,
  "data.shuffle_buffer": 128,
  "eval.batch_size": 128,
  "eval.knn_ks": (20,),
  "eval.probe_max_iters": 20,
  "log_every_steps": 1,
}
CI_PARAMETERS = {
  "01_pretrain_on_tpu": {
    "DATASET": "builtin",
    "OVERRIDES": {
      **_TINY,
      "batch_size": 32,
      "train_steps": 4,
      "checkpoint_every_steps": 2,
      "eval.monitor_every_epochs": 0.5,  # steps 2 and 4
      "eval.monitor_train_examples": 128,
      "linear_eval.batch_size": 64,
    },
    "LIVE_EVERY": 3,
    "LINEAR_EVAL_EPOCHS": 1,  # 3 steps of the paper's protocol
  },
  "02_explore_representations": {
    "RUN_DIR": "runs/nb01",
    # The official-code ResNet-18 fixture, extracted there by `_Runs`
    # ("" where ../shared/reference/checkpoints is absent).
    "TF_CHECKPOINT": "official/tf2_r18_cifar_1x_sk0"
    if (OFFICIAL_CHECKPOINTS / "tf2_r18_cifar_1x_sk0.tar.gz").exists()
    else "",
    "NUM_IMAGES": 120,
    "TSNE_POINTS": 100,
    "NUM_QUERIES": 3,
    "NEIGHBOURS": 4,
    "KNN_K": 5,
  },
  "03_scaling_experiments": {
    "DATASET": "builtin",
    "BATCH_SIZES": (16, 32),
    "EPOCHS": (1, 2),
    "OVERRIDES": {
      **_TINY,
      "data.builtin_train_examples": 32,  # 2 to 5 steps a point
      "checkpoint_every_steps": 1000,
      "eval.linear_probe": False,
    },
  },
}
# Wall-clock limit of each notebook, kernel start included: a guard against
# hangs, about 3x the time on an idle 2-core machine (about 45 s, 13 s and
# 55 s there; 60 s, 16 s and 90 s while other jobs shared it).
TIMEOUT_S = {
  "01_pretrain_on_tpu": 150,
  "02_explore_representations": 90,
  "03_scaling_experiments": 180,
}
# Figures each notebook shows (image/png outputs) with the parameters above.
MIN_FIGURES = {
  "01_pretrain_on_tpu": 3,
  "02_explore_representations": 3,
  "03_scaling_experiments": 1,
}


def _paths(name: str) -> tuple[pathlib.Path, pathlib.Path]:
  return NOTEBOOKS / f"{name}.ipynb", NOTEBOOKS / f"{name}.py"


def _read(name: str):
  return nbformat.read(_paths(name)[0], as_version=4)


def _tags(cell) -> list[str]:
  return list(cell.get("metadata", {}).get("tags", []))


def _cells(nb) -> list[tuple[str, str, list[str]]]:
  return [(c.cell_type, c.source.strip(), _tags(c)) for c in nb.cells]


def test_every_notebook_is_listed_with_its_twin():
  found = {p.stem for p in NOTEBOOKS.glob("*.ipynb")}
  twins = {p.stem for p in NOTEBOOKS.glob("*.py")}
  assert found == twins == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_ipynb_is_in_sync_with_its_py_twin(name):
  ipynb, py = _paths(name)
  from_py = jupytext.read(py)
  assert _cells(_read(name)) == _cells(from_py), (
    f"{ipynb.name} differs from {py.name}; regenerate it with "
    f"`jupytext --to ipynb notebooks/{py.name}`"
  )
  assert _read(name).metadata.get("kernelspec", {}).get("name") == "python3"


@pytest.mark.parametrize("name", NAMES)
def test_no_outputs_are_committed(name):
  for i, cell in enumerate(_read(name).cells):
    if cell.cell_type == "code":
      assert cell.get("outputs") == [], f"cell {i} of {name} has outputs"
      assert cell.get("execution_count") is None, f"cell {i} was run"


@pytest.mark.parametrize("name", NAMES)
def test_badge_install_cell_and_tags(name):
  nb = _read(name)
  badge = (
    "https://colab.research.google.com/github/"
    f"{REPO_URL.removeprefix('https://github.com/')}/blob/main/"
    f"notebooks/{name}.ipynb"
  )
  # The title with the badge, then the install cell as the first code cell.
  assert nb.cells[0].cell_type == "markdown" and badge in nb.cells[0].source
  install = nb.cells[1]
  assert install.cell_type == "code" and _tags(install) == ["colab"]
  assert f'REPO_URL = "{REPO_URL}"' in install.source
  assert "pip" in install.source and "install" in install.source
  # Every github.com address in the notebook is the repository's.
  for cell in nb.cells:
    for word in cell.source.replace("(", " ").replace(")", " ").split():
      if "github.com/" in word and "colab.research" not in word:
        assert word.strip("\"'").startswith(REPO_URL), word
  tagged = [c for c in nb.cells if "parameters" in _tags(c)]
  assert len(tagged) == 1 and tagged[0].cell_type == "code"
  for key in CI_PARAMETERS[name]:
    assert f"{key} = " in tagged[0].source, f"{key} is not a parameter"
  # Backend detection comes before the parameters that depend on it.
  first = "".join(c.source for c in nb.cells[: nb.cells.index(tagged[0])])
  assert "jax.devices()[0].platform" in first


def _ci_notebook(name: str):
  """The notebook as CI runs it: colab cells out, CI parameters in."""
  nb = copy.deepcopy(_read(name))
  nb.cells = [c for c in nb.cells if "colab" not in _tags(c)]
  at = next(i for i, c in enumerate(nb.cells) if "parameters" in _tags(c))
  lines = [f"{k} = {v!r}" for k, v in CI_PARAMETERS[name].items()]
  lines.append(f"assert sys.executable == {sys.executable!r}")
  injected = nbformat.v4.new_code_cell("\n".join(lines))
  injected.metadata["tags"] = ["injected-parameters"]
  nb.cells.insert(at + 1, injected)
  return nb


def _kernel_env() -> dict[str, str]:
  env = dict(os.environ)
  flags = [
    f
    for f in env.get("XLA_FLAGS", "").split()
    if not f.startswith("--xla_force_host_platform_device_count")
  ]
  env["XLA_FLAGS"] = " ".join(flags)
  env["JAX_PLATFORMS"] = "cpu"
  env.pop("MPLBACKEND", None)  # the kernel's inline backend draws figures
  env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
  return env


class _Runs:
  """Executes the notebooks once each, in order, in one working directory."""

  def __init__(self, cwd: pathlib.Path):
    self.cwd = cwd
    self.done: dict[str, tuple[object, float, BaseException | None]] = {}

  def get(self, name: str):
    """(executed notebook, seconds); runs the ones before it first."""
    for earlier in NAMES[: NAMES.index(name)]:
      if earlier not in self.done:
        self._execute(earlier)
    if name not in self.done:
      self._execute(name)
    nb, seconds, error = self.done[name]
    if error is not None:
      raise error
    return nb, seconds

  def _execute(self, name: str) -> None:
    nb = _ci_notebook(name)
    official = CI_PARAMETERS[name].get("TF_CHECKPOINT")
    if official:
      archive = OFFICIAL_CHECKPOINTS / f"{pathlib.Path(official).name}.tar.gz"
      with tarfile.open(archive) as tar:
        tar.extractall(self.cwd / pathlib.Path(official).parent, filter="data")
    deadline = time.monotonic() + TIMEOUT_S[name]
    client = nbclient.NotebookClient(
      nb,
      kernel_name="python3",
      # Each cell may run until the notebook's deadline, no longer.
      timeout_func=lambda cell: max(1.0, deadline - time.monotonic()),
      resources={"metadata": {"path": str(self.cwd)}},
    )
    start, error = time.monotonic(), None
    try:
      client.execute(env=_kernel_env())
    except nbclient.exceptions.CellTimeoutError:
      error = AssertionError(f"{name} ran over {TIMEOUT_S[name]} s")
    except nbclient.exceptions.CellExecutionError as e:
      error = e
    seconds = time.monotonic() - start
    print(f"{name}: executed in {seconds:.1f} s")
    self.done[name] = (nb, seconds, error)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> _Runs:
  return _Runs(tmp_path_factory.mktemp("notebooks"))


def _outputs(nb, kind: str) -> list:
  return [
    out["data"][kind]
    for cell in nb.cells
    if cell.cell_type == "code"
    for out in cell.get("outputs", [])
    if kind in out.get("data", {})
  ]


@pytest.mark.slow  # ~3 minutes of training in all: CI's second step
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_on_cpu(runs, name):
  nb, seconds = runs.get(name)
  assert seconds < TIMEOUT_S[name]
  figures = _outputs(nb, "image/png")
  assert len(figures) >= MIN_FIGURES[name], f"{len(figures)} figures"
  tables = _outputs(nb, "text/markdown")
  if name == "01_pretrain_on_tpu":
    table = next(t for t in tables if "| encoder |" in t)
    assert "| trained |" in table and "| random_init |" in table
    assert (runs.cwd / "runs/nb01/results.json").is_file()
  elif name == "02_explore_representations":
    table = next(t for t in tables if "| class |" in t)
    assert table.count("\n") == 2 + 10  # header, rule, 10 classes, all
    if CI_PARAMETERS[name]["TF_CHECKPOINT"]:  # converted and embedded
      table = next(t for t in tables if "| encoder |" in t)
      assert "| official ResNet-18 1x (sk_ratio 0) | 512-d |" in table
      assert (runs.cwd / "runs/official/run_config.json").is_file()
  else:
    table = next(t for t in tables if "| batch |" in t)
    points = CI_PARAMETERS[name]
    want = len(points["BATCH_SIZES"]) * len(points["EPOCHS"])
    assert table.count("\n") == 1 + want  # header, rule, one row per point
