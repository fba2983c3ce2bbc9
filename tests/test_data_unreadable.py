"""Unreadable images in a folder dataset: skipped and counted in training,
left out of evaluation, and refused up front when there are too many."""

import io
import itertools
import os

import numpy as np
import pytest
from PIL import Image

from helpers import assert_one_line_error
from helpers import data_config
from helpers import run_cli
from simclr_jax import data
from simclr_jax.data.sources import readable
from simclr_jax.errors import UserError

BAD = ("a/empty.jpg", "b/random.jpg", "c/truncated.jpg")


def _color(i):
  return (10 + 7 * i, 250 - 7 * i, (37 * i) % 256)


def _jpeg_bytes():
  pixels = np.random.default_rng(1).integers(0, 255, (64, 64, 3), np.uint8)
  out = io.BytesIO()
  Image.fromarray(pixels).save(out, format="JPEG")
  return out.getvalue()


def _write_bad(split_dir, names=BAD):
  """An empty file, random bytes and a truncated JPEG, all named .jpg."""
  contents = {
    "empty": b"",
    "random": np.random.default_rng(0).bytes(500),
    "truncated": _jpeg_bytes()[:400],
  }
  for name in names:
    path = split_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    kind = os.path.splitext(os.path.basename(name))[0]
    path.write_bytes(contents[kind])


def _folder(root, num_good=30, bad=BAD):
  """root/train/{a,b,c}/: `num_good` 8x8 PNGs of distinct colours spread
  over three classes, plus the `bad` files; returns the good images."""
  good = set()
  for i in range(num_good):
    path = root / "train" / "abc"[i % 3] / f"{i:02d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (8, 8), _color(i))
    image.save(path)
    good.add(np.asarray(image).tobytes())
  _write_bad(root / "train", bad)
  return good


def _cfg(root, **kwargs):
  """A folder config at 8 px with no eval split; 20% may be unreadable."""
  kwargs = {"max_unreadable_fraction": 0.2, **kwargs}
  return data_config(
    source="folder", data_dir=str(root), eval_split="", image_size=8, **kwargs
  )


@pytest.fixture(name="mixed")
def _mixed(tmp_path):
  """(root, good images) with 30 good and 3 unreadable files."""
  root = tmp_path / "mixed"
  return root, _folder(root)


@pytest.mark.parametrize("cache", [False, True])
def test_training_skips_and_counts_unreadable_files(mixed, cache):
  """33 files, batches of 11: each epoch is 3 full batches holding all 30
  readable images and 3 repeats of readable ones in the places of the
  unreadable files, which the iterator counts (3 per epoch)."""
  root, good = mixed
  it = data.train_batches(_cfg(root, cache=cache), global_batch_size=11, seed=0)
  assert it.unreadable_skipped == 0
  epochs, counts = [], []
  for batch in itertools.islice(it, 9):  # three epochs
    assert set(batch) == {"image", "label"}
    assert batch["image"].shape == (11, 8, 8, 3)
    epochs.append([im.tobytes() for im in batch["image"]])
    counts.append(it.unreadable_skipped)
  assert counts == [0, 0, 3, 3, 3, 6, 6, 6, 9]
  for e in range(3):
    keys = sum(epochs[3 * e : 3 * e + 3], [])
    assert set(keys) <= good  # nothing of an unreadable file
    assert set(keys) == good and len(keys) == 33
  assert epochs[:3] != epochs[3:6]  # reshuffled
  again = data.train_batches(
    _cfg(root, cache=cache), global_batch_size=11, seed=0
  )
  first = [next(again)["image"].tobytes() for _ in range(9)]
  assert first == [b"".join(keys) for keys in epochs]  # deterministic


@pytest.mark.parametrize(
  "start_step, num_shards", [(1, 1), (3, 1), (4, 1), (7, 1), (5, 2)]
)
def test_resumed_stream_is_the_tail_of_the_uninterrupted_one(
  mixed, start_step, num_shards
):
  """Batches of 8 over 33 files straddle epochs and their filled places;
  resuming at any step gives the same batches, and the resumed count is
  the uninterrupted one minus what the skipped batches held."""
  root, _ = mixed
  cfg = _cfg(root, num_shards=num_shards)
  full = data.train_batches(cfg, global_batch_size=8, seed=3)
  reference, counts = [], []
  for batch in itertools.islice(full, start_step + 6):
    reference.append(batch)
    counts.append(full.unreadable_skipped)
  resumed = data.train_batches(
    cfg, global_batch_size=8, seed=3, start_step=start_step
  )
  for i, y in enumerate(itertools.islice(resumed, 6)):
    x = reference[start_step + i]
    np.testing.assert_array_equal(x["image"], y["image"])
    np.testing.assert_array_equal(x["label"], y["label"])
    assert resumed.unreadable_skipped == (
      counts[start_step + i] - counts[start_step - 1]
    )
  assert counts[-1] > 0


def test_eval_leaves_unreadable_files_out_and_masks_real_images(mixed):
  root, good = mixed
  it = data.eval_batches(_cfg(root), "train", global_batch_size=8)
  batches = list(it)
  assert len(batches) == 5  # ceil(33 / 8): the file count sets the padding
  mask = np.concatenate([b["mask"] for b in batches])
  images = np.concatenate([b["image"] for b in batches])[mask]
  labels = np.concatenate([b["label"] for b in batches])
  assert mask.sum() == 30 and {im.tobytes() for im in images} == good
  assert (labels[mask] >= 0).all() and (labels[~mask] == -1).all()
  assert it.unreadable_skipped == 3


def test_unreadable_paths_are_skipped(tmp_path):
  """A dangling link, and (when not root) a file without read permission."""
  root = tmp_path / "perm"
  good = _folder(root, num_good=6, bad=())
  os.symlink(root / "nowhere", root / "train" / "a" / "link.jpg")
  locked = root / "train" / "b" / "locked.png"
  Image.new("RGB", (8, 8), (1, 2, 3)).save(locked)
  os.chmod(locked, 0)
  expected = 1 if os.geteuid() == 0 else 2  # root reads any file
  if expected == 1:
    good.add(np.asarray(Image.new("RGB", (8, 8), (1, 2, 3))).tobytes())
  cfg = _cfg(root, max_unreadable_fraction=0.5)
  data.dataset_info(cfg)
  it = data.train_batches(cfg, global_batch_size=8, seed=0)
  batch = next(it)
  assert {im.tobytes() for im in batch["image"]} == good
  assert it.unreadable_skipped == expected


def test_all_unreadable_folder_is_refused_by_info(tmp_path):
  root = tmp_path / "bad"
  _write_bad(root / "train")
  for fraction in (0.01, 1.0):  # even when any fraction is allowed
    with pytest.raises(UserError) as e:
      data.dataset_info(_cfg(root, max_unreadable_fraction=fraction))
    message = str(e.value)
    assert "3 of 3 image files checked in split 'train'" in message
    assert "could not be decoded" in message and "\n" not in message
    for name in BAD:
      assert str(root / "train" / name) in message
    assert "Input is empty" in message  # the reason, per file
    assert "Delete or replace the unreadable files" in message


def test_max_unreadable_fraction_decides(mixed):
  root, _ = mixed
  with pytest.raises(UserError) as e:
    data.dataset_info(_cfg(root, max_unreadable_fraction=0.01))
  message = str(e.value)
  assert "3 of 33 image files" in message and "(all of them)" in message
  assert "max_unreadable_fraction=0.01" in message
  assert "raise data.max_unreadable_fraction" in message
  assert message.count(str(root)) == 4  # the split, then 3 bad files
  info = data.dataset_info(_cfg(root, max_unreadable_fraction=0.2))
  assert (info.num_train, info.num_classes) == (33, 3)
  with pytest.raises(UserError, match=r"in \[0, 1\]"):
    data.dataset_info(_cfg(root, max_unreadable_fraction=1.5))


def test_the_default_passes_one_bad_file_in_ten_thousand(tmp_path):
  """The default 1% on a fixed sample of 256: a bad file or two in the
  sample pass (even one bad file in 100 would), three refuse."""
  assert data.DataConfig().max_unreadable_fraction == 0.01
  fraction = data.DataConfig().max_unreadable_fraction
  _folder(tmp_path, num_good=1, bad=("a/empty.jpg",))
  good, bad = (
    str(tmp_path / "train/a/00.png"),
    str(tmp_path / "train/a/empty.jpg"),
  )
  paths = [good] * 10_000
  paths[1234] = bad
  readable.check_sample(tuple(paths), "a folder", fraction)
  picked = readable.sample(tuple(f"{i}" for i in range(10_000)))
  assert len(picked) == 256 == len(set(picked))
  assert picked == readable.sample(tuple(f"{i}" for i in range(10_000)))
  for k, fails in ((2, False), (3, True)):
    paths = [good] * 10_000
    for i in picked[:k]:
      paths[int(i)] = bad
    if fails:
      with pytest.raises(UserError, match=r"3 of 256 .* sample of its 10,000"):
        readable.check_sample(tuple(paths), "a folder", fraction)
    else:
      readable.check_sample(tuple(paths), "a folder", fraction)
  readable.check_sample((bad,) + (good,) * 99, "100 files", fraction)


def test_a_reader_shard_with_no_readable_file_is_a_user_error(tmp_path):
  root = tmp_path / "shard"
  _write_bad(root / "train", ("a/empty.jpg",))
  it = data.train_batches(_cfg(root), global_batch_size=2, seed=0)
  with pytest.raises(UserError, match=r"no readable image file.*empty\.jpg"):
    next(it)


def test_cli_refuses_an_unreadable_folder_before_the_workdir(tmp_path):
  root = tmp_path / "bad"
  _write_bad(root / "train")
  proc = run_cli(
    "--config",
    "configs/default.py",
    "--workdir",
    str(tmp_path / "w"),
    "--config.data.source=folder",
    f"--config.data.data_dir={root}",
    "--config.data.eval_split=",
  )
  assert_one_line_error(proc, "3 of 3 image files", "could not be decoded")
  assert not (tmp_path / "w").exists()
