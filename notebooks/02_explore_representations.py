# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
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
# # Exploring the representations of a pretrained encoder
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/simclr-jax/simclr_jax/blob/main/notebooks/02_explore_representations.ipynb)
#
# Loads a finished pretraining run (by default the one
# [01_pretrain_on_tpu](01_pretrain_on_tpu.ipynb) made), embeds a folder of
# images with its frozen encoder, and looks at the result: a 2-D t-SNE map
# coloured by class, the nearest neighbours of a few images, and kNN
# accuracy per class.
#
# Any folder works; images in class sub-folders (`FOLDER/<class>/*.png`)
# get labels. Without one, the notebook writes a labelled folder from the
# run's own evaluation data: the built-in dataset offline, or CIFAR-10 from
# tfds.
#
# On Colab each notebook has its own runtime, so point `RUN_DIR` at the
# run directory notebook 01 left on Google Drive.

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
import shutil
import sys

import jax
import matplotlib.pyplot as plt
import numpy as np
import threadpoolctl
from IPython.display import Markdown, display
from PIL import Image
from sklearn.manifold import TSNE

from simclr_jax import embeddings, pretrained, tf_import
from simclr_jax.data import builtin
from simclr_jax.eval import knn

BACKEND = jax.devices()[0].platform  # "tpu", "gpu" or "cpu"
IN_COLAB = "google.colab" in sys.modules
print(
  f"JAX {jax.__version__}: {jax.device_count()} x "
  f"{jax.devices()[0].device_kind} ({BACKEND})"
)

# %% tags=["parameters"]
# Parameters. Defaults depend on the backend; CI replaces some of them in a
# cell it inserts right after this one.
# The pretraining run: notebook 01's WORKDIR.
if IN_COLAB:
  RUN_DIR = "/content/drive/MyDrive/simclr_jax/runs/nb01"
else:
  RUN_DIR = "runs/nb01"
IMAGES_DIR = ""  # a folder of images; "" = export the run's eval images
EXPORT_DIR = "data/nb02_images"  # where those go (emptied first)
NUM_IMAGES = 2000 if BACKEND == "cpu" else 5000  # exported images
TSNE_POINTS = 1000 if BACKEND == "cpu" else 3000  # points on the map
NUM_QUERIES = 6  # images whose nearest neighbours are shown
NEIGHBOURS = 8
KNN_K = 20  # k of the per-class kNN accuracy
# An official SimCLR TF checkpoint to compare with (docs/pretrained.md): its
# folder or prefix; "" skips that section. On Colab the cell after this one
# downloads SimCLRv2's ResNet-50 1x (no selective kernels) there.
TF_CHECKPOINT = "/content/r50_1x_sk0" if IN_COLAB else ""
CONVERTED_DIR = "runs/official"  # its converted run directory

# %% tags=["colab"]
# Colab only: mount Google Drive when the run directory is on it, and
# download the official checkpoint (about 300 MB; gsutil is preinstalled).
if IN_COLAB and RUN_DIR.startswith("/content/drive"):
  from google.colab import drive

  drive.mount("/content/drive")
if IN_COLAB and TF_CHECKPOINT and not os.path.exists(TF_CHECKPOINT):
  os.makedirs(TF_CHECKPOINT)
  subprocess.run(
    ["gsutil", "-m", "cp", "-r"]
    + ["gs://simclr-checkpoints/simclrv2/pretrained/r50_1x_sk0/*"]
    + [TF_CHECKPOINT],
    check=True,
  )

# %% [markdown]
# ## The run
#
# `pretrained.load_pretrained` reads the run's `run_config.json` and its
# latest checkpoint (nothing in the run directory is written).

# %%
run = pretrained.load_pretrained(RUN_DIR)
data_cfg = run.config.data
dataset = " ".join(filter(None, [data_cfg.source, data_cfg.name]))
print(
  f"{RUN_DIR}: ResNet-{run.config.model.depth} "
  f"x{run.config.model.width_multiplier} at step {run.step}, trained on "
  f"{dataset} at {run.image_size} px"
)

# %% [markdown]
# ## A folder of images
#
# Without `IMAGES_DIR`, a labelled folder of the run's evaluation images is
# written first, at the size the run's data pipeline produced them:
# `builtin.export_folder` for the built-in dataset, a few lines of tfds for
# CIFAR-10, and the test split folder itself for an image-folder run.

# %%
host_size = data_cfg.host_size or data_cfg.image_size
image_dir = IMAGES_DIR or EXPORT_DIR
if not IMAGES_DIR and data_cfg.source == "folder":  # the run's test split
  image_dir = os.path.join(data_cfg.data_dir, data_cfg.eval_split)
elif not IMAGES_DIR:
  shutil.rmtree(EXPORT_DIR, ignore_errors=True)
  if data_cfg.source == "builtin":
    builtin.export_folder(
      EXPORT_DIR,
      split=data_cfg.eval_split or "test",
      num_examples=min(NUM_IMAGES, data_cfg.builtin_eval_examples),
      image_size=host_size,
      seed=data_cfg.builtin_seed,
    )
  else:  # tfds
    import tensorflow_datasets as tfds

    ds, info = tfds.load(
      data_cfg.name,
      split=f"{data_cfg.eval_split}[:{NUM_IMAGES}]",
      data_dir=data_cfg.data_dir or None,
      with_info=True,
    )
    names = info.features["label"].names
    for i, example in enumerate(tfds.as_numpy(ds)):
      folder = os.path.join(EXPORT_DIR, names[example["label"]])
      os.makedirs(folder, exist_ok=True)
      Image.fromarray(example["image"]).save(f"{folder}/{i:05d}.png")
print(f"images from {image_dir}")

# %% [markdown]
# `embeddings.embed_images` decodes every image under the folder like
# training data, runs the frozen encoder (BatchNorm in inference mode) and
# returns the representations, the file names and, for class sub-folders,
# the labels.

# %%
emb = embeddings.embed_images(run, image_dir)
features = emb.representation
assert emb.labels is not None, "the folder has no class sub-folders"
labels, class_names = emb.labels, emb.class_names
print(
  f"{len(emb.filenames)} images, {len(class_names)} classes, "
  f"{features.shape[1]}-d representation; {len(emb.skipped)} skipped"
)


def load_image(i):
  with Image.open(os.path.join(image_dir, emb.filenames[i])) as image:
    return np.asarray(image.convert("RGB"))


# %% [markdown]
# ## A 2-D map
#
# t-SNE (scikit-learn) of the L2-normalised representations, the geometry
# the kNN evaluation uses, for a random subset of the images.

# %%
rng = np.random.default_rng(0)
subset = rng.permutation(len(features))[:TSNE_POINTS]
unit = features / np.linalg.norm(features, axis=1, keepdims=True)
tsne = TSNE(
  n_components=2,
  perplexity=min(30.0, (len(subset) - 1) / 3),
  init="pca",
  random_state=0,
)
# One OpenMP thread: sklearn's spinning threads can stall in a Jupyter
# kernel on a busy 2-core machine (13 s instead of 0.4 s for 100 points).
with threadpoolctl.threadpool_limits(1, user_api="openmp"):
  xy = tsne.fit_transform(unit[subset])
fig, ax = plt.subplots(figsize=(7, 6))
cmap = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
for c, name in enumerate(class_names):
  pick = labels[subset] == c
  ax.scatter(*xy[pick].T, s=8, color=cmap(c % cmap.N), label=name)
ax.set(xticks=[], yticks=[], title=f"t-SNE of {len(subset)} representations")
ax.legend(markerscale=2, fontsize=8, loc="center left", bbox_to_anchor=(1, 0.5))
plt.show()

# %% [markdown]
# ## Nearest neighbours
#
# `knn.knn_search` finds each query's most similar images (cosine
# similarity of the representations, the image itself excluded). A title
# in green shares the query's class.

# %%
queries = rng.choice(len(features), NUM_QUERIES, replace=False)
sims, nearest = knn.knn_search(features, features[queries], k=NEIGHBOURS + 1)
fig, axes = plt.subplots(
  NUM_QUERIES,
  NEIGHBOURS + 1,
  figsize=(1.3 * (NEIGHBOURS + 1), 1.45 * NUM_QUERIES),
  squeeze=False,
)
for row, q, q_sims, q_nearest in zip(axes, queries, sims, nearest):
  others = [(s, j) for s, j in zip(q_sims, q_nearest) if j != q]
  cells = [(None, q)] + others[:NEIGHBOURS]
  for ax, (s, j) in zip(row, cells):
    ax.imshow(load_image(j), interpolation="nearest")
    ax.set(xticks=[], yticks=[])
    if s is None:
      ax.set_title(f"query: {class_names[labels[j]]}", fontsize=8)
    else:
      same = labels[j] == labels[q]
      ax.set_title(
        f"{class_names[labels[j]]} {s:.2f}",
        fontsize=7,
        color="green" if same else "red",
      )
  for ax in row[len(cells) :]:
    ax.axis("off")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## kNN accuracy per class
#
# Half of each class is the labelled bank, the other half the queries;
# `knn.knn_predict` votes among the `KNN_K` nearest bank images, weighted
# by similarity (the library's kNN evaluation).

# %%
bank = np.zeros(len(labels), bool)
for c in range(len(class_names)):
  members = np.flatnonzero(labels == c)
  bank[rng.permutation(members)[: len(members) // 2]] = True


def knn_top1_predictions(feats):
  """The top-1 kNN class of every query, with the bank above."""
  ranked = knn.knn_predict(
    feats[bank],
    labels[bank],
    feats[~bank],
    num_classes=len(class_names),
    ks=(KNN_K,),
  )
  return next(iter(ranked.values()))[:, 0]


predicted = knn_top1_predictions(features)
truth = labels[~bank]
per_class = [
  float(np.mean(predicted[truth == c] == c)) if np.any(truth == c) else np.nan
  for c in range(len(class_names))
]
overall = float(np.mean(predicted == truth))

rows = ["| class | queries | kNN top-1 |", "| --- | --- | --- |"]
for c, name in enumerate(class_names):
  rows.append(f"| {name} | {np.sum(truth == c)} | {100 * per_class[c]:.1f}% |")
rows.append(f"| **all** | {len(truth)} | **{100 * overall:.1f}%** |")
display(Markdown("\n".join(rows)))

confusion = np.zeros((len(class_names),) * 2)
np.add.at(confusion, (truth, predicted), 1)
confusion /= confusion.sum(axis=1, keepdims=True)
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.5))
ax1.barh(class_names, [100 * a for a in per_class])
ax1.axvline(
  100 * overall, color="k", ls="--", label=f"all {100 * overall:.1f}%"
)
ax1.axvline(100 / len(class_names), color="gray", ls=":", label="chance")
ax1.invert_yaxis()
ax1.set(xlabel="kNN top-1 (%)", title=f"per class (k={KNN_K})")
ax1.legend(fontsize=8)
ax2.imshow(confusion, cmap="Blues", vmin=0)
ticks = range(len(class_names))
ax2.set_xticks(ticks, class_names, rotation=90, fontsize=8)
ax2.set_yticks(ticks, class_names, fontsize=8)
ax2.set(xlabel="predicted", ylabel="true", title="confusion (row-normalised)")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## An official SimCLR checkpoint
#
# `tf_import.convert_checkpoint` turns a checkpoint released by the SimCLR
# authors (TF1 `model.ckpt-N` or TF2 `ckpt-N`) into an ordinary run
# directory, whose encoder then embeds the same folder. The same as
# `python -m simclr_jax.import_tf --checkpoint TF_CHECKPOINT --out
# CONVERTED_DIR`. Its kNN accuracy uses the bank and queries above.

# %%
if TF_CHECKPOINT:
  if not os.path.exists(CONVERTED_DIR):
    tf_import.convert_checkpoint(TF_CHECKPOINT, CONVERTED_DIR)
  official = pretrained.load_pretrained(CONVERTED_DIR)
  arch = official.config.model
  official_emb = embeddings.embed_images(official, image_dir)
  assert list(official_emb.filenames) == list(emb.filenames)

  def knn_top1(feats):
    return float(np.mean(knn_top1_predictions(feats) == truth))

  rows = [
    "| encoder | representation | kNN top-1 |",
    "| --- | --- | --- |",
    f"| {RUN_DIR} | {features.shape[1]}-d | {100 * knn_top1(features):.1f}% |",
    f"| official ResNet-{arch.depth} {arch.width_multiplier:g}x "
    f"(sk_ratio {arch.sk_ratio:g}) | {official_emb.representation.shape[1]}-d "
    f"| {100 * knn_top1(official_emb.representation):.1f}% |",
  ]
  display(Markdown("\n".join(rows)))
else:
  print("TF_CHECKPOINT is empty: set it to a downloaded official checkpoint.")
