"""Tests for the tfds, image-folder and built-in sources."""

import dataclasses
import itertools
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from helpers import data_config
from simclr_jax import data
from simclr_jax import defaults
from simclr_jax.data import sources
from simclr_jax.errors import UserError

RED, BLUE, GREEN = (230, 20, 20), (20, 20, 230), (20, 200, 20)


def _save(path, mode, size, color, fmt=None):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.new(mode, size, color).save(path, format=fmt)


def _all(cfg, split, batch=4):
  batches = list(data.eval_batches(cfg, split, global_batch_size=batch))
  mask = np.concatenate([b["mask"] for b in batches])
  return (
    np.concatenate([b["image"] for b in batches])[mask],
    np.concatenate([b["label"] for b in batches])[mask],
  )


@pytest.fixture(name="folder")
def _folder(tmp_path):
  """root/{train,test}/{cat,dog}/ with mixed formats, modes and sizes."""
  root = tmp_path / "images"
  _save(f"{root}/train/cat/a.jpg", "RGB", (40, 30), RED)
  _save(f"{root}/train/cat/b.PNG", "L", (20, 20), 128, fmt="PNG")
  _save(f"{root}/train/dog/c.png", "RGBA", (64, 48), BLUE + (10,))
  _save(f"{root}/train/dog/nested/d.jpeg", "RGB", (16, 16), GREEN)
  _save(f"{root}/train/dog/e.bmp", "RGB", (17, 33), GREEN)
  (root / "train" / "dog" / "notes.txt").write_text("not an image")
  _save(f"{root}/train/dog/.hidden.png", "RGB", (8, 8), RED)
  _save(f"{root}/test/cat/f.gif", "P", (24, 24), 3)
  _save(f"{root}/test/dog/g.jpg", "RGB", (50, 50), BLUE)
  return str(root)


def test_folder_info(folder):
  info = data.dataset_info(data_config(source="folder", data_dir=folder))
  assert info == data.DatasetInfo(
    num_train=5, num_eval=2, num_classes=2, class_names=("cat", "dog")
  )


def _pop_match(images, labels, label, color, atol):
  """Removes and returns the one example with this label and mean colour."""
  for i, (image, lab) in enumerate(zip(images, labels)):
    if lab == label and np.allclose(image.mean((0, 1)), color, atol=atol):
      return images.pop(i), labels.pop(i)
  raise AssertionError(f"no image with label {label} and colour {color}")


def test_folder_images_labels_and_sizes(folder):
  cfg = data_config(source="folder", data_dir=folder, image_size=16)
  images, labels = _all(cfg, "train")
  assert images.shape == (5, 16, 16, 3) and images.dtype == np.uint8
  assert labels.dtype == np.int32
  images, labels = list(images), list(labels)
  _pop_match(images, labels, 0, RED, atol=8)  # a.jpg
  gray, _ = _pop_match(images, labels, 0, (128,) * 3, atol=0)
  assert np.all(gray == 128)  # grayscale -> RGB
  _pop_match(images, labels, 1, BLUE, atol=1)  # RGBA: alpha dropped
  _pop_match(images, labels, 1, GREEN, atol=8)  # nested/d.jpeg
  _pop_match(images, labels, 1, GREEN, atol=1)  # e.bmp
  images, labels = _all(cfg, "test")
  assert images.shape == (2, 16, 16, 3)
  np.testing.assert_array_equal(sorted(labels), [0, 1])


def test_folder_training_reshuffles_files_when_not_cached(folder):
  cfg = data_config(source="folder", data_dir=folder, image_size=8, cache=False)
  epochs = list(
    itertools.islice(data.train_batches(cfg, global_batch_size=5, seed=0), 4)
  )
  keys = [[im.tobytes() for im in b["image"]] for b in epochs]
  assert all(sorted(k) == sorted(keys[0]) for k in keys)  # every file, once
  assert len({tuple(k) for k in keys}) > 1  # new order


def test_folder_resize_keeps_aspect_and_centre_crops(tmp_path):
  # 64x32 image: left half red, right half blue, a green strip at each end
  # that the centre crop must cut off.
  pixels = np.zeros((32, 64, 3), np.uint8)
  pixels[:, :32], pixels[:, 32:] = RED, BLUE
  pixels[:, :8] = pixels[:, 56:] = GREEN
  os.makedirs(tmp_path / "train")
  Image.fromarray(pixels).save(tmp_path / "train" / "x.png")
  cfg = data_config(
    source="folder", data_dir=str(tmp_path), image_size=16, eval_split=""
  )
  (image,), (label,) = _all(cfg, "train")
  assert label == -1
  np.testing.assert_allclose(image[:, 1:6].mean((0, 1)), RED, atol=2)
  np.testing.assert_allclose(image[:, 10:15].mean((0, 1)), BLUE, atol=2)


def test_unlabelled_flat_folder(tmp_path):
  for i in range(3):
    _save(f"{tmp_path}/img{i}.jpg", "RGB", (20 + i, 20), RED)
  cfg = data_config(source="folder", data_dir=str(tmp_path), image_size=8)
  info = data.dataset_info(cfg)
  assert info == data.DatasetInfo(3, 0, 0, ())  # root itself is the train set
  images, labels = _all(cfg, "train")
  assert images.shape == (3, 8, 8, 3)
  np.testing.assert_array_equal(labels, [-1, -1, -1])
  batch = next(data.train_batches(cfg, global_batch_size=2, seed=0))
  np.testing.assert_array_equal(batch["label"], [-1, -1])


def test_flat_folder_with_class_folders(tmp_path):
  _save(f"{tmp_path}/b_class/x.png", "RGB", (8, 8), RED)
  _save(f"{tmp_path}/a_class/y.png", "RGB", (8, 8), RED)
  info = data.dataset_info(data_config(source="folder", data_dir=str(tmp_path)))
  assert info.class_names == ("a_class", "b_class") and info.num_eval == 0


def test_flat_folder_holds_out_a_tenth_of_each_class(tmp_path):
  """Without train/: eval = the lowest-CRC tenth of each class (at least one
  of 2+ images), train = the rest and the unlabelled images; chosen by file
  name, so a copy elsewhere holds out the same files."""
  for n, name in ((25, "cat"), (3, "dog"), (1, "emu")):
    for i in range(n):
      _save(f"{tmp_path}/a/{name}/{i:02d}.png", "RGB", (8, 8), RED)
  _save(f"{tmp_path}/a/loose.png", "RGB", (8, 8), RED)
  cfg = data_config(source="folder", data_dir=f"{tmp_path}/a", eval_split="x")
  info = data.dataset_info(cfg)
  assert info == data.DatasetInfo(26, 4, 3, ("cat", "dog", "emu"))
  src = sources.get("folder")

  def names(cfg, split):
    files = src.shard(cfg, split, 0, 1).files
    return {os.path.relpath(p, cfg.data_dir) for p in files}

  train, held = names(cfg, "train"), names(cfg, "x")
  assert len(train | held) == 30 and not train & held
  assert {"loose.png", "emu/00.png"} <= train
  np.testing.assert_array_equal(sorted(src.labels(cfg, "x")), [0, 0, 0, 1])
  images, labels = _all(cfg, "x")
  assert images.shape == (4, 32, 32, 3) and sorted(labels) == [0, 0, 0, 1]
  os.rename(f"{tmp_path}/a", f"{tmp_path}/b")
  moved = dataclasses.replace(cfg, data_dir=f"{tmp_path}/b")
  assert names(moved, "x") == held
  everything = data.dataset_info(dataclasses.replace(moved, eval_split=""))
  assert (everything.num_train, everything.num_eval) == (30, 0)


def _raises(match, fn, *args, **kwargs):
  with pytest.raises(UserError, match=match):
    fn(*args, **kwargs)


def test_folder_errors(folder, tmp_path):
  _raises(
    "does not exist",
    data.dataset_info,
    data_config(source="folder", data_dir=str(tmp_path / "missing")),
  )
  os.makedirs(tmp_path / "empty" / "train")
  _raises(
    "no images",
    data.dataset_info,
    data_config(source="folder", data_dir=str(tmp_path / "empty")),
  )
  cfg = data_config(source="folder", data_dir=folder)
  _raises(
    r"no split 'val' \(available: test, train\)",
    data.eval_batches,
    cfg,
    "val",
    global_batch_size=2,
  )
  _raises(
    "eval_split=''",
    data.dataset_info,
    data_config(source="folder", data_dir=folder, eval_split="validation"),
  )
  _raises(
    "no 'training' folder",
    data.dataset_info,
    data_config(source="folder", data_dir=folder, train_split="training"),
  )
  _raises("needs data_dir", data.dataset_info, data_config(source="folder"))
  _raises("unknown data source", data.dataset_info, data_config(source="s3"))


def test_corrupt_file_is_skipped_in_training_and_named_up_front(tmp_path):
  """More in test_data_unreadable.py."""
  _save(f"{tmp_path}/train/a/good.png", "RGB", (8, 8), RED)
  (tmp_path / "train" / "a" / "broken.jpg").write_bytes(b"\xff\xd8garbage")
  cfg = data_config(
    source="folder", data_dir=str(tmp_path), eval_split="", image_size=8
  )
  _raises(r"1 of 2 image files.*broken\.jpg", data.dataset_info, cfg)
  batches = data.train_batches(cfg, global_batch_size=2, seed=0)
  for epoch in range(1, 3):  # the good image fills the broken one's place
    batch = next(batches)
    np.testing.assert_array_equal(batch["image"], batch["image"][::-1])
    assert batches.unreadable_skipped == epoch
  images, _ = _all(cfg, "train")
  assert len(images) == 1


def test_cached_folder_serves_train_and_eval_passes(folder):
  cfg = data_config(source="folder", data_dir=folder, image_size=8)
  train = data.train_batches(cfg, global_batch_size=2, seed=0)
  first = next(train)
  images, _ = _all(cfg, "train")  # while the train pass is half done
  again, _ = _all(cfg, "train")
  np.testing.assert_array_equal(images, again)
  for _ in range(10):
    batch = next(train)
  assert first["image"].shape == batch["image"].shape == (2, 8, 8, 3)


# ------------------------------------------------------------------ tfds


@pytest.fixture(name="tfds_dir")
def _tfds_dir(tmp_path):
  """Metadata of a 'prepared' cifar10 (24 train, 10 test) for mock_data.

  tfds 4.9.10 ships no mock metadata, so without this the mocked builder has
  no splits and reports itself as not prepared.
  """
  builder = tfds.builder("cifar10", data_dir=str(tmp_path))
  os.makedirs(builder.data_dir)
  template = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
  builder.info.set_splits(
    tfds.core.SplitDict(
      [
        tfds.core.SplitInfo(
          name=name,
          shard_lengths=[n],
          num_bytes=0,
          filename_template=tfds.core.ShardedFileTemplate(
            data_dir=builder.data_dir,
            template=template,
            dataset_name="cifar10",
            split=name,
            filetype_suffix="tfrecord",
          ),
        )
        for name, n in (("train", 24), ("test", 10))
      ]
    )
  )
  builder.info.write_to_directory(builder.data_dir)
  return str(tmp_path)


def test_tfds_with_mock_data(tfds_dir):
  cfg = data_config(
    source="tfds", name="cifar10", data_dir=tfds_dir, image_size=16
  )
  with tfds.testing.mock_data(num_examples=24, data_dir=tfds_dir):
    info = data.dataset_info(cfg)
    assert (info.num_train, info.num_eval, info.num_classes) == (24, 10, 10)
    # cifar10 reads its label names at generation time; unprepared: "0".."9".
    assert len(info.class_names) == 10
    images, labels = _all(cfg, "train", batch=8)
    batch = next(data.train_batches(cfg, global_batch_size=8, seed=0))
  assert images.shape == (24, 16, 16, 3) and images.dtype == np.uint8
  assert labels.dtype == np.int32 and 0 <= labels.min() <= labels.max() < 10
  assert batch["image"].shape == (8, 16, 16, 3)


def test_tfds_with_plain_mock_data():
  # Without metadata the mocked builder knows no split sizes: they are
  # counted, and any split name is accepted.
  cfg = data_config(source="tfds", name="cifar10", image_size=8)
  with tfds.testing.mock_data(num_examples=12):
    info = data.dataset_info(cfg)
    images, labels = _all(cfg, "test", batch=8)
  assert (info.num_train, info.num_eval, info.num_classes) == (12, 12, 10)
  assert images.shape == (12, 8, 8, 3) and labels.shape == (12,)


def test_tfds_unknown_split(tfds_dir):
  cfg = data_config(
    source="tfds", name="cifar10", data_dir=tfds_dir, eval_split="validation"
  )
  with tfds.testing.mock_data(num_examples=24, data_dir=tfds_dir):
    _raises("available splits: train, test", data.dataset_info, cfg)


def test_tfds_unknown_name_suggests_close_matches():
  cfg = data_config(source="tfds", name="cifar_10")
  _raises("did you mean cifar10", data.dataset_info, cfg)


def test_tfds_not_prepared_never_downloads(tmp_path):
  cfg = data_config(source="tfds", name="mnist", data_dir=str(tmp_path))
  _raises("not prepared.*tfds build mnist", data.dataset_info, cfg)


def test_builtin_info_and_unknown_split():
  cfg = data_config(builtin_train_examples=50, builtin_eval_examples=20)
  info = data.dataset_info(cfg)
  assert (info.num_train, info.num_eval, info.num_classes) == (50, 20, 10)
  assert data.dataset_info(data_config(eval_split="")).num_eval == 0
  _raises(
    "no split 'validation'",
    data.dataset_info,
    data_config(eval_split="validation"),
  )


def test_host_size_sets_the_squares_every_source_yields(folder, tmp_path):
  """data.host_size, not image_size, is the side of the host's squares, for
  train and eval batches of folder and builtin data; 0 means image_size."""
  for cfg in (
    data_config(source="folder", data_dir=folder, image_size=8, host_size=24),
    data_config(
      image_size=8,
      host_size=24,
      builtin_train_examples=4,
      builtin_eval_examples=3,
    ),
  ):
    assert cfg.host_image_size == 24
    images, _ = _all(cfg, cfg.eval_split)
    assert images.shape[1:] == (24, 24, 3)
    train = next(data.train_batches(cfg, global_batch_size=4, seed=0))
    assert train["image"].shape == (4, 24, 24, 3)
  assert data_config(image_size=8).host_image_size == 8


def test_host_size_keeps_the_resolution_that_image_size_would_lose(tmp_path):
  """A 64 px checkerboard of 4 px cells survives at host size 32 but is
  averaged away at 8 px: the host square carries the larger image."""
  cells = (np.indices((64, 64)).sum(0) // 4 % 2 * 255).astype(np.uint8)
  path = tmp_path / "img" / "train" / "a" / "x.png"
  _save(str(path), "L", (64, 64), 0)
  Image.fromarray(cells).save(path)
  big = data_config(
    source="folder",
    data_dir=str(tmp_path / "img"),
    image_size=8,
    host_size=32,
    eval_split="",
  )
  small = dataclasses.replace(big, host_size=0)
  (image_big,), _ = _all(big, "train", batch=1)
  (image_small,), _ = _all(small, "train", batch=1)
  assert image_big.shape == (32, 32, 3) and image_small.shape == (8, 8, 3)
  # Measured: std 73.9 at 32 px, 0.39 at 8 px (full contrast: 127.5).
  assert image_big.std() > 50 > 5 > image_small.std()


def test_host_size_below_image_size_is_refused():
  _raises(
    "host_size=8 is smaller than image_size=16",
    data.dataset_info,
    data_config(image_size=16, host_size=8),
  )


# ------------------------------------------------ defaults and registry


def test_data_config_defaults_are_the_base_config():
  """One definition: base_config().data is built from DataConfig()."""
  base = defaults.base_config().data.to_dict()
  assert base == dataclasses.asdict(data.DataConfig())
  assert (base["source"], base["name"], base["image_size"]) == (
    "tfds",
    "imagenet2012",
    224,
  )
  assert (base["eval_split"], base["cache"]) == ("validation", False)


def test_sources_are_registered_by_name():
  assert sources.SOURCES == ("builtin", "tfds", "folder")
  for name in sources.SOURCES:
    assert sources.get(name).name == name
  assert sources.get("builtin").in_memory
  assert not sources.get("folder").in_memory
  _raises(
    r"unknown data source 's3'; use one of builtin, tfds, folder",
    sources.get,
    "s3",
  )
