"""The evaluation view, `augment.preprocess_eval` (docs/fidelity.md section 5,
"Evaluation"), against the reference's `preprocess_for_eval` in TF ops."""

import jax
import numpy as np
import pytest
import tensorflow as tf

from simclr_jax import augment
from simclr_jax.augment import crops


def _tf_reference_eval(image: np.ndarray, size: int) -> np.ndarray:
  """SimCLR's `preprocess_for_eval` for one image, as the reference runs it:
  `test_crop = image_size > 32`; `center_crop` computes the crop side with
  `tf.math.rint` in float32 and offsets `((image - crop) + 1) // 2`, then
  `tf.image.resize(..., BICUBIC)` of the crop. For size <= 32 the reference
  only reshapes (it needs size x size input); the plain resize here is what
  we do instead."""
  image = tf.convert_to_tensor(image)
  if size > 32:
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    h_f, w_f = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    aspect = size / size
    if aspect > w_f / h_f:
      crop_h = tf.cast(tf.math.rint(0.875 / aspect * w_f), tf.int32)
      crop_w = tf.cast(tf.math.rint(0.875 * w_f), tf.int32)
    else:
      crop_h = tf.cast(tf.math.rint(0.875 * h_f), tf.int32)
      crop_w = tf.cast(tf.math.rint(0.875 * aspect * h_f), tf.int32)
    top = ((height - crop_h) + 1) // 2
    left = ((width - crop_w) + 1) // 2
    image = tf.image.crop_to_bounding_box(image, top, left, crop_h, crop_w)
  if image.shape[:2] != (size, size):
    image = tf.image.resize([image], [size, size], method="bicubic")[0]
  return tf.clip_by_value(image, 0.0, 1.0).numpy()


@pytest.mark.parametrize(
  "height, width, size, box",
  [
    (100, 100, 64, (6, 6, 88)),  # rint(87.5) = 88 (ties to even)
    (101, 101, 64, (7, 7, 88)),  # odd margin 13: offset 7, not 6
    (44, 44, 40, (3, 3, 38)),  # rint(38.5) = 38, not 39
    (99, 150, 64, (6, 32, 87)),  # rint(86.625) = 87; wide image
    (150, 99, 48, (32, 6, 87)),  # tall image
    (60, 61, 33, (4, 5, 52)),  # rint(52.5) = 52; 33 > 32 crops
    (32, 32, 48, (2, 2, 28)),  # a small source still crops at 48
    (40, 40, 32, None),  # no crop at image_size 32: resize only
    (32, 32, 32, None),  # no crop, no resize
  ],
)
def test_preprocess_eval_matches_reference_center_crop(
  height, width, size, box
):
  images = (
    np.random.RandomState(height + width)
    .rand(2, height, width, 3)
    .astype(np.float32)
  )
  got = np.asarray(
    jax.jit(lambda x: augment.preprocess_eval(x, image_size=size))(images)
  )
  assert got.shape == (2, size, size, 3) and got.dtype == np.float32
  # TF quantises its bicubic weights (1024-entry table): ~6e-4 at most. A
  # crop one pixel off, or a crop where none belongs, moves every sample.
  for image, view in zip(images, got):
    np.testing.assert_allclose(view, _tf_reference_eval(image, size), atol=2e-3)
  if box is not None:  # (top, left, side) as the reference computes them
    assert crops.center_crop_box(height, width, 0.875) == box


def _framed(height, width, top, left, crop):
  """1 outside the centre crop box, 0 inside."""
  images = np.ones((2, height, width, 3), np.float32)
  images[:, top : top + crop, left : left + crop] = 0.0
  return images


@pytest.mark.parametrize(
  "height, width, out_size, top, left, crop",
  [
    (224, 224, 224, 14, 14, 196),
    (48, 64, 40, 3, 11, 42),
  ],
)
def test_preprocess_eval_crops_centre(height, width, out_size, top, left, crop):
  images = _framed(height, width, top, left, crop)
  out = np.asarray(augment.preprocess_eval(images, image_size=out_size))
  assert out.shape == (2, out_size, out_size, 3) and out.dtype == np.float32
  assert out.max() < 1e-6  # the frame was cropped away, nothing else
  # One pixel less cropped would show the frame.
  wider = _framed(height, width, top + 1, left + 1, crop - 2)
  assert augment.preprocess_eval(wider, image_size=out_size).max() > 0.1


def test_preprocess_eval_skips_crop_at_32px(random_uint8):
  # The reference decides by the output size (`image_size > 32`), not by
  # the source size.
  images = random_uint8((3, 32, 32, 3))
  out = np.asarray(augment.preprocess_eval(images, image_size=32))
  assert out.dtype == np.float32
  np.testing.assert_allclose(out, images / 255.0, atol=1e-6)
  big = random_uint8((3, 40, 40, 3), seed=1)
  down = np.asarray(augment.preprocess_eval(big, image_size=32))
  expected = jax.image.resize(
    big / 255.0, (3, 32, 32, 3), "cubic", antialias=False
  )
  np.testing.assert_allclose(down, np.clip(expected, 0, 1), atol=1e-5)
  # At 64 the 32 px image is centre-cropped (28 px) before the resize.
  up = np.asarray(augment.preprocess_eval(images, image_size=64))
  expected = jax.image.resize(
    images[:, 2:30, 2:30] / 255.0, (3, 64, 64, 3), "cubic", antialias=False
  )
  np.testing.assert_allclose(up, np.clip(expected, 0, 1), atol=1e-5)


def test_preprocess_eval_rejects_bad_arguments():
  images = np.zeros((1, 64, 64, 3), np.uint8)
  with pytest.raises(ValueError, match="crop_fraction"):
    augment.preprocess_eval(images, image_size=32, crop_fraction=0.0)
  with pytest.raises(ValueError, match="image_size"):
    augment.preprocess_eval(images, image_size=0)
