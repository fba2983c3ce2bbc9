"""Real data: a shortened configs/cifar10_cpu.py run on CIFAR-10 JPEGs.

Uses ../shared/data/cifar10-jpg.tar.gz (or $SIMCLR_CIFAR10_TAR), extracted
to a temporary folder; skips where the archive is absent, as on a user's
machine. The full run and its numbers are in docs/results.md.
"""

import os
import pathlib
import runpy
import tarfile

import pytest

from simclr_jax import pretrain

ROOT = pathlib.Path(__file__).resolve().parents[1]
ARCHIVE = pathlib.Path(
  os.environ.get(
    "SIMCLR_CIFAR10_TAR", ROOT.parent / "shared" / "data" / "cifar10-jpg.tar.gz"
  )
)


@pytest.fixture(scope="module")
def cifar10_dir(tmp_path_factory):
  if not ARCHIVE.is_file():
    pytest.skip(
      f"CIFAR-10 archive not found at {ARCHIVE} (set "
      "SIMCLR_CIFAR10_TAR to its path to run this test)"
    )
  root = tmp_path_factory.mktemp("cifar10")
  with tarfile.open(ARCHIVE) as tar:
    tar.extractall(root, filter="data")
  assert (root / "train").is_dir() and (root / "test").is_dir()
  return str(root)


@pytest.mark.slow
def test_short_pretraining_beats_random_encoder(
  cifar10_dir, tmp_path, optimised_xla
):
  c = runpy.run_path(str(ROOT / "configs" / "cifar10_cpu.py"))["get_config"]()
  c.data.data_dir = cifar10_dir
  c.epochs = 1
  c.optim.warmup_epochs = 0.2
  c.eval.compare_raw_pixels = False
  c.eval.max_train_examples = 10000
  results = pretrain.train_and_evaluate(c, str(tmp_path / "run"))
  assert results["dataset"]["num_train"] == 50000
  assert results["dataset"]["num_eval"] == 10000
  trained = results["metrics"]["trained"]
  random = results["metrics"]["random_init"]
  assert trained["knn_k200_top1"] > random["knn_k200_top1"] + 0.03, (
    trained,
    random,
  )
  assert trained["linear_top1"] > random["linear_top1"], (
    trained,
    random,
  )
