"""Tests for the procedurally generated built-in dataset."""

import numpy as np
import pytest

from simclr_jax.data import builtin


def _uncached(n, size, seed):
  fn = builtin._generate_cached.__wrapped__  # pylint: disable=protected-access
  return fn(n, size, seed)


def test_shapes_and_dtypes():
  images, labels = builtin.generate(30, 16, seed=0)
  assert images.shape == (30, 16, 16, 3) and images.dtype == np.uint8
  assert labels.shape == (30,) and labels.dtype == np.int32
  assert labels.min() >= 0 and labels.max() < builtin.NUM_CLASSES
  assert len(builtin.CLASS_NAMES) == builtin.NUM_CLASSES == 10
  assert not images.flags.writeable  # cached arrays must not be mutated


def test_deterministic_by_seed():
  a_images, a_labels = _uncached(40, 16, 3)
  b_images, b_labels = _uncached(40, 16, 3)
  np.testing.assert_array_equal(a_images, b_images)
  np.testing.assert_array_equal(a_labels, b_labels)


def test_different_seeds_differ():
  a_images, a_labels = builtin.generate(40, 16, seed=1)
  b_images, b_labels = builtin.generate(40, 16, seed=2)
  assert not np.array_equal(a_images, b_images)
  assert not np.array_equal(a_labels, b_labels)


@pytest.mark.parametrize("n", [100, 105])
def test_balanced_classes(n):
  _, labels = builtin.generate(n, 8, seed=0)
  counts = np.bincount(labels, minlength=builtin.NUM_CLASSES)
  assert counts.max() - counts.min() <= 1


def test_train_and_eval_sets_differ():
  assert builtin.split_seed(0, "train") != builtin.split_seed(0, "test")
  assert builtin.split_seed(0, "train") != builtin.split_seed(1, "train")
  train, _ = builtin.generate(200, 16, builtin.split_seed(0, "train"))
  test, _ = builtin.generate(100, 16, builtin.split_seed(0, "test"))
  train_rows = {im.tobytes() for im in train}
  assert not any(im.tobytes() in train_rows for im in test)


def test_images_vary_in_colour_within_a_class():
  images, labels = builtin.generate(200, 16, seed=0)
  means = images[labels == 0].reshape(-1, 16 * 16, 3).mean(axis=1)
  assert means.std(axis=0).min() > 30  # colour is a nuisance, not a cue


def _knn_accuracy(train_x, train_y, test_x, test_y, k=20):
  def normalise(x):
    f = x.reshape(len(x), -1).astype(np.float32)
    return f / np.linalg.norm(f, axis=1, keepdims=True)

  sim = normalise(test_x) @ normalise(train_x).T
  nearest = np.argpartition(-sim, k, axis=1)[:, :k]
  votes = np.zeros((len(test_x), builtin.NUM_CLASSES))
  np.add.at(votes, (np.arange(len(test_x))[:, None], train_y[nearest]), 1)
  return float((votes.argmax(1) == test_y).mean())


def test_raw_pixel_knn_is_above_chance_but_far_from_solved():
  train = builtin.generate(3000, 32, builtin.split_seed(0, "train"))
  test = builtin.generate(1000, 32, builtin.split_seed(0, "test"))
  accuracy = _knn_accuracy(*train, *test)
  assert 0.13 < accuracy < 0.35, accuracy  # 0.194 at the time of writing


def test_export_folder_writes_the_split_as_class_folders(tmp_path):
  from PIL import Image

  paths = builtin.export_folder(
    str(tmp_path), split="test", num_examples=23, image_size=12, seed=4
  )
  images, labels = builtin.generate(23, 12, builtin.split_seed(4, "test"))
  assert len(paths) == 23 and paths == sorted(paths)
  on_disk = sorted(
    str(p.relative_to(tmp_path)).replace("\\", "/")
    for p in tmp_path.rglob("*")
    if p.is_file()
  )
  assert on_disk == paths  # nothing else written
  assert {p.name for p in tmp_path.iterdir()} == set(builtin.CLASS_NAMES)
  for path in paths:
    class_name, file_name = path.split("/")
    i = int(file_name.removesuffix(".png"))
    assert class_name == builtin.CLASS_NAMES[labels[i]]
    with Image.open(tmp_path / path) as image:
      np.testing.assert_array_equal(np.asarray(image), images[i])
  assert {int(p.split("/")[1][:-4]) for p in paths} == set(range(23))
  with pytest.raises(ValueError, match="'train' and 'test'"):
    builtin.export_folder(str(tmp_path), split="validation", num_examples=2)
