"""Stratified label subsets and the Shards built from them."""

import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from helpers import data_config
from simclr_jax.data import builtin
from simclr_jax.data import sources
from simclr_jax.data import subsets
from simclr_jax.errors import UserError

# Class sizes 200, 50, 7, 1 in a shuffled order.
LABELS = (
  np.random.default_rng(3)
  .permutation(np.repeat(np.arange(4), [200, 50, 7, 1]))
  .astype(np.int32)
)


def _class_counts(indices, labels=LABELS):
  return np.bincount(labels[indices], minlength=labels.max() + 1).tolist()


@pytest.mark.parametrize(
  "fraction, expected",
  [
    (0.1, [20, 5, 1, 1]),  # 0.7 rounds to 1; every class keeps one
    (0.3, [60, 15, 2, 1]),  # 2.1 -> 2, 0.3 -> at least 1
    (0.5, [100, 25, 4, 1]),  # 3.5 rounds half up
    (1.0, [200, 50, 7, 1]),
  ],
)
def test_per_class_counts(fraction, expected):
  indices = subsets.stratified_subset(LABELS, fraction, seed=0)
  assert _class_counts(indices) == expected
  assert np.all(np.diff(indices) > 0)  # sorted, no duplicates
  assert indices.dtype.kind == "i"


def test_same_seed_same_subset_other_seed_differs():
  a = subsets.stratified_subset(LABELS, 0.1, seed=7)
  b = subsets.stratified_subset(LABELS.copy(), 0.1, seed=7)
  c = subsets.stratified_subset(LABELS, 0.1, seed=8)
  np.testing.assert_array_equal(a, b)
  assert _class_counts(c) == _class_counts(a)
  assert not np.array_equal(a, c)


def test_subsets_are_nested_in_the_fraction():
  previous = np.array([], np.int64)
  for fraction in (0.01, 0.1, 0.25, 0.5, 0.9, 1.0):
    current = subsets.stratified_subset(LABELS, fraction, seed=1)
    assert set(previous) <= set(current), fraction
    previous = current
  np.testing.assert_array_equal(previous, np.arange(LABELS.size))


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, float("nan"), "0.1"])
def test_bad_fraction(fraction):
  with pytest.raises(UserError, match=r"fraction must be in \(0, 1\]"):
    subsets.stratified_subset(LABELS, fraction, seed=0)


def test_unlabelled_and_malformed_labels():
  with pytest.raises(UserError, match="2 of 5 examples have no label"):
    subsets.stratified_subset(np.array([0, -1, 1, -1, 0]), 0.5, seed=0)
  with pytest.raises(UserError, match="1-D integer"):
    subsets.stratified_subset(np.zeros((2, 3), np.int32), 0.5, seed=0)
  with pytest.raises(UserError, match="1-D integer"):
    subsets.stratified_subset(np.array([0.0, 1.0]), 0.5, seed=0)
  with pytest.raises(UserError, match="empty"):
    subsets.stratified_subset(np.array([], np.int32), 0.5, seed=0)


def _examples(shard):
  items = list(shard.dataset.as_numpy_iterator())
  return (
    np.stack([x["image"] for x in items]),
    np.array([x["label"] for x in items]),
  )


def test_builtin_subset_shard_holds_exactly_the_subset():
  cfg = data_config(source="builtin", image_size=8, builtin_train_examples=120)
  labels = subsets.split_labels(cfg, "train")
  all_images, all_labels = builtin.generate(
    120, 8, builtin.split_seed(cfg.builtin_seed, "train")
  )
  np.testing.assert_array_equal(labels, all_labels)
  indices = subsets.stratified_subset(labels, 0.2, seed=0)
  shard = subsets.load_subset_shard(cfg, 0.2, seed=0)
  images, got = _examples(shard)
  assert shard.num_examples == shard.max_shard_examples == indices.size
  # Same examples (as a set of (image, label) pairs), in a mixed order.
  want = {(all_images[i].tobytes(), int(all_labels[i])) for i in indices}
  assert {(im.tobytes(), int(l)) for im, l in zip(images, got)} == want
  assert not np.all(np.diff(got) >= 0)  # classes mixed, not sorted
  # Two processes split the subset between them.
  parts = [
    subsets.load_subset_shard(
      cfg, 0.2, seed=0, process_index=p, process_count=2
    )
    for p in range(2)
  ]
  assert [p.num_examples for p in parts] == [indices.size // 2] * 2
  labels_by_part = np.concatenate([_examples(p)[1] for p in parts])
  assert sorted(labels_by_part) == sorted(got)


def test_folder_subset_shard(tmp_path):
  """8 'a' images (red shades) and 4 'b' images (blue shades); half of each."""
  for cls, n, channel in (("a", 8, 0), ("b", 4, 2)):
    for i in range(n):
      color = [10, 10, 10]
      color[channel] = 100 + 10 * i
      os.makedirs(tmp_path / "train" / cls, exist_ok=True)
      Image.new("RGB", (6, 6), tuple(color)).save(
        tmp_path / "train" / cls / f"{i}.png"
      )
  cfg = data_config(
    source="folder",
    data_dir=str(tmp_path),
    image_size=6,
    eval_split="",
    cache=False,
  )
  labels = subsets.split_labels(cfg, "train")
  assert sorted(labels.tolist()) == [0] * 8 + [1] * 4
  shard = subsets.load_subset_shard(cfg, 0.5, seed=0)
  assert shard.num_examples == 6 and len(shard.files) == 6
  assert shard.reshuffled is not None  # not cached: reshuffles file names
  images, got = _examples(shard)
  assert sorted(got.tolist()) == [0, 0, 0, 0, 1, 1]
  # Each image's colour matches its class folder.
  dominant = images.reshape(6, -1, 3).mean(1).argmax(-1)
  np.testing.assert_array_equal(dominant, np.where(got == 0, 0, 2))
  assert len({im.tobytes() for im in images}) == 6
  cached = subsets.load_subset_shard(
    sources.DataConfig(**{**cfg.__dict__, "cache": True}), 0.5, seed=0
  )
  assert cached.reshuffled is None


def test_unlabelled_folder_is_refused(tmp_path):
  for i in range(3):
    Image.new("RGB", (4, 4), (i, i, i)).save(tmp_path / f"{i}.png")
  cfg = data_config(source="folder", data_dir=str(tmp_path), eval_split="")
  with pytest.raises(UserError, match="3 of 3 examples have no label"):
    subsets.load_subset_shard(cfg, 0.5, seed=0)


def test_bad_indices_are_refused():
  cfg = data_config(source="builtin", image_size=8, builtin_train_examples=20)
  for bad in ([0, 0], [20], [-1], []):
    with pytest.raises(UserError, match=r"distinct and in \[0, 20\)"):
      subsets.subset_shard(cfg, "train", np.array(bad, np.int64))


def test_tfds_subset_reads_the_selected_examples():
  cfg = data_config(source="tfds", name="cifar10", image_size=8, cache=False)
  with tfds.testing.mock_data(num_examples=30):
    labels = subsets.split_labels(cfg, "train")
    all_images, all_labels = _examples(sources.load_shard(cfg, "train"))
    indices = subsets.stratified_subset(labels, 0.3, seed=2)
    images, got = _examples(subsets.subset_shard(cfg, "train", indices))
  np.testing.assert_array_equal(labels, all_labels)
  assert images.shape == (indices.size, 8, 8, 3)
  want = {(all_images[i].tobytes(), int(all_labels[i])) for i in indices}
  assert {(im.tobytes(), int(l)) for im, l in zip(images, got)} == want


def test_official_imagenet_subsets_by_name(monkeypatch):
  assert (
    subsets.official_subset_name("imagenet2012", 0.01)
    == "imagenet2012_subset/1pct"
  )
  assert (
    subsets.official_subset_name("imagenet2012:5.1.0", 0.1)
    == "imagenet2012_subset/10pct"
  )
  assert subsets.official_subset_name("imagenet2012", 0.05) is None
  assert subsets.official_subset_name("cifar10", 0.01) is None
  seen = []
  monkeypatch.setattr(
    sources,
    "load_shard",
    lambda cfg, split, **kw: seen.append((cfg.name, split)),
  )
  cfg = data_config(source="tfds", name="imagenet2012", image_size=8)
  subsets.load_subset_shard(cfg, 0.01, seed=0)
  assert seen == [("imagenet2012_subset/1pct", "train")]
