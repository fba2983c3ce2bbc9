"""What an augmented view does: `AugmentConfig`, its presets, the constants.

An `AugmentConfig` is static (hashable) data, checked when it is built; bad
values raise `AugmentConfigError`. `PRESETS` names ready-made configs and
`make_augment_config` builds one with field overrides.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Callable

from simclr_jax.errors import UserError

_SAMPLERS = ("reference", "torchvision")
_BRIGHTNESS_MODES = ("multiplicative", "additive")
_BLUR_SIGMA_MODES = ("per_image", "per_batch")
# Contrast/saturation lower bound 1 - 0.8 s must stay >= 0 (TF refuses less).
_MAX_JITTER_STRENGTH = 1.25
# The range a blur sigma is drawn from (the reference's).
BLUR_SIGMA_RANGE = (0.1, 2.0)
# TF's sample_distorted_bounding_box as SimCLR calls it: the crop must cover
# at least this fraction of the (whole-image) bounding box.
MIN_OBJECT_COVERED = 0.1
# The reference centre-crops eval images only when the model input is larger
# than this (`test_crop = FLAGS.image_size > 32`).
EVAL_NO_CROP_MAX_SIZE = 32
# Per-example keys are `fold_in(key, i)`, equal to `split(key, n)[i]`; the key
# of a whole batch is the one of an index no batch reaches.
BATCH_INDEX = 2**32 - 1


class AugmentConfigError(UserError, ValueError):
  """A bad augmentation setting; both a `ValueError` and a `UserError`."""


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """What one augmented view does; static (hashable) data, not code."""

  image_size: int
  crop: bool = True
  crop_area: tuple[float, float] = (0.08, 1.0)
  crop_aspect: tuple[float, float] = (3 / 4, 4 / 3)
  crop_sampler: str = "reference"
  flip: bool = True
  color_jitter_strength: float = 1.0
  color_jitter_prob: float = 0.8
  brightness: str = "multiplicative"
  grayscale_prob: float = 0.2
  blur_prob: float = 0.5
  # "per_image": a sigma per blurred image (ours); "per_batch": one per view
  # and batch, shared by its blurred images (like the reference).
  blur_sigma: str = "per_image"
  solarize_prob: float = 0.0

  def __post_init__(self):
    def fail(message):
      raise AugmentConfigError(f"AugmentConfig: {message}")

    size = self.image_size
    if (
      isinstance(size, bool)
      or not isinstance(size, numbers.Integral)
      or size < 1
    ):
      fail(f"image_size must be a positive int, got {size!r}")
    object.__setattr__(self, "image_size", int(size))
    for name in ("crop", "flip"):
      if not isinstance(getattr(self, name), bool):
        fail(f"{name} must be True or False, got {getattr(self, name)!r}")
    for name, top in (("crop_area", 1.0), ("crop_aspect", math.inf)):
      value = getattr(self, name)
      try:
        lo, hi = (float(v) for v in value)
      except (TypeError, ValueError):
        fail(f"{name} must be a pair (low, high) of numbers, got {value!r}")
      if not 0.0 < lo <= hi <= top or math.isinf(hi):
        fail(
          f"{name} must satisfy 0 < low <= high"
          f"{' <= 1' if top == 1.0 else ''}, got {(lo, hi)}"
        )
      object.__setattr__(self, name, (lo, hi))
    for name, choices in (
      ("crop_sampler", _SAMPLERS),
      ("brightness", _BRIGHTNESS_MODES),
      ("blur_sigma", _BLUR_SIGMA_MODES),
    ):
      if getattr(self, name) not in choices:
        fail(f"{name} must be one of {choices}, got {getattr(self, name)!r}")
    if (
      self.crop_sampler == "reference"
      and self.crop_area[1] < MIN_OBJECT_COVERED
    ):
      fail(
        f"the reference crop sampler rejects boxes covering less than "
        f"{MIN_OBJECT_COVERED:.0%} of the image, so crop_area high "
        f"must be >= {MIN_OBJECT_COVERED}, got {self.crop_area[1]}"
      )
    for name in (
      "color_jitter_strength",
      "color_jitter_prob",
      "grayscale_prob",
      "blur_prob",
      "solarize_prob",
    ):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, numbers.Real):
        fail(f"{name} must be a number, got {value!r}")
      object.__setattr__(self, name, float(value))
      high = _MAX_JITTER_STRENGTH if name == "color_jitter_strength" else 1.0
      if not 0.0 <= value <= high:
        what = (
          "the jitter strength s (contrast/saturation factors start at "
          "1 - 0.8 s, which must not be negative)"
          if name == "color_jitter_strength"
          else "a probability"
        )
        fail(f"{name} is {what} and must be in [0, {high}], got {value}")


def _preset(**fields) -> Callable[[int], AugmentConfig]:
  return lambda image_size: AugmentConfig(image_size=image_size, **fields)


PRESETS: dict[str, Callable[[int], AugmentConfig]] = {
  # SimCLR v2 ImageNet pretraining.
  "simclr": _preset(),
  # CIFAR pretraining: weaker colour jitter, no blur.
  "simclr_cifar": _preset(color_jitter_strength=0.5, blur_prob=0.0),
  # SimCLR v1: additive brightness.
  "simclr_v1": _preset(brightness="additive"),
  # Linear evaluation / fine-tuning training: random crop and flip only.
  "crop_flip": _preset(
    color_jitter_strength=0.0,
    color_jitter_prob=0.0,
    grayscale_prob=0.0,
    blur_prob=0.0,
  ),
  # No augmentation at all: resize to image_size only.
  "none": _preset(
    crop=False,
    flip=False,
    color_jitter_strength=0.0,
    color_jitter_prob=0.0,
    grayscale_prob=0.0,
    blur_prob=0.0,
  ),
}


def make_augment_config(
  preset: str, image_size: int, **overrides
) -> AugmentConfig:
  """Builds the named preset for `image_size`, then applies field overrides."""
  if preset not in PRESETS:
    raise AugmentConfigError(
      f"unknown augmentation preset {preset!r}; valid presets: "
      f"{', '.join(sorted(PRESETS))}"
    )
  config = PRESETS[preset](image_size)
  fields = {f.name for f in dataclasses.fields(AugmentConfig)}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise AugmentConfigError(
      f"unknown AugmentConfig field(s) {unknown}; valid fields: "
      f"{', '.join(sorted(fields))}"
    )
  return dataclasses.replace(config, **overrides)
