"""Tests for per-process batching, global arrays and device prefetch."""

import dataclasses
import itertools
import threading

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from helpers import data_config
from simclr_jax import data
from simclr_jax.data import builtin
from simclr_jax.errors import UserError

CFG = data_config(
  image_size=8,
  builtin_train_examples=30,
  builtin_eval_examples=21,
  shuffle_buffer=1000,
)


def _keys(images):
  return [im.tobytes() for im in images]


def _take(iterator, n):
  return list(itertools.islice(iterator, n))


def _train(cfg=CFG, **kwargs):
  kwargs = {"global_batch_size": 8, "seed": 0, **kwargs}
  return data.train_batches(cfg, **kwargs)


def test_batch_shapes_and_dtypes():
  (batch,) = _take(_train(), 1)
  assert set(batch) == {"image", "label"}
  assert batch["image"].shape == (8, 8, 8, 3)
  assert batch["image"].dtype == np.uint8
  assert batch["label"].shape == (8,) and batch["label"].dtype == np.int32


def test_processes_read_disjoint_shards_covering_the_split():
  images, _ = builtin.generate(30, 8, builtin.split_seed(0, "train"))
  seen = []
  for index in range(2):
    # Train: the first epoch of each process (15 examples -> 3 batches of 4)
    # stays inside that process's shard.
    train = _take(
      _train(global_batch_size=8, process_index=index, process_count=2), 3
    )
    train_keys = set(_keys(np.concatenate([b["image"] for b in train])))
    assert len(train_keys) == 12
    # Eval: one ordered pass over the shard.
    keys = []
    for batch in data.eval_batches(
      CFG, "train", global_batch_size=8, process_index=index, process_count=2
    ):
      assert batch["image"].shape == (4, 8, 8, 3)
      keys += _keys(batch["image"][batch["mask"]])
    assert train_keys <= set(keys)
    seen.append(keys)
  assert not set(seen[0]) & set(seen[1])
  assert sorted(seen[0] + seen[1]) == sorted(_keys(images))


def test_uneven_shards_give_every_process_the_same_number_of_eval_batches():
  counts = [
    len(
      list(
        data.eval_batches(
          CFG, "test", global_batch_size=4, process_index=i, process_count=2
        )
      )
    )
    for i in range(2)
  ]  # shards of 10 and 11 examples, batches of 2
  assert counts == [6, 6]


def test_deterministic_by_seed():
  a, b, c = (_take(_train(seed=s), 5) for s in (1, 1, 2))
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["image"], y["image"])
    np.testing.assert_array_equal(x["label"], y["label"])
  assert any(not np.array_equal(x["image"], z["image"]) for x, z in zip(a, c))


def test_each_epoch_is_reshuffled():
  cfg = data_config(image_size=8, builtin_train_examples=32)
  batches = _take(_train(cfg), 12)  # 32 examples = 4 batches of 8 per epoch
  epochs = [
    np.concatenate([b["image"] for b in batches[i : i + 4]]) for i in (0, 4, 8)
  ]
  for epoch in epochs[1:]:
    assert sorted(_keys(epoch)) == sorted(_keys(epochs[0]))  # same examples
    assert _keys(epoch) != _keys(epochs[0])  # new order


@pytest.mark.parametrize("start_step", [1, 4, 11])
def test_start_step_resumes_where_the_uninterrupted_run_was(start_step):
  # 30 examples, batches of 8: batches straddle epoch boundaries.
  reference = _take(_train(), start_step + 4)[start_step:]
  resumed = _take(_train(start_step=start_step), 4)
  for x, y in zip(reference, resumed):
    np.testing.assert_array_equal(x["image"], y["image"])
    np.testing.assert_array_equal(x["label"], y["label"])


SHARDED = data_config(
  image_size=8, builtin_train_examples=30, shuffle_buffer=1000, num_shards=4
)


def _global_batches(num_processes, n, **kwargs):
  """The first n global batches: local batches concatenated in process
  order, as `to_global` lays them out."""
  local = [
    _take(
      _train(
        SHARDED,
        global_batch_size=16,
        process_index=p,
        process_count=num_processes,
        **kwargs,
      ),
      n,
    )
    for p in range(num_processes)
  ]
  return [
    {
      k: np.concatenate([batches[i][k] for batches in local])
      for k in ("image", "label")
    }
    for i in range(n)
  ]


def test_global_batches_do_not_depend_on_the_process_count():
  # 30 examples in 4 reader shards of 7 or 8, blocks of 4: the third batch
  # straddles every shard's first epoch boundary.
  one, two, four = (_global_batches(p, 5) for p in (1, 2, 4))
  for a, b, c in zip(one, two, four):
    assert a["image"].shape == (16, 8, 8, 3)
    for key in ("image", "label"):
      np.testing.assert_array_equal(a[key], b[key])
      np.testing.assert_array_equal(a[key], c[key])
  assert len({_keys(b["image"])[0] for b in one}) > 1  # shuffled


def test_each_process_reads_only_its_reader_shards():
  images, _ = builtin.generate(30, 8, builtin.split_seed(0, "train"))
  keys = _keys(images)
  one = _global_batches(1, 8)
  for rows in (b["image"] for b in one):
    # Block s of every batch comes from reader shard s (examples
    # [30s/4, 30(s+1)/4) of the split).
    for s in range(4):
      index = [keys.index(k) for k in _keys(rows[4 * s : 4 * s + 4])]
      assert all(30 * s // 4 <= i < 30 * (s + 1) // 4 for i in index)
  for p in range(2):
    rows = np.concatenate(
      [
        b["image"]
        for b in _take(
          _train(
            SHARDED, global_batch_size=16, process_index=p, process_count=2
          ),
          8,
        )
      ]
    )
    seen = {keys.index(k) for k in _keys(rows)}
    assert seen == set(range(15 * p, 15 * (p + 1)))  # its half, all of it


def test_without_shuffling_batch_k_is_block_k_of_every_shard():
  images, _ = builtin.generate(30, 8, builtin.split_seed(0, "train"))
  cfg = dataclasses.replace(SHARDED, shuffle_buffer=0)
  first, second = _take(_train(cfg, global_batch_size=16), 2)
  starts = [30 * s // 4 for s in range(4)]  # shards of 7, 8, 7, 8
  np.testing.assert_array_equal(
    first["image"], np.concatenate([images[i : i + 4] for i in starts])
  )
  np.testing.assert_array_equal(  # shard 0 wraps into its second epoch
    second["image"][:4], np.concatenate([images[4:7], images[:1]])
  )


def test_num_shards_argument_overrides_the_config():
  from_cfg = _take(_train(SHARDED, global_batch_size=16), 2)
  explicit = _take(_train(CFG, global_batch_size=16, num_shards=4), 2)
  other = _take(_train(SHARDED, global_batch_size=16, num_shards=2), 2)
  for a, b in zip(from_cfg, explicit):
    np.testing.assert_array_equal(a["image"], b["image"])
  assert any(
    not np.array_equal(a["image"], c["image"]) for a, c in zip(from_cfg, other)
  )


@pytest.mark.parametrize("start_step", [1, 2, 9])
def test_start_step_resumes_every_reader_shard(start_step):
  for p in range(2):
    kwargs = dict(global_batch_size=16, process_index=p, process_count=2)
    reference = _take(_train(SHARDED, **kwargs), start_step + 3)[start_step:]
    resumed = _take(_train(SHARDED, start_step=start_step, **kwargs), 3)
    for x, y in zip(reference, resumed):
      np.testing.assert_array_equal(x["image"], y["image"])
      np.testing.assert_array_equal(x["label"], y["label"])


@pytest.mark.parametrize(
  "num_shards, processes, match",
  [
    (3, 1, "num_shards=3 does not divide the global batch size 16"),
    (32, 1, "num_shards=32 does not divide"),
    (2, 4, "num_shards=2 is not a multiple of the 4 processes"),
    (-4, 1, "num_shards must be >= 0"),
  ],
)
def test_bad_num_shards(num_shards, processes, match):
  with pytest.raises(UserError, match=match):
    _train(
      CFG, global_batch_size=16, num_shards=num_shards, process_count=processes
    )


def test_eval_is_ordered_and_padded_with_a_mask():
  images, labels = builtin.generate(21, 8, builtin.split_seed(0, "test"))
  batches = list(data.eval_batches(CFG, "test", global_batch_size=8))
  assert len(batches) == 3
  for batch in batches:
    assert batch["image"].shape == (8, 8, 8, 3)
    assert batch["mask"].dtype == np.bool_
  last = batches[-1]
  np.testing.assert_array_equal(last["mask"], [True] * 5 + [False] * 3)
  np.testing.assert_array_equal(last["label"][5:], -1)
  assert not last["image"][5:].any()
  mask = np.concatenate([b["mask"] for b in batches])
  np.testing.assert_array_equal(
    np.concatenate([b["image"] for b in batches])[mask], images
  )
  np.testing.assert_array_equal(
    np.concatenate([b["label"] for b in batches])[mask], labels
  )


def test_batch_size_must_divide_by_process_count():
  with pytest.raises(UserError, match="not divisible.*3"):
    _train(global_batch_size=8, process_count=3)
  with pytest.raises(UserError, match="not divisible"):
    data.eval_batches(CFG, "test", global_batch_size=5, process_count=2)


def _sharding():
  return jax.sharding.NamedSharding(jax.make_mesh((8,), ("data",)), P("data"))


def test_to_global_shards_the_batch_over_the_devices():
  batch = next(data.eval_batches(CFG, "test", global_batch_size=16))
  out = data.to_global(batch, _sharding())
  assert set(out) == {"image", "label", "mask"}
  image = out["image"]
  assert isinstance(image, jax.Array) and image.shape == (16, 8, 8, 3)
  assert image.sharding == _sharding() and len(image.addressable_shards) == 8
  for shard in image.addressable_shards:
    assert shard.data.shape == (2, 8, 8, 3)
    np.testing.assert_array_equal(shard.data, batch["image"][shard.index])
  np.testing.assert_array_equal(out["label"], batch["label"])


def test_prefetch_to_device_yields_global_arrays_in_order():
  source = list(data.eval_batches(CFG, "test", global_batch_size=8))
  out = list(data.prefetch_to_device(iter(source), _sharding()))
  assert len(out) == len(source)
  for x, y in zip(out, source):
    assert x["image"].sharding == _sharding()
    np.testing.assert_array_equal(x["image"], y["image"])


def test_prefetch_propagates_producer_exceptions():
  def source():
    for batch in itertools.islice(_train(), 2):
      yield batch
    raise ValueError("boom from the producer")

  it = data.prefetch_to_device(source(), _sharding())
  assert len(_take(it, 2)) == 2
  with pytest.raises(ValueError, match="boom from the producer"):
    next(it)


def test_prefetch_stops_cleanly():
  closed = threading.Event()

  def source():
    try:
      yield from _train()  # infinite
    finally:
      closed.set()

  it = data.prefetch_to_device(source(), _sharding(), size=2)
  assert len(_take(it, 3)) == 3
  it.close()
  assert closed.wait(10)
  assert not any(
    t.name == "prefetch_to_device" and t.is_alive()
    for t in threading.enumerate()
  )


def test_prefetch_forwards_unreadable_skipped():
  """The count of the wrapped iterator as of each batch handed out (not of
  the batches queued ahead), and 0 for an iterator without one."""

  class Counting:
    def __init__(self):
      self.unreadable_skipped, self._source = 0, _train()

    def __iter__(self):
      return self

    def __next__(self):
      self.unreadable_skipped += 1
      return next(self._source)

  it = data.prefetch_to_device(Counting(), _sharding(), size=3)
  assert it.unreadable_skipped == 0
  for step in range(1, 5):
    next(it)
    assert it.unreadable_skipped == step
  it.close()
  plain = data.prefetch_to_device(iter(_take(_train(), 2)), _sharding())
  next(plain)
  assert plain.unreadable_skipped == 0
  assert _train().unreadable_skipped == 0  # builtin data: nothing to skip
