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
# # SimCLR pretraining on one TPU chip
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/simclr-jax/simclr_jax/blob/main/notebooks/01_pretrain_on_tpu.ipynb)
#
# Pretrains a ResNet with SimCLR through the library's Python API
# (`pretrain.train_and_evaluate`), draws the training curves while it runs,
# and ends with the frozen-encoder evaluation: kNN and a linear probe for the
# trained encoder next to a randomly initialised one of the same
# architecture.
#
# The run is sized for the backend it finds:
#
# | backend | data | model | batch | epochs |
# | --- | --- | --- | --- | --- |
# | TPU (free Colab: one v5e chip, 16 GB) | CIFAR-10 from tfds, 32 px | ResNet-18, CIFAR stem, bfloat16 | 512 | 200 |
# | GPU | CIFAR-10 from tfds, 32 px | ResNet-18, CIFAR stem | 512 | 30 |
# | CPU | the built-in dataset (no download), 16 px | ResNet-18 x0.25 | 256 | 4 |
#
# The recipe is `configs/cifar10.py` (the reference README's CIFAR-10
# command, 1000 epochs) cut to fewer epochs, and `configs/default.py` on a
# CPU. Without network the built-in procedural dataset is used instead of
# CIFAR-10, and any image folder works too (`DATASET = "folder"`).
#
# On Colab: *Runtime > Change runtime type > TPU*, then *Run all*. Keep the
# run directory on Google Drive (the default on Colab) so a disconnect costs
# nothing but the time since the last checkpoint; see the end of the
# notebook.

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
import os
import pathlib
import sys

import jax
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

import simclr_jax
from simclr_jax import configlib, downstream, plots, pretrain

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
# Run directory: re-running with the same one resumes from its last
# checkpoint. On Colab it is on Google Drive, so it survives a disconnect.
if IN_COLAB:
  WORKDIR = "/content/drive/MyDrive/simclr_jax/runs/nb01"
else:
  WORKDIR = "runs/nb01"
# "cifar10" (tfds, downloaded once into DATA_DIR), "builtin" (procedural,
# offline) or "folder" (DATA_DIR/train/<class>/*.jpg and DATA_DIR/test/...).
DATASET = "builtin" if BACKEND == "cpu" else "cifar10"
DATA_DIR = "~/tensorflow_datasets"
EPOCHS = {"tpu": 200, "gpu": 30}.get(BACKEND, 4)
MONITOR_EVERY_EPOCHS = {"tpu": 10, "gpu": 5}.get(BACKEND, 1)  # kNN monitor
# Paper-style linear evaluation (SGD, augmentation) after pretraining; 0
# skips it. The end-of-run linear probe below is its quick stand-in.
LINEAR_EVAL_EPOCHS = {"tpu": 100, "gpu": 20}.get(BACKEND, 0)
LIVE_EVERY = 5  # redraw the live curves every so many reports
OVERRIDES = {}  # any other config keys, e.g. {"loss.temperature": 0.2}

# %% tags=["colab"]
# Colab only: mount Google Drive when the run directory is on it.
if IN_COLAB and WORKDIR.startswith("/content/drive"):
  from google.colab import drive

  drive.mount("/content/drive")

# %% [markdown]
# ## Data
#
# tfds never downloads during training, so CIFAR-10 is prepared here once
# (about 160 MB, a minute). Without network the notebook falls back to the
# built-in dataset.

# %%
if DATASET == "cifar10":
  try:
    import tensorflow_datasets as tfds

    tfds.builder("cifar10", data_dir=DATA_DIR).download_and_prepare()
  except Exception as error:  # no network, most likely
    print(f"CIFAR-10 is not available ({error}); using the built-in data.")
    DATASET = "builtin"
print(f"dataset: {DATASET}")

# %% [markdown]
# ## The config
#
# A config file of `configs/` with a few keys changed, as
# `--config.key=value` does on the command line; a misspelt key is an
# error naming the closest ones.

# %%
if DATASET == "builtin":
  config_file = CONFIGS / "default.py"
  recipe = {"eval.monitor_train_examples": 2000}
else:  # ResNet-18, CIFAR stem, batch 512: the reference CIFAR-10 recipe
  config_file = CONFIGS / "cifar10.py"
  recipe = {
    "model.half_precision": BACKEND == "tpu",  # bfloat16 compute on TPU
    "optim.warmup_epochs": min(10.0, EPOCHS / 10),
    "log_every_steps": 50,
    "checkpoint_every_steps": 1000,  # about every 10 epochs
  }
  if DATASET == "cifar10":
    recipe["data.data_dir"] = os.path.expanduser(DATA_DIR)
  else:
    recipe["data.source"] = "folder"
    recipe["data.data_dir"] = os.path.expanduser(DATA_DIR)
recipe["epochs"] = EPOCHS
recipe["eval.monitor_every_epochs"] = float(MONITOR_EVERY_EPOCHS)
config = configlib.load_config(str(config_file), {**recipe, **OVERRIDES})
print(
  f"{config_file.name}: ResNet-{config.model.depth} "
  f"x{config.model.width_multiplier}, {config.data.source} "
  f"{config.data.name} at {config.data.image_size} px, batch "
  f"{config.batch_size}, "
  + (
    f"{config.train_steps} steps"
    if config.train_steps
    else f"{config.epochs} epochs"
  )
)


# %% [markdown]
# ## Pretraining, with live curves
#
# `train_and_evaluate` calls `on_report(step, scalars)` for every record it
# writes to `WORKDIR/metrics.jsonl`: training scalars, the kNN monitor and,
# at the end, the evaluation. The class below keeps them and redraws a
# figure every few reports (plotting only; the training is the library's).


# %%
class LiveCurves:
  """on_report callback: collects the scalars and redraws three panels."""

  PANELS = (
    ("NT-Xent loss", ("contrastive_loss",)),
    ("accuracy", ("contrast_acc", "probe_acc", "monitor/knn_top1")),
    ("learning rate", ("learning_rate",)),
  )

  def __init__(self, every):
    self.every, self.reports, self.handle = every, 0, None
    self.history = {}

  def __call__(self, step, scalars):
    for name, value in scalars.items():
      steps, values = self.history.setdefault(name, ([], []))
      steps.append(step)
      values.append(value)
    self.reports += 1
    if self.reports % self.every == 0:
      self.draw()

  def draw(self):
    fig, axes = plt.subplots(1, len(self.PANELS), figsize=(13, 3.2))
    for ax, (title, names) in zip(axes, self.PANELS):
      for name in names:
        if name in self.history:
          ax.plot(*self.history[name], marker=".", label=name)
      ax.set(title=title, xlabel="step")
      if len(names) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    if self.handle is None:
      self.handle = display(fig, display_id=True)
    else:
      self.handle.update(fig)
    plt.close(fig)


curves = LiveCurves(every=LIVE_EVERY)
results = pretrain.train_and_evaluate(config, WORKDIR, on_report=curves)
curves.draw()

# %% [markdown]
# ## Results
#
# Frozen encoder, evaluated on the test split: weighted cosine kNN and a
# logistic-regression linear probe on the encoder output, for the trained
# encoder and for a randomly initialised one of the same architecture (its
# BatchNorm statistics re-estimated on the training images). The trained
# row also has the online supervised head, trained on stop-gradient
# features during pretraining.

# %%
metrics = results["metrics"]
columns = sorted({name for row in metrics.values() for name in row})
table = ["| encoder | " + " | ".join(columns) + " |"]
table.append("| --- |" + " --- |" * len(columns))
for row, values in metrics.items():
  cells = [f"{100 * values[c]:.1f}%" if c in values else "-" for c in columns]
  table.append(f"| {row} | " + " | ".join(cells) + " |")
display(Markdown("\n".join(table)))

shared = [c for c in columns if all(c in v for v in metrics.values())]
fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(shared), 3))
width = 0.8 / len(metrics)
for i, (row, values) in enumerate(metrics.items()):
  x = [j + i * width for j in range(len(shared))]
  bars = ax.bar(x, [100 * values[c] for c in shared], width, label=row)
  ax.bar_label(bars, fmt="%.1f", fontsize=8)
ax.set_xticks([j + width * (len(metrics) - 1) / 2 for j in range(len(shared))])
ax.set_xticklabels(shared)
ax.set_ylim(0, 1.3 * ax.get_ylim()[1])
ax.set(ylabel="top-1 accuracy (%)", title="trained vs random encoder")
ax.legend(loc="upper left", ncols=len(metrics), fontsize=8)
plt.show()

# %% [markdown]
# The whole history, read back from `WORKDIR/metrics.jsonl` with
# `plots.load_metrics`. After a resume the live figure above holds only the
# reports of this session, while the file holds those of every session
# (`python -m simclr_jax.plots WORKDIR` draws them as PNG files).

# %%
history = plots.load_metrics(WORKDIR)
names = ["contrastive_loss", "contrast_acc", "images_per_sec"]
names = [n for n in names if n in history]
names += [n for n in history if n.startswith("monitor/")]
fig, axes = plt.subplots(
  1, len(names), figsize=(3.3 * len(names), 3), squeeze=False
)
for ax, name in zip(axes[0], names):
  ax.plot(*history[name], marker=".")
  ax.set(title=name, xlabel="step")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## After a disconnect
#
# Colab stops idle or long sessions. Everything the run needs is in
# `WORKDIR`: checkpoints (`WORKDIR/checkpoints`, every
# `checkpoint_every_steps` and at the end), `run_config.json`,
# `metrics.jsonl` and `results.json`. To continue, reconnect, keep the same
# `WORKDIR` and *Run all* again: the install is quick, Drive is mounted
# again, and **re-running the same `train_and_evaluate` call resumes from
# the last checkpoint** (same data order and augmentations as an
# uninterrupted run). On a finished run it prints the stored results
# instead of recomputing them (`config.reevaluate = True` evaluates again).
# A GCS bucket works the same way once mounted as a folder (e.g. with
# `gcsfuse`); the library reads and writes the run directory as local
# files, so a `gs://` path itself is not accepted.
#
# Run again now, the call returns at once with the stored results:

# %%
again = pretrain.train_and_evaluate(config, WORKDIR)
assert again["metrics"] == results["metrics"]

# %% [markdown]
# ## Linear evaluation, the paper's protocol
#
# The probe above fits a logistic regression to fixed features. The SimCLR
# papers train a linear classifier on the frozen encoder with SGD and
# augmentation instead; `downstream.run` does that for `mode="linear"` on
# the run in `init_checkpoint`, taking model and data settings from its
# `run_config.json`. It writes its own run directory.

# %%
if LINEAR_EVAL_EPOCHS:
  linear_config = configlib.load_config(
    str(config_file),
    {
      **recipe,
      **OVERRIDES,
      "mode": "linear",
      "init_checkpoint": WORKDIR,
      "linear_eval.epochs": LINEAR_EVAL_EPOCHS,
    },
  )
  linear = downstream.run(linear_config, WORKDIR + "_linear")
  print(
    f"linear evaluation: top-1 {100 * linear['metrics']['linear_top1']:.2f}%"
  )
else:
  print("Skipped (LINEAR_EVAL_EPOCHS = 0).")

# %% [markdown]
# Next: [02_explore_representations](02_explore_representations.ipynb)
# loads this run, embeds a folder of images and looks at the
# representation; [03_scaling_experiments](03_scaling_experiments.ipynb)
# sweeps batch size and epochs.
