# ---
# jupyter:
#   accelerator: TPU
#   colab:
#     gpuType: V5E1
#     provenance: []
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: accelerator,colab
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Scaling experiments: batch size and training length
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/simclr-jax/simclr_jax/blob/main/notebooks/03_scaling_experiments.ipynb)
#
# SimCLR profits from large batches (more negatives per step) and from
# long training, and the two trade off: with few epochs large batches win,
# with many the gap closes (Chen et al. 2020, Figure 9). This notebook runs
# a small sweep over batch size and epochs, one pretraining run per point,
# and draws accuracy against epochs with one line per batch size.
#
# The sweep is a plain loop over the library's Python API
# (`configlib.load_config` and `pretrain.train_and_evaluate`). A sweep tool
# will come later; until then this notebook is the way to run one. Every
# point has its own run directory, so re-running the notebook skips the
# points that finished and resumes the one that was interrupted.
#
# | backend | data | model | batch sizes | epochs |
# | --- | --- | --- | --- | --- |
# | TPU (free Colab: one v5e chip) | CIFAR-10 from tfds, 32 px | ResNet-18, CIFAR stem, bfloat16 | 256, 512, 1024 | 10, 20, 40 |
# | GPU | CIFAR-10 from tfds, 32 px | ResNet-18, CIFAR stem | 256, 512, 1024 | 2, 5, 10 |
# | CPU | built-in dataset (5,000 images), 16 px | ResNet-18 x0.25 | 64, 256 | 2, 4 |
#
# The learning rate follows each config's scaling rule (`configs/cifar10.py`:
# 1.0 x B/256, linear), as in the paper's batch-size study.

# %% tags=["colab"]
# Colab only (CI skips cells tagged "colab"): clone the repository and
# install it, with the JAX extra for this runtime's accelerator.
import importlib.util
import os
import shutil
import subprocess
import sys

REPO_URL = "https://github.com/simclr-jax/simclr_jax"
CLONE = "/content/simclr_jax"
if "google.colab" in sys.modules:
  if not os.path.isdir(CLONE):
    subprocess.run(["git", "clone", "--depth=1", REPO_URL, CLONE], check=True)
  if importlib.util.find_spec("libtpu"):
    extra = "[tpu]"
  elif shutil.which("nvidia-smi"):
    extra = "[cuda12]"
  else:
    extra = ""
  subprocess.run(
    [sys.executable, "-m", "pip", "install", "-q", "-e", CLONE + extra]
    + ["scikit-learn"],
    check=True,
  )
  sys.path.insert(0, CLONE)  # importable now, without a restart
else:
  print("Not on Colab: using the simclr_jax installed in this kernel.")

# %%
# The backend decides the defaults below. (The .py twin of this notebook has
# its imports after the install cell, hence the file-wide E402 waiver.)
# ruff: noqa: E402
import json
import os
import pathlib
import sys

import jax
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

import simclr_jax
from simclr_jax import configlib, pretrain

BACKEND = jax.devices()[0].platform  # "tpu", "gpu" or "cpu"
IN_COLAB = "google.colab" in sys.modules
# configs/ is in the repository (the editable install), not in the package.
REPO = pathlib.Path(simclr_jax.__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
assert CONFIGS.is_dir(), f"{CONFIGS} not found: pip install -e a clone"
print(
  f"JAX {jax.__version__}: {jax.device_count()} x "
  f"{jax.devices()[0].device_kind} ({BACKEND})"
)

# %% tags=["parameters"]
# Parameters. Defaults depend on the backend; CI replaces some of them in a
# cell it inserts right after this one.
# One run directory per sweep point below this one.
if IN_COLAB:
  WORKDIR = "/content/drive/MyDrive/simclr_jax/runs/nb03"
else:
  WORKDIR = "runs/nb03"
DATASET = "builtin" if BACKEND == "cpu" else "cifar10"  # or "folder"
DATA_DIR = "~/tensorflow_datasets"  # tfds data_dir, or the folder root
BATCH_SIZES = (64, 256) if BACKEND == "cpu" else (256, 512, 1024)
EPOCHS = {"tpu": (10, 20, 40), "gpu": (2, 5, 10)}.get(BACKEND, (2, 4))
OVERRIDES = {}  # any other config keys, for every point

# %% tags=["colab"]
# Colab only: mount Google Drive when the run directories are on it.
if IN_COLAB and WORKDIR.startswith("/content/drive"):
  from google.colab import drive

  drive.mount("/content/drive")

# %% [markdown]
# ## Data and the base config
#
# As in notebook 01: CIFAR-10 is prepared once with tfds (the built-in
# dataset without network). The sweep points differ only in `batch_size`
# and `epochs`. The evaluation at the end of each run is kNN and the linear
# probe of the trained encoder; the random-encoder baseline does not depend
# on the sweep, so it is left out.

# %%
if DATASET == "cifar10":
  try:
    import tensorflow_datasets as tfds

    tfds.builder("cifar10", data_dir=DATA_DIR).download_and_prepare()
  except Exception as error:  # no network, most likely
    print(f"CIFAR-10 is not available ({error}); using the built-in data.")
    DATASET = "builtin"

if DATASET == "builtin":
  config_file = CONFIGS / "default.py"
  recipe = {"data.builtin_train_examples": 5000}
else:
  config_file = CONFIGS / "cifar10.py"
  recipe = {
    "model.half_precision": BACKEND == "tpu",
    "optim.warmup_epochs": 1.0,
    "log_every_steps": 50,
    "checkpoint_every_steps": 1000,
    "data.data_dir": os.path.expanduser(DATA_DIR),
  }
  if DATASET == "folder":
    recipe["data.source"] = "folder"
recipe["eval.compare_random_init"] = False
print(f"{config_file.name} with {recipe | OVERRIDES}")

# %% [markdown]
# ## The sweep
#
# One `train_and_evaluate` call per point; a finished point returns its
# stored results at once.

# %%
points = []
for batch_size in BATCH_SIZES:
  for epochs in EPOCHS:
    workdir = f"{WORKDIR}/b{batch_size}_e{epochs}"
    print(f"\n=== batch {batch_size}, {epochs} epochs: {workdir}")
    config = configlib.load_config(
      str(config_file),
      {**recipe, "batch_size": batch_size, "epochs": epochs, **OVERRIDES},
    )
    out = pretrain.train_and_evaluate(config, workdir)
    points.append(
      {
        "batch_size": batch_size,
        "epochs": epochs,
        "steps": out["checkpoint"]["step"],
        **out["metrics"]["trained"],
        "train_time_s": out["details"]["train_time_s"],
      }
    )
with open(f"{WORKDIR}/sweep.json", "w") as f:
  json.dump(points, f, indent=2)

# %% [markdown]
# ## Results

# %%
accuracies = [k for k in points[0] if k.endswith("_top1")]
header = ["batch", "epochs", "steps", *accuracies, "train time"]
rows = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
for p in points:
  cells = [p["batch_size"], p["epochs"], p["steps"]]
  cells += [f"{100 * p[k]:.1f}%" for k in accuracies]
  cells.append(f"{p['train_time_s']:.0f} s")
  rows.append("| " + " | ".join(map(str, cells)) + " |")
display(Markdown("\n".join(rows)))

# %% [markdown]
# Accuracy against training length, one line per batch size (the paper's
# Figure 9 draws the same numbers as bars), and against batch size, one
# line per training length.

# %%
shown = [k for k in accuracies if not k.startswith("online_head")]
fig, axes = plt.subplots(
  2, len(shown), figsize=(4.2 * len(shown), 6.6), squeeze=False
)
for ax, metric in zip(axes[0], shown):
  for batch_size in BATCH_SIZES:
    line = [p for p in points if p["batch_size"] == batch_size]
    ax.plot(
      [p["epochs"] for p in line],
      [100 * p[metric] for p in line],
      marker="o",
      label=f"batch {batch_size}",
    )
  ax.set(xscale="log", xlabel="epochs", ylabel=f"{metric} (%)")
  ax.set_xticks(EPOCHS, [str(e) for e in EPOCHS])
  ax.minorticks_off()
  ax.legend(fontsize=8)
for ax, metric in zip(axes[1], shown):
  for epochs in EPOCHS:
    line = [p for p in points if p["epochs"] == epochs]
    ax.plot(
      [p["batch_size"] for p in line],
      [100 * p[metric] for p in line],
      marker="s",
      label=f"{epochs} epochs",
    )
  ax.set(xscale="log", xlabel="batch size", ylabel=f"{metric} (%)")
  ax.set_xticks(BATCH_SIZES, [str(b) for b in BATCH_SIZES])
  ax.minorticks_off()
  ax.legend(fontsize=8)
fig.suptitle("SimCLR: accuracy of the frozen encoder")
fig.tight_layout()
plt.show()
