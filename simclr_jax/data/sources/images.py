"""Host-side image helpers: decode a file, bring any image to S x S x 3."""

from __future__ import annotations

import tensorflow as tf

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def to_fixed_size(image: tf.Tensor, size: int) -> tf.Tensor:
  """Brings any (H, W, C) image to uint8 (size, size, 3), keeping aspect.

  Grayscale becomes RGB, an alpha channel is dropped; images that are not
  already size x size get their shorter side resized to `size` (antialiased
  bilinear) and are centre cropped.
  """
  if image.shape.rank is None:
    image = tf.ensure_shape(image, [None, None, None])
  channels = tf.shape(image)[-1]
  image = tf.cond(
    channels < 3,
    lambda: tf.repeat(image[..., :1], 3, axis=-1),
    lambda: image[..., :3],
  )
  image = tf.image.convert_image_dtype(image, tf.uint8, saturate=True)
  image = tf.ensure_shape(image, [None, None, 3])
  height, width = tf.shape(image)[0], tf.shape(image)[1]

  def resize():
    hw = tf.cast(tf.stack([height, width]), tf.float32)
    new_hw = tf.cast(tf.round(hw * (size / tf.reduce_min(hw))), tf.int32)
    new_hw = tf.maximum(new_hw, size)
    resized = tf.image.resize(image, new_hw, antialias=True)
    top, left = (new_hw[0] - size) // 2, (new_hw[1] - size) // 2
    cropped = resized[top : top + size, left : left + size]
    return tf.cast(tf.clip_by_value(tf.round(cropped), 0, 255), tf.uint8)

  already = tf.logical_and(tf.equal(height, size), tf.equal(width, size))
  image = tf.cond(already, lambda: image, resize)
  return tf.ensure_shape(image, [size, size, 3])


def decode_paths(ds: tf.data.Dataset, size: int) -> tf.data.Dataset:
  """{'path', 'label'} examples -> {'image', 'label'}, decoded in parallel."""

  # A named function with explicit tf.cond inside: nothing for AutoGraph to
  # convert (it cannot parse a lambda and would warn on every run).
  @tf.autograph.experimental.do_not_convert
  def one(ex):
    return {"image": decode_file(ex["path"], size), "label": ex["label"]}

  return ds.map(one, num_parallel_calls=tf.data.AUTOTUNE)


def decode_file(path: tf.Tensor, size: int) -> tf.Tensor:
  """Reads and decodes one image file to uint8 (size, size, 3)."""
  image = tf.io.decode_image(
    tf.io.read_file(path), channels=0, expand_animations=False
  )
  return to_fixed_size(image, size)
