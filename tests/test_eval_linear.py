"""Linear evaluation on a frozen encoder: frozen really is frozen, it learns,
its updates are the paper's / reference's (zero-initialised head, SGD
Nesterov, lr 0.1 x B/256 with cosine decay and no warm-up, L2 on kernel and
bias, crop-and-flip views), and the evaluation counts only real examples."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from simclr_jax import augment
from simclr_jax.eval import supervised as classify
from simclr_jax.eval import features as evaluation
from simclr_jax.eval import linear as linear_eval
from simclr_jax import models
from simclr_jax.errors import UserError

SIZE, CLASSES, BATCH = 16, 4, 32
# One colour per class: a random conv net separates these easily.
COLOURS = np.array(
  [[220, 40, 40], [40, 200, 40], [40, 40, 220], [220, 220, 40]], np.float32
)


def _images(rng, labels):
  noise = rng.normal(0, 25, (len(labels), SIZE, SIZE, 3))
  return np.clip(COLOURS[labels][:, None, None] + noise, 0, 255).astype(
    np.uint8
  )


def _train_batches(seed):
  rng = np.random.default_rng(seed)
  while True:
    labels = rng.integers(0, CLASSES, BATCH).astype(np.int32)
    yield {"image": _images(rng, labels), "label": labels}


@pytest.fixture(scope="module")
def encoder():
  model = models.SimCLRModel(
    backbone=models.ResNet(depth=18, width_multiplier=0.125, cifar_stem=True),
    projection_head=models.ProjectionHead(num_layers=2, out_dim=8),
    num_classes=0,
  )
  variables = jax.jit(
    lambda k: model.init(k, jnp.zeros((2, SIZE, SIZE, 3)), train=False)
  )(jax.random.PRNGKey(0))
  return model, variables, Mesh(np.array(jax.devices()), ("data",))


@pytest.fixture(scope="module")
def setup(encoder):
  model, variables, mesh = encoder
  before = jax.device_get(variables)
  logs = []
  # A random encoder's features are tiny (norm ~0.3), hence the large rate.
  head = linear_eval.train_linear(
    model,
    variables,
    _train_batches(0),
    mesh=mesh,
    num_classes=CLASSES,
    steps=30,
    batch_size=BATCH,
    image_size=SIZE,
    base_learning_rate=100.0,
    weight_decay=1e-6,
    seed=0,
    log_fn=lambda s, m: logs.append((s, m)),
    log_every=10,
  )
  return model, variables, before, mesh, head, logs


def test_encoder_variables_stay_bit_identical(setup):
  _, variables, before, _, _, _ = setup
  after = jax.device_get(variables)  # also fails if a buffer was donated
  leaves_before = jax.tree_util.tree_leaves_with_path(before)
  leaves_after = jax.tree_util.tree_leaves_with_path(after)
  assert [p for p, _ in leaves_before] == [p for p, _ in leaves_after]
  for (path, a), (_, b) in zip(leaves_before, leaves_after):
    assert np.array_equal(a, b), path


def test_loss_decreases_and_the_head_classifies(setup):
  model, variables, _, mesh, head, logs = setup
  assert [s for s, _ in logs] == [10, 20, 30]
  first, last = logs[0][1], logs[-1][1]
  assert last["loss"] < 0.7 * first["loss"], logs
  assert last["learning_rate"] < first["learning_rate"]  # cosine decay
  assert set(head) == {"linear"}  # only the head was trained
  rng = np.random.default_rng(1)
  labels = rng.integers(0, CLASSES, 64).astype(np.int32)
  batches = [
    {
      "image": _images(rng, labels[i : i + 32]),
      "label": labels[i : i + 32],
      "mask": np.ones(32, bool),
    }
    for i in (0, 32)
  ]
  out = linear_eval.evaluate_linear(
    model,
    variables,
    head,
    batches,
    mesh=mesh,
    num_classes=CLASSES,
    image_size=SIZE,
  )
  assert out["num_examples"] == 64
  assert out["top1"] >= 0.9, out
  assert out["top5"] >= out["top1"]


def test_evaluation_counts_only_masked_in_examples(setup):
  model, variables, _, mesh, head, _ = setup
  rng = np.random.default_rng(2)
  labels = rng.integers(0, CLASSES, 40).astype(np.int32)
  images = _images(rng, labels)
  # Two batches of 32; the second has 8 real rows and 24 padded ones whose
  # image says class 0 and whose label is -1.
  pad_images = np.concatenate([images[32:], _images(rng, np.zeros(24, int))])
  batches = [
    {"image": images[:32], "label": labels[:32], "mask": np.ones(32, bool)},
    {
      "image": pad_images,
      "label": np.concatenate([labels[32:], np.full(24, -1, np.int32)]),
      "mask": np.arange(32) < 8,
    },
  ]
  out = linear_eval.evaluate_linear(
    model,
    variables,
    head,
    batches,
    mesh=mesh,
    num_classes=CLASSES,
    image_size=SIZE,
  )
  # Reference: the same model applied directly to the 40 real images.
  x = augment.preprocess_eval(images, image_size=SIZE)
  h = model.backbone.apply(
    evaluation.backbone_variables(variables), x, train=False
  )
  logits = np.asarray(models.SupervisedHead(CLASSES).apply({"params": head}, h))
  order = np.argsort(-logits, axis=1, kind="stable")
  assert out["num_examples"] == 40
  assert out["top1"] == pytest.approx((order[:, 0] == labels).mean())
  assert out["top5"] == 1.0  # 4 classes: top-5 holds them all


def test_batch_size_mismatch_is_a_user_error(setup):
  model, variables, _, mesh, _, _ = setup
  with pytest.raises(UserError, match="batch_size=64"):
    linear_eval.train_linear(
      model,
      variables,
      _train_batches(0),
      mesh=mesh,
      num_classes=CLASSES,
      steps=1,
      batch_size=64,
      image_size=SIZE,
    )


def _flat_colour_batches(seed, n):
  """`n` batches of single-colour images: a crop, flip or bicubic resize of
  such an image is the same image, so the training view's features are
  known without reproducing the random augmentation."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    labels = rng.integers(0, CLASSES, BATCH).astype(np.int32)
    colour = np.clip(COLOURS[labels] + rng.normal(0, 40, (BATCH, 3)), 0, 255)
    images = np.broadcast_to(
      colour[:, None, None].astype(np.uint8), (BATCH, SIZE, SIZE, 3)
    ).copy()
    out.append({"image": images, "label": labels})
  return out


def _head_by_hand(
  features,
  labels,
  *,
  w,
  b,
  base_lr,
  wd,
  decay_bias,
  momentum=0.9,
  nesterov=True,
):
  """The reference linear evaluation, in float64: logits `h W + b`, mean
  softmax cross-entropy plus the L2 term `wd * (|W|^2 + |b|^2) / 2` (bias
  only with `decay_bias`), Keras SGD with Nesterov momentum
  (`v = m v - lr g; w += m v - lr g`), lr `base x B / 256` with cosine
  decay over the run and no warm-up."""
  steps = len(features)
  peak = base_lr * BATCH / 256
  w, b = np.array(w, np.float64), np.array(b, np.float64)
  vw, vb = np.zeros_like(w), np.zeros_like(b)
  for t, (h, y) in enumerate(zip(features, labels)):
    lr = peak * 0.5 * (1 + np.cos(np.pi * t / steps))
    logits = h @ w + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    d = (p - np.eye(CLASSES)[y]) / len(y)
    gw, gb = h.T @ d + wd * w, d.sum(0) + (wd * b if decay_bias else 0.0)
    for g, v, x in ((gw, vw, w), (gb, vb, b)):
      v *= momentum
      v -= lr * g
      x += (momentum * v - lr * g) if nesterov else v
  return w, b


@pytest.mark.parametrize(
  "reference", [True, False], ids=["defaults", "dense_init_kernel_decay"]
)
def test_updates_are_the_reference_protocol(encoder, reference, monkeypatch):
  """Three steps of train_linear equal a float64 hand computation of the
  reference protocol: by default the head starts at zero (kernel and bias)
  and the weight decay covers the bias; `zero_init_head=False,
  decay_bias=False` give the Dense init and kernel-only decay. The
  training views are the "crop_flip" preset's."""
  model, variables, mesh = encoder
  views = []
  original = classify.augmented_view
  monkeypatch.setattr(
    classify,
    "augmented_view",
    lambda key, images, config: (
      views.append(config) or original(key, images, config)
    ),
  )
  batches = _flat_colour_batches(3, 3)
  wd, base_lr = 0.5, 40.0
  options = {} if reference else {"zero_init_head": False, "decay_bias": False}
  got = jax.device_get(
    linear_eval.train_linear(
      model,
      variables,
      iter(batches),
      mesh=mesh,
      num_classes=CLASSES,
      steps=3,
      batch_size=BATCH,
      image_size=SIZE,
      base_learning_rate=base_lr,
      weight_decay=wd,
      seed=5,
      **options,
    )
  )
  assert views == [augment.make_augment_config("crop_flip", SIZE)]
  encoder = evaluation.backbone_variables(variables)
  features = [
    np.asarray(
      model.backbone.apply(
        encoder, jnp.asarray(b["image"], jnp.float32) / 255, train=False
      ),
      np.float64,
    )
    for b in batches
  ]
  labels = [b["label"] for b in batches]
  dim = features[0].shape[1]
  if reference:
    w0, b0 = np.zeros((dim, CLASSES)), np.zeros(CLASSES)
  else:  # the Dense default init from the run's seed
    init = models.SupervisedHead(CLASSES).init(
      jax.random.PRNGKey(5), jnp.zeros((1, dim))
    )
    w0, b0 = (
      np.asarray(init["params"]["linear"][k]) for k in ("kernel", "bias")
    )
    assert np.abs(w0).max() > 1e-3
  want_w, want_b = _head_by_hand(
    features, labels, w=w0, b=b0, base_lr=base_lr, wd=wd, decay_bias=reference
  )
  np.testing.assert_allclose(
    got["linear"]["kernel"], want_w, rtol=2e-4, atol=1e-6
  )
  np.testing.assert_allclose(
    got["linear"]["bias"], want_b, rtol=2e-4, atol=1e-6
  )
  # The comparison can tell the alternatives apart.
  for other in (dict(decay_bias=not reference), dict(nesterov=False)):
    alt_w, alt_b = _head_by_hand(
      features,
      labels,
      w=w0,
      b=b0,
      base_lr=base_lr,
      wd=wd,
      **{"decay_bias": reference, **other},
    )
    assert not np.allclose(
      np.concatenate([alt_w.ravel(), alt_b]),
      np.concatenate([want_w.ravel(), want_b]),
      rtol=1e-2,
      atol=1e-4,
    ), other
