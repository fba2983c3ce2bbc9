"""Convolution implementations: XLA's own, and a faster formulation for CPUs.

XLA:CPU runs a 3x3 convolution over a tiny image (the 8x8 down to 2x2 maps of a
ResNet's last stage at 16-32 px inputs) an order of magnitude slower than
the same arithmetic as a matrix product, and its weight-gradient
convolutions transpose every activation to a batch-minor layout first. The
"patches" formulation writes the convolution as im2col (k*k shifted slices
of the padded input, concatenated on the channel axis) followed by one
matmul, so JAX's autodiff turns the backward pass into two matmuls plus the
adjoint of the slicing, which XLA:CPU runs well at those sizes.

`conv_function(impl)` returns what `flax.linen.Conv(conv_general_dilated=...)`
takes:
  "xla":  `lax.conv_general_dilated`, the reference path (and the one used
          on GPUs and TPUs).
  "patches_small": the patches formulation where a layer's output has at
          most `SMALL_OUTPUT_PIXELS` pixels, XLA's convolution elsewhere.
  "patches": the patches formulation for every supported convolution
          (NHWC/HWIO, no dilation, no feature groups); for tests and
          benchmarks.
Both formulations compute the same sums in another order, so outputs and
gradients agree to float32 rounding (tests/test_models_conv_impl.py).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax

IMPLS = ("xla", "patches_small", "patches")
# Output maps up to this many pixels (8x8) take the patches path
# ("patches_small"); measured by benchmarks/suite.py on a 2-core CPU.
SMALL_OUTPUT_PIXELS = 64

ConvFn = Callable[..., jnp.ndarray]


def resolve(impl: str, backend: str) -> str:
  """Turns 'auto' into the implementation for `backend` ('cpu', 'gpu', ...)."""
  if impl == "auto":
    return "patches_small" if backend == "cpu" else "xla"
  if impl not in IMPLS:
    raise ValueError(
      f"model.conv_impl must be 'auto' or one of {', '.join(IMPLS)}; "
      f"got {impl!r}."
    )
  return impl


def _supported(
  lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count
) -> bool:
  nhwc = (
    dimension_numbers is not None
    and tuple(dimension_numbers.lhs_spec) == (0, 3, 1, 2)
    and tuple(dimension_numbers.rhs_spec) == (3, 2, 0, 1)
  )
  plain = all(d == 1 for d in (lhs_dilation or (1,))) and all(
    d == 1 for d in (rhs_dilation or (1,))
  )
  return nhwc and plain and feature_group_count == 1 and lhs.ndim == 4


def _explicit_padding(padding, lhs_shape, rhs_shape, strides):
  if isinstance(padding, str):
    return lax.padtype_to_pads(lhs_shape[1:3], rhs_shape[:2], strides, padding)
  return [tuple(p) for p in padding]


def patches_conv(
  lhs: jnp.ndarray,
  rhs: jnp.ndarray,
  strides: Sequence[int],
  padding: Any,
) -> jnp.ndarray:
  """NHWC x HWIO convolution as im2col + one matmul (no dilation, groups)."""
  kh, kw, cin, cout = rhs.shape
  pads = _explicit_padding(padding, lhs.shape, rhs.shape, tuple(strides))
  x = jnp.pad(lhs, ((0, 0), tuple(pads[0]), tuple(pads[1]), (0, 0)))
  sh, sw = strides
  out_h = (x.shape[1] - kh) // sh + 1
  out_w = (x.shape[2] - kw) // sw + 1
  cols = [
    x[:, i : i + sh * (out_h - 1) + 1 : sh, j : j + sw * (out_w - 1) + 1 : sw]
    for i in range(kh)
    for j in range(kw)
  ]
  p = cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)
  y = jnp.dot(
    p.reshape(-1, kh * kw * cin),
    rhs.reshape(kh * kw * cin, cout),
    preferred_element_type=jnp.promote_types(lhs.dtype, rhs.dtype),
  )
  return y.reshape(lhs.shape[0], out_h, out_w, cout).astype(lhs.dtype)


def conv_function(impl: str) -> ConvFn:
  """The `conv_general_dilated` to give flax.linen.Conv for `impl`."""
  if impl not in IMPLS:
    raise ValueError(f"unknown conv implementation {impl!r}; use {IMPLS}")
  if impl == "xla":
    return lax.conv_general_dilated
  limit = None if impl == "patches" else SMALL_OUTPUT_PIXELS

  def conv(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    precision=None,
    **kwargs,
  ):
    if (
      _supported(
        lhs,
        rhs,
        lhs_dilation,
        rhs_dilation,
        dimension_numbers,
        feature_group_count,
      )
      and not kwargs
    ):
      out = jax.eval_shape(
        lambda a, b: lax.conv_general_dilated(
          a, b, window_strides, padding, dimension_numbers=dimension_numbers
        ),
        lhs,
        rhs,
      ).shape
      if limit is None or out[1] * out[2] <= limit:
        return patches_conv(lhs, rhs, window_strides, padding)
    return lax.conv_general_dilated(
      lhs,
      rhs,
      window_strides,
      padding,
      lhs_dilation=lhs_dilation,
      rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count,
      precision=precision,
      **kwargs,
    )

  return conv
