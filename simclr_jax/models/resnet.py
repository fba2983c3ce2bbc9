"""ResNet v1 encoders for SimCLR v1/v2 (docs/fidelity.md section 3).

Post-activation residual blocks with the stride on the 3x3 conv ("v1.5"),
optional SimCLRv2 selective kernels (which also switch on the ResNet-D stem
and shortcut) and optional squeeze-excitation. Layer sizes, initialisers and
padding follow the reference TF2 implementation so that parameter counts and
published checkpoints line up one to one.

Parameter layout (all convs are bias-free and hold a single 'kernel' leaf;
BN layers hold 'scale' and 'bias', their moving statistics live in the
'batch_stats' collection)::

  stem_conv, stem_bn                       (standard or CIFAR stem)
  stem_conv{1,2,3}, stem_bn{1,2,3}         (ResNet-D stem, sk_ratio > 0)
  stage{s}_block{b}/conv{i}, bn{i}         (s, b and i count from 1)
  stage{s}_block{b}/shortcut_conv, shortcut_bn
  stage{s}_block{b}/sk_conv/...            (bottleneck with sk_ratio > 0)
  stage{s}_block{b}/se/{reduce,expand}     (se_ratio > 0; convs with a bias)

With `mutable=["intermediates"]` the forward pass also returns the
reference's endpoints: `initial_conv` (the last stem conv, before its BN),
`initial_max_pool` (after the stem's BN-ReLU and max-pool; the CIFAR stem
has no pool) and `block_group1..4` (each stage's output).
"""

import functools
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from simclr_jax.models.conv_impl import conv_function

Dtype = Any
ModuleDef = Callable[..., nn.Module]
Padding = Union[str, Sequence[Tuple[int, int]]]

# Blocks per stage for every supported depth.
STAGE_SIZES = {
  18: (2, 2, 2, 2),
  34: (3, 4, 6, 3),
  50: (3, 4, 6, 3),
  101: (3, 4, 23, 3),
  152: (3, 8, 36, 3),
  200: (3, 24, 36, 3),
}
BASIC_BLOCK_DEPTHS = (18, 34)
BOTTLENECK_EXPANSION = 4

# TF's VarianceScaling() default: scale 1, fan_in, truncated normal.
conv_kernel_init = nn.initializers.variance_scaling(
  1.0, "fan_in", "truncated_normal"
)


def batch_norm(
  *,
  train: bool,
  momentum: float,
  epsilon: float,
  dtype: Any,
  axis_name: Optional[str],
) -> Callable[..., nn.BatchNorm]:
  """BatchNorm with the reference settings; statistics and params in f32."""
  return functools.partial(
    nn.BatchNorm,
    use_running_average=not train,
    momentum=momentum,
    epsilon=epsilon,
    dtype=dtype,
    param_dtype=jnp.float32,
    axis_name=axis_name,
  )


def fixed_padding(kernel_size: int, strides: int) -> Padding:
  """Padding rule of the reference: SAME for stride 1, else explicit symmetric.

  For stride > 1 the input is padded by (k-1)//2 before and the rest after,
  independent of the input size (unlike SAME, whose split depends on it), and
  the conv itself is VALID.
  """
  if strides == 1:
    return "SAME"
  total = kernel_size - 1
  before = total // 2
  return ((before, total - before), (before, total - before))


def conv_fixed_padding(
  features: int,
  kernel_size: int,
  strides: int = 1,
  dtype: Dtype = jnp.float32,
  name: Optional[str] = None,
  conv_impl: str = "xla",
) -> nn.Conv:
  """A bias-free square conv with the reference padding rule and init.

  `conv_impl` picks how it is computed (models/conv_impl.py); every choice
  has the same parameters and the same result up to float rounding.
  """
  return nn.Conv(
    features=features,
    kernel_size=(kernel_size, kernel_size),
    strides=(strides, strides),
    padding=fixed_padding(kernel_size, strides),
    use_bias=False,
    kernel_init=conv_kernel_init,
    dtype=dtype,
    param_dtype=jnp.float32,
    name=name,
    conv_general_dilated=conv_function(conv_impl),
  )


class SqueezeExcite(nn.Module):
  """Channel-wise squeeze-excitation (https://arxiv.org/abs/1709.01507).

  As in the reference, the squeeze width is max(1, int(filters * se_ratio))
  where `filters` is the block's base width (not its 4x bottleneck output),
  and both 1x1 convs carry a bias.
  """

  filters: int
  se_ratio: float
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    conv = functools.partial(
      nn.Conv,
      kernel_size=(1, 1),
      use_bias=True,
      kernel_init=conv_kernel_init,
      dtype=self.dtype,
      param_dtype=jnp.float32,
    )
    s = jnp.mean(x, axis=(1, 2), keepdims=True)
    s = conv(max(1, int(self.filters * self.se_ratio)), name="reduce")(s)
    s = conv(x.shape[-1], name="expand")(nn.relu(s))
    return x * nn.sigmoid(s).astype(x.dtype)


class SelectiveKernelConv(nn.Module):
  """SimCLRv2 selective-kernel 3x3 conv (https://arxiv.org/abs/1903.06586).

  One conv produces 2x filters, split into two 3x3 paths (each followed by
  BN + ReLU); a gate computed from the global pool of their sum picks a
  per-channel softmax mix of the two.
  """

  filters: int
  strides: int
  sk_ratio: float
  norm: ModuleDef
  dtype: Dtype = jnp.float32
  min_dim: int = 32
  conv: ModuleDef = conv_fixed_padding

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    x = self.conv(2 * self.filters, 3, self.strides, name="conv")(x)
    x = nn.relu(self.norm(name="bn")(x))
    paths = jnp.stack(jnp.split(x, 2, axis=-1))  # (2, B, H, W, C)

    mid_dim = max(int(self.filters * self.sk_ratio), self.min_dim)
    gate = jnp.mean(jnp.sum(paths, axis=0), axis=(1, 2), keepdims=True)
    gate = self.conv(mid_dim, 1, 1, name="reduce")(gate)
    gate = nn.relu(self.norm(name="reduce_bn")(gate))
    gate = self.conv(2 * self.filters, 1, 1, name="expand")(gate)
    mixing = jnp.stack(jnp.split(gate, 2, axis=-1))  # (2, B, 1, 1, C)
    mixing = jax.nn.softmax(mixing.astype(jnp.float32), axis=0)
    return jnp.sum(paths * mixing.astype(paths.dtype), axis=0)


def projection_shortcut(
  x: jnp.ndarray,
  features: int,
  strides: int,
  resnet_d: bool,
  norm: ModuleDef,
  conv: ModuleDef,
) -> jnp.ndarray:
  """1x1 projection shortcut (+BN) used by the first block of each stage.

  With `resnet_d` (SK models) the downsampling is a 2x2 average pool followed
  by a stride-1 1x1 conv. Like the reference, stride-1 blocks still get a 2x2
  stride-1 average pool (TF 'SAME', padding excluded from the mean), and the
  stride-2 pool pads 0 before / 1 after with zeros that do count.
  """
  if resnet_d:
    x = nn.avg_pool(
      x,
      (2, 2),
      strides=(strides, strides),
      padding=((0, 1), (0, 1)),
      count_include_pad=strides > 1,
    )
    x = conv(features, 1, 1, name="shortcut_conv")(x)
  else:
    x = conv(features, 1, strides, name="shortcut_conv")(x)
  return norm(name="shortcut_bn")(x)


class BasicBlock(nn.Module):
  """Two 3x3 convs (ResNet-18/34); the last BN starts with gamma = 0."""

  filters: int
  strides: int
  use_projection: bool
  norm: ModuleDef
  resnet_d: bool = False
  se_ratio: float = 0.0
  dtype: Dtype = jnp.float32
  conv: ModuleDef = conv_fixed_padding

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    shortcut = x
    if self.use_projection:
      shortcut = projection_shortcut(
        x, self.filters, self.strides, self.resnet_d, self.norm, self.conv
      )
    y = self.conv(self.filters, 3, self.strides, name="conv1")(x)
    y = nn.relu(self.norm(name="bn1")(y))
    y = self.conv(self.filters, 3, 1, name="conv2")(y)
    y = self.norm(name="bn2", scale_init=nn.initializers.zeros)(y)
    if self.se_ratio > 0:
      y = SqueezeExcite(self.filters, self.se_ratio, self.dtype, name="se")(y)
    return nn.relu(y + shortcut)


class BottleneckBlock(nn.Module):
  """1x1 -> 3x3 (strided, optionally selective-kernel) -> 1x1 (4x filters)."""

  filters: int
  strides: int
  use_projection: bool
  norm: ModuleDef
  sk_ratio: float = 0.0
  se_ratio: float = 0.0
  dtype: Dtype = jnp.float32
  conv: ModuleDef = conv_fixed_padding

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    out_filters = BOTTLENECK_EXPANSION * self.filters
    shortcut = x
    if self.use_projection:
      shortcut = projection_shortcut(
        x, out_filters, self.strides, self.sk_ratio > 0, self.norm, self.conv
      )
    y = self.conv(self.filters, 1, 1, name="conv1")(x)
    y = nn.relu(self.norm(name="bn1")(y))
    if self.sk_ratio > 0:
      y = SelectiveKernelConv(
        self.filters,
        self.strides,
        self.sk_ratio,
        self.norm,
        self.dtype,
        conv=self.conv,
        name="sk_conv",
      )(y)
    else:
      y = self.conv(self.filters, 3, self.strides, name="conv2")(y)
      y = nn.relu(self.norm(name="bn2")(y))
    y = self.conv(out_filters, 1, 1, name="conv3")(y)
    y = self.norm(name="bn3", scale_init=nn.initializers.zeros)(y)
    if self.se_ratio > 0:
      y = SqueezeExcite(self.filters, self.se_ratio, self.dtype, name="se")(y)
    return nn.relu(y + shortcut)


class ResNet(nn.Module):
  """ResNet v1 encoder; returns globally average-pooled float32 features.

  Attributes:
    depth: 18 or 34 (basic blocks), 50, 101, 152 or 200 (bottlenecks).
    width_multiplier: scales every conv, the stem included (may be fractional;
      channel counts are truncated with int()).
    sk_ratio: > 0 enables SimCLRv2 selective kernels plus the ResNet-D stem
      and shortcut.
    se_ratio: > 0 enables squeeze-excitation in every block.
    cifar_stem: 3x3 stride-1 conv + BN + ReLU, no max-pool (images <= 32 px).
    bn_momentum: flax convention, ra = m * ra + (1 - m) * batch.
    bn_epsilon: BN epsilon.
    dtype: compute dtype of convs and BN outputs; params and BN statistics
      stay float32.
    bn_axis_name: mapped axis to average BN statistics over (global BN inside
      shard_map); None uses the batch the function sees.
    conv_impl: how convolutions are computed (models/conv_impl.py: 'xla',
      'patches_small', 'patches'); the parameters and, up to float rounding,
      the outputs do not depend on it.
    remat: recompute each residual block's activations in the backward pass
      (`flax.linen.remat`) instead of keeping them: less memory, more FLOPs.
  """

  depth: int = 50
  width_multiplier: float = 1.0
  sk_ratio: float = 0.0
  se_ratio: float = 0.0
  cifar_stem: bool = False
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  dtype: Dtype = jnp.float32
  bn_axis_name: Optional[str] = None
  conv_impl: str = "xla"
  remat: bool = False

  def __post_init__(self):
    if self.depth not in STAGE_SIZES:
      raise ValueError(
        f"Unsupported ResNet depth {self.depth!r}; valid depths are "
        f"{', '.join(str(d) for d in STAGE_SIZES)}."
      )
    if self.width_multiplier <= 0 or int(64 * self.width_multiplier) < 1:
      raise ValueError(
        f"width_multiplier must give at least one stem channel "
        f"(64 * width_multiplier >= 1); got {self.width_multiplier!r}."
      )
    super().__post_init__()

  def _width(self, base: int) -> int:
    return int(base * self.width_multiplier)

  @property
  def feature_dim(self) -> int:
    """Size of the pooled representation: 512w (18/34) or 2048w."""
    if self.depth in BASIC_BLOCK_DEPTHS:
      return self._width(512)
    return BOTTLENECK_EXPANSION * self._width(512)

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    """Maps images (B, H, W, 3) in [0, 1] to features (B, feature_dim) f32."""
    norm = batch_norm(
      train=train,
      momentum=self.bn_momentum,
      epsilon=self.bn_epsilon,
      dtype=self.dtype,
      axis_name=self.bn_axis_name,
    )
    conv = functools.partial(
      conv_fixed_padding, dtype=self.dtype, conv_impl=self.conv_impl
    )
    x = jnp.asarray(x, self.dtype)

    stem_width = self._width(64)
    if self.cifar_stem:
      x = conv(stem_width, 3, 1, name="stem_conv")(x)
      self.sow("intermediates", "initial_conv", x)
      x = nn.relu(norm(name="stem_bn")(x))
    else:
      if self.sk_ratio > 0:  # ResNet-D stem: three 3x3 convs.
        for i, (width, strides) in enumerate(
          ((stem_width // 2, 2), (stem_width // 2, 1), (stem_width, 1)), 1
        ):
          x = conv(width, 3, strides, name=f"stem_conv{i}")(x)
          if i == 3:
            self.sow("intermediates", "initial_conv", x)
          x = nn.relu(norm(name=f"stem_bn{i}")(x))
      else:
        x = conv(stem_width, 7, 2, name="stem_conv")(x)
        self.sow("intermediates", "initial_conv", x)
        x = nn.relu(norm(name="stem_bn")(x))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
    self.sow("intermediates", "initial_max_pool", x)

    basic = self.depth in BASIC_BLOCK_DEPTHS
    block_cls = BasicBlock if basic else BottleneckBlock
    if self.remat:
      block_cls = nn.remat(block_cls)
    for stage, num_blocks in enumerate(STAGE_SIZES[self.depth]):
      filters = self._width(64 * 2**stage)
      for block in range(num_blocks):
        # The reference projects the shortcut in the first block of every
        # stage, including the stride-1 first stage.
        kwargs = dict(
          filters=filters,
          strides=2 if stage > 0 and block == 0 else 1,
          use_projection=block == 0,
          norm=norm,
          se_ratio=self.se_ratio,
          dtype=self.dtype,
          conv=conv,
          name=f"stage{stage + 1}_block{block + 1}",
        )
        if basic:
          kwargs["resnet_d"] = self.sk_ratio > 0
        else:
          kwargs["sk_ratio"] = self.sk_ratio
        x = block_cls(**kwargs)(x)
      self.sow("intermediates", f"block_group{stage + 1}", x)

    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))
