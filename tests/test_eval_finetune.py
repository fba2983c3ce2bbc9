"""Fine-tuning on a labelled subset of the builtin data, and its evaluation.

A tiny ResNet-18 (width 1/8, CIFAR stem, 16 px) with a randomly initialised
'pretrained' SimCLR model stands in for a real checkpoint; 8 simulated CPU
devices hold the batch.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from simclr_jax import augment
from simclr_jax.eval import supervised as classify
from simclr_jax import data as data_lib
from simclr_jax.eval import finetune as ft_lib
from simclr_jax import models
from simclr_jax import optim
from simclr_jax.data import subsets
from simclr_jax.errors import UserError

SIZE = 16
BATCH = 32
NUM_CLASSES = 10
DATA = data_lib.DataConfig(
  source="builtin",
  image_size=SIZE,
  builtin_train_examples=160,
  builtin_eval_examples=40,
  shuffle_buffer=64,
)


@functools.lru_cache(maxsize=None)
def _simclr():
  """The stand-in pretraining model and its variables (built once)."""
  model = models.SimCLRModel(
    backbone=models.ResNet(depth=18, width_multiplier=0.125, cifar_stem=True),
    projection_head=models.ProjectionHead(num_layers=3, out_dim=16),
    num_classes=0,
  )
  variables = jax.jit(
    lambda key: model.init(key, jnp.zeros((2, SIZE, SIZE, 3)), train=False)
  )(jax.random.PRNGKey(1))
  return model, variables


def _pretrained(head_layers: int, **init_options):
  model, variables = _simclr()
  ft_model = models.finetune_model(
    model, num_classes=NUM_CLASSES, head_layers=head_layers
  )
  return ft_model, ft_lib.init_variables(
    ft_model, variables, image_size=SIZE, seed=2, **init_options
  )


def _train_batches():
  """Endless batches of a stratified 20% subset (30 examples, 3 / class)."""
  shard = subsets.load_subset_shard(DATA, 0.2, seed=0)
  return shard.dataset.repeat().batch(BATCH).as_numpy_iterator()


@pytest.fixture(scope="module")
def mesh():
  return Mesh(np.array(jax.devices()), ("data",))


@pytest.fixture(scope="module")
def run_v1(mesh):
  """20 steps from the backbone output, logging every step; records the
  augmentation configs and LARS arguments the run builds."""
  model, variables = _pretrained(head_layers=0)
  logs, built = [], {"views": [], "lars": []}
  view, lars = classify.augmented_view, ft_lib.optim.lars

  def spy_view(key, images, config):
    built["views"].append(config)
    return view(key, images, config)

  def spy_lars(*args, **kwargs):
    built["lars"].append(kwargs)
    return lars(*args, **kwargs)

  classify.augmented_view, ft_lib.optim.lars = spy_view, spy_lars
  try:
    tuned = ft_lib.finetune(
      model,
      variables,
      _train_batches(),
      mesh=mesh,
      steps=20,
      batch_size=BATCH,
      image_size=SIZE,
      base_learning_rate=0.05,
      seed=0,
      log_fn=lambda step, m: logs.append((step, m)),
      log_every=1,
    )
  finally:
    classify.augmented_view, ft_lib.optim.lars = view, lars
  return model, variables, jax.device_get(tuned), logs, built


def _flat(tree):
  return {
    jax.tree_util.keystr(p): np.asarray(x)
    for p, x in jax.tree_util.tree_leaves_with_path(tree)
  }


def test_finetune_trains_the_whole_network(run_v1):
  _, before, after, _, _ = run_v1
  for collection in ("params", "batch_stats"):
    old, new = _flat(before[collection]), _flat(after[collection])
    assert old.keys() == new.keys()
    changed = [k for k in old if not np.array_equal(old[k], new[k])]
    # Every parameter and statistic moves (the last BN gammas start at 0
    # but get gradients), the encoder included: unlike linear evaluation.
    assert len(changed) == len(old), set(old) - set(changed)


def test_finetune_loss_decreases_and_logs(run_v1):
  _, _, _, logs, _ = run_v1
  assert [step for step, _ in logs] == list(range(1, 21))
  losses = np.array([m["loss"] for _, m in logs])
  assert np.all(np.isfinite(losses))
  assert losses[:3].mean() > np.log(NUM_CLASSES) - 0.3  # starts near chance
  assert losses[-3:].mean() < 0.8 * losses[:3].mean()
  # Cosine decay from 0.05 x sqrt(32), no warmup, reaching 0 at step 20.
  schedule = optim.learning_rate_schedule(
    base_learning_rate=0.05,
    batch_size=BATCH,
    num_examples=BATCH,
    epochs=20,
    warmup_epochs=0,
    scaling="sqrt",
    train_steps=20,
  )
  np.testing.assert_allclose(
    logs[0][1]["learning_rate"], 0.05 * np.sqrt(BATCH), rtol=1e-6
  )
  np.testing.assert_allclose(
    [m["learning_rate"] for _, m in logs],
    [schedule(s) for s in range(20)],
    rtol=1e-5,
  )


def test_finetune_recipe_crop_flip_views_and_lars(run_v1):
  """One crop-and-flip view per image (no colour, grayscale or blur); LARS
  with momentum 0.9 and, by default, no weight decay."""
  _, _, _, _, built = run_v1
  assert built["views"] == [augment.make_augment_config("crop_flip", SIZE)]
  (lars,) = built["lars"]
  assert (lars["momentum"], lars["weight_decay"]) == (0.9, 0.0)


def test_classifier_starts_at_zero_unless_asked(run_v1):
  """The reference's fine-tuning commands zero the classifier, kernel and
  bias (`--zero_init_logits_layer=True`); the Dense init is the option."""
  _, zero, _, logs, _ = run_v1  # the default init the run started from
  _, dense = _pretrained(head_layers=0, zero_init_head=False)
  for name, variables in (("zero", zero), ("dense", dense)):
    head = jax.device_get(variables["params"]["head_supervised"]["linear"])
    assert head["kernel"].shape == (64, NUM_CLASSES)
    np.testing.assert_array_equal(head["bias"], 0.0)
    if name == "zero":
      np.testing.assert_array_equal(head["kernel"], 0.0)
    else:
      assert 0.005 < head["kernel"].std() < 0.02  # normal, stddev 0.01
  # Everything else is the pretrained network either way.
  for collection in ("params", "batch_stats"):
    a = {
      k: v
      for k, v in _flat(zero[collection]).items()
      if "head_supervised" not in k
    }
    b = {
      k: v
      for k, v in _flat(dense[collection]).items()
      if "head_supervised" not in k
    }
    assert a.keys() == b.keys() and a
    assert all(np.array_equal(a[k], b[k]) for k in a)
  # From a zero classifier, the first logits are all 0: loss ln(C).
  np.testing.assert_allclose(logs[0][1]["loss"], np.log(NUM_CLASSES), rtol=1e-6)


def test_evaluate_counts_only_masked_rows(run_v1, mesh):
  model, _, tuned, _, _ = run_v1
  batches = list(data_lib.eval_batches(DATA, "test", global_batch_size=BATCH))
  assert len(batches) == 2 and batches[1]["mask"].sum() == 8
  result = ft_lib.evaluate(model, tuned, batches, mesh, SIZE)
  assert result["num_examples"] == 40
  assert 0.0 <= result["top1"] <= result["top5"] <= 1.0
  # The same numbers by hand, on the 40 real images only.
  images = np.concatenate([b["image"][b["mask"]] for b in batches])
  labels = np.concatenate([b["label"][b["mask"]] for b in batches])
  logits = np.asarray(
    jax.jit(
      lambda v, im: model.apply(
        v, augment.preprocess_eval(im, image_size=SIZE), train=False
      )["logits"]
    )(tuned, images)
  )
  top5 = np.argsort(-logits, axis=-1)[:, :5]
  np.testing.assert_allclose(
    result["top1"], np.mean(top5[:, 0] == labels), atol=1e-6
  )
  np.testing.assert_allclose(
    result["top5"], np.mean((top5 == labels[:, None]).any(-1)), atol=1e-6
  )
  # Padding rows never count, even with a real-looking label.
  relabelled = [
    dict(b, label=np.where(b["mask"], b["label"], 0)) for b in batches
  ]
  assert ft_lib.evaluate(model, tuned, relabelled, mesh, SIZE) == result


def test_finetune_from_head_layer_1(mesh):
  model, variables = _pretrained(head_layers=1)
  assert set(variables["params"]["projection_head"]) == {"dense_0", "bn_0"}
  tuned = jax.device_get(
    ft_lib.finetune(
      model,
      variables,
      _train_batches(),
      mesh=mesh,
      steps=2,
      batch_size=BATCH,
      image_size=SIZE,
      seed=0,
    )
  )
  before = _flat(variables["params"]["projection_head"])
  after = _flat(tuned["params"]["projection_head"])
  assert all(not np.array_equal(before[k], after[k]) for k in before)
  kernel = tuned["params"]["head_supervised"]["linear"]["kernel"]
  assert kernel.shape == (64, NUM_CLASSES)  # head layer 1 keeps 512 x 1/8


def test_finetune_input_errors(mesh):
  model, variables = _pretrained(head_layers=0)
  with pytest.raises(UserError, match="ran out after 0 of 3 steps"):
    ft_lib.finetune(
      model,
      variables,
      iter([]),
      mesh=mesh,
      steps=3,
      batch_size=BATCH,
      image_size=SIZE,
    )
  small = {
    "image": np.zeros((16, SIZE, SIZE, 3), np.uint8),
    "label": np.zeros((16,), np.int32),
  }
  with pytest.raises(UserError, match="global batch of 16 .* batch_size=32"):
    ft_lib.finetune(
      model,
      variables,
      iter([small]),
      mesh=mesh,
      steps=3,
      batch_size=BATCH,
      image_size=SIZE,
    )
  with pytest.raises(UserError, match="no labelled examples"):
    ft_lib.evaluate(model, variables, [], mesh, SIZE)
