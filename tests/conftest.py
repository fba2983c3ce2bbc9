"""Test setup: 8 simulated CPU devices, set before jax is imported anywhere,
and one persistent compilation cache for the whole test run."""

import atexit
import os
import shutil
import tempfile

os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# Most of the suite's time is XLA compiling the same tiny programs again: in
# another test, another xdist worker or a CLI subprocess. JAX's persistent
# cache, in a directory made for this run (the first process to get here
# makes it; xdist workers and subprocesses inherit it through the
# environment), compiles each program once. Removed by the process that made
# it when the run ends.
if "SIMCLR_TEST_JAX_CACHE" not in os.environ:
  os.environ["SIMCLR_TEST_JAX_CACHE"] = tempfile.mkdtemp(
    prefix="simclr_jax_test_cache_"
  )
  atexit.register(
    shutil.rmtree, os.environ["SIMCLR_TEST_JAX_CACHE"], ignore_errors=True
  )
os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ["SIMCLR_TEST_JAX_CACHE"]
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
# XLA without its expensive optimisation passes compiles a tiny ResNet's
# train step about 3x faster; the programs tests run are a few steps long,
# and float results stay within the golden-value tolerances. Long runs (the
# `slow` tests) turn optimisation back on with the `optimised_xla` fixture.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

import jax  # noqa: E402  (after XLA_FLAGS on purpose)

assert jax.device_count() == 8, "conftest must run before jax is imported"

import json  # noqa: E402
import pathlib  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

# Golden values computed with the official SimCLR TF2 code (tests/data/
# reference/README.md says how); kept in the repository so a fresh clone
# tests on its own.
REFERENCE_DIR = pathlib.Path(__file__).resolve().parent / "data" / "reference"


@pytest.fixture(scope="session")
def reference() -> tuple[dict, dict[str, np.ndarray]]:
  """(cases JSON, arrays) of the reference golden values."""
  with open(REFERENCE_DIR / "simclr_reference.json") as f:
    meta = json.load(f)
  with np.load(REFERENCE_DIR / "simclr_reference.npz") as arrays:
    return meta, dict(arrays)


# ------------------------------------------- augmentation test helpers ---
# Shared by tests/test_augment_*.py.

import functools  # noqa: E402


@functools.lru_cache(maxsize=None)
def _jitted_augment(config):
  from simclr_jax import augment  # pylint: disable=import-outside-toplevel

  return jax.jit(functools.partial(augment.simclr_augment, config=config))


@pytest.fixture(scope="session")
def augment_off() -> dict:
  """AugmentConfig fields with every random op off; tests turn one on."""
  return dict(
    crop=False,
    flip=False,
    color_jitter_strength=0.0,
    color_jitter_prob=0.0,
    grayscale_prob=0.0,
    blur_prob=0.0,
    solarize_prob=0.0,
  )


@pytest.fixture(scope="session")
def run_augment():
  """run(config, images, seed=0): one jitted `simclr_augment` view as numpy,
  compiled once per config for the whole session."""

  def run(config, images, seed=0):
    return np.asarray(_jitted_augment(config)(jax.random.key(seed), images))

  return run


@pytest.fixture(scope="session")
def random_uint8():
  """random_uint8(shape, seed=0): uniform uint8 test images."""

  def make(shape, seed=0):
    return np.random.RandomState(seed).randint(0, 256, shape).astype(np.uint8)

  return make


@pytest.fixture(scope="session")
def small_model_factory():
  """Builds the models tests run: ResNet-18 x0.25, CIFAR stem, 16-d head."""
  import jax.numpy as jnp
  from simclr_jax.models import ProjectionHead, ResNet, SimCLRModel

  def make(dtype=jnp.float32, num_layers: int = 2, num_classes: int = 10):
    return SimCLRModel(
      backbone=ResNet(
        depth=18, width_multiplier=0.25, cifar_stem=True, dtype=dtype
      ),
      projection_head=ProjectionHead(
        num_layers=num_layers, out_dim=16, dtype=dtype
      ),
      num_classes=num_classes,
    )

  return make


@pytest.fixture(scope="session")
def model_images():
  """Four random 32x32 RGB images in [0, 1]."""
  return jax.random.uniform(jax.random.key(1), (4, 32, 32, 3))


@pytest.fixture(scope="session")
def small_model(small_model_factory, model_images):
  """(model, variables) of the default small model, initialised once."""
  model = small_model_factory()
  variables = jax.jit(
    lambda x: model.init(jax.random.key(0, impl="rbg"), x, train=False)
  )(model_images)
  return model, variables


@pytest.fixture
def optimised_xla():
  """Full XLA optimisation for one test (its programs run for minutes)."""
  previous = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", False)
  yield
  jax.config.update("jax_disable_most_optimizations", previous)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> str:
  """A finished two-step run of `helpers.tiny_run_config`, trained once per
  test session (per xdist worker); tests copy it before changing it."""
  import helpers
  from simclr_jax import pretrain

  workdir = str(tmp_path_factory.getbasetemp() / "shared_tiny_run")
  pretrain.train_and_evaluate(helpers.tiny_run_config(), workdir)
  return workdir


@pytest.fixture(scope="session")
def official_checkpoint(tmp_path_factory):
  """name -> (extracted checkpoint folder, manifest, reference outputs),
  extracted once per session; skips where the fixtures are absent."""
  import tarfile

  from helpers import OFFICIAL_CHECKPOINTS

  cache = {}

  def get(name: str) -> tuple[pathlib.Path, dict, dict]:
    archive = OFFICIAL_CHECKPOINTS / f"{name}.tar.gz"
    if not archive.exists():
      pytest.skip(
        f"{archive} is absent: the official-code checkpoint fixtures live "
        "in ../shared/reference/checkpoints next to the repository"
      )
    if name not in cache:
      dest = tmp_path_factory.mktemp(f"official_{name}")
      with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
      with open(OFFICIAL_CHECKPOINTS / f"{name}.json") as f:
        manifest = json.load(f)
      outputs = dict(np.load(OFFICIAL_CHECKPOINTS / f"{name}.npz"))
      cache[name] = (dest / name, manifest, outputs)
    return cache[name]

  return get
