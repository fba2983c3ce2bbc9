"""Projection head, linear-eval head and the full SimCLR model (spec section 4).

The projection head follows the reference: every layer is a bias-free Dense
(init normal, stddev 0.01) followed by BN. Middle layers keep the input width
and use BN with offset plus ReLU; the last layer maps to `out_dim` with a BN
that has a scale but no offset, and no ReLU. SimCLR v1 uses 2 layers, v2 3.

The online linear-eval head sees `stop_gradient(representation)`, so training
it jointly with the contrastive objective never changes the encoder.
"""

from typing import Any, Dict, List, Optional, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from simclr_jax.models.resnet import ResNet
from simclr_jax.models.resnet import batch_norm

Dtype = Any

dense_kernel_init = nn.initializers.normal(stddev=0.01)


class ProjectionHead(nn.Module):
  """Nonlinear SimCLR projection head g(h) = [Dense -> BN (-> ReLU)] x L.

  Attributes:
    num_layers: number of Dense+BN layers (v1: 2, v2: 3).
    out_dim: width of the last layer (the contrastive embedding).
    bn_momentum: flax convention, ra = m * ra + (1 - m) * batch.
    bn_epsilon: BN epsilon.
    dtype: compute dtype; params and BN statistics stay float32.
    bn_axis_name: mapped axis for global BN inside shard_map (as in ResNet;
      the reference syncs the head's BN too).
  """
  num_layers: int = 2
  out_dim: int = 128
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  dtype: Dtype = jnp.float32
  bn_axis_name: Optional[str] = None

  def __post_init__(self):
    if self.num_layers < 1:
      raise ValueError(
          f"ProjectionHead needs num_layers >= 1; got {self.num_layers!r}.")
    super().__post_init__()

  @nn.compact
  def __call__(
      self, x: jnp.ndarray, train: bool, return_hiddens: bool = False
  ) -> Union[jnp.ndarray, Tuple[jnp.ndarray, List[jnp.ndarray]]]:
    """Projects (B, F) features to (B, out_dim) float32.

    With `return_hiddens`, also returns the float32 output of every layer
    ([h_0, ..., h_{L-1}], h_{L-1} == z); h_0 is "head layer 1", the input of
    SimCLRv2 fine-tuning.
    """
    norm = batch_norm(train=train, momentum=self.bn_momentum,
                      epsilon=self.bn_epsilon, dtype=self.dtype,
                      axis_name=self.bn_axis_name)
    hiddens = []
    for j in range(self.num_layers):
      last = j == self.num_layers - 1
      features = self.out_dim if last else x.shape[-1]
      x = nn.Dense(features, use_bias=False, kernel_init=dense_kernel_init,
                   dtype=self.dtype, param_dtype=jnp.float32,
                   name=f"dense_{j}")(x)
      x = norm(use_bias=not last, name=f"bn_{j}")(x)
      if not last:
        x = nn.relu(x)
      hiddens.append(x.astype(jnp.float32))
    z = hiddens[-1]
    if return_hiddens:
      return z, hiddens
    return z


class SupervisedHead(nn.Module):
  """Linear-eval / fine-tuning classifier: Dense(num_classes) with bias.

  Kernel init normal(stddev 0.01), bias zeros, computed in float32 (it is
  tiny, and its logits feed a softmax cross-entropy).
  """
  num_classes: int

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """Maps (B, F) features to (B, num_classes) float32 logits."""
    return nn.Dense(self.num_classes, use_bias=True,
                    kernel_init=dense_kernel_init, dtype=jnp.float32,
                    param_dtype=jnp.float32,
                    name="linear")(jnp.asarray(x, jnp.float32))


class SimCLRModel(nn.Module):
  """Backbone + projection head + optional online linear-eval head.

  Top-level parameter scopes: 'backbone', 'projection_head' and (when
  num_classes > 0) 'head_supervised'.
  """
  backbone: ResNet
  projection_head: ProjectionHead
  num_classes: int

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> Dict[str, jnp.ndarray]:
    """Returns 'representation', 'projection' and (if any) 'logits', all f32.

    The logits are computed on stop_gradient(representation) so that the
    linear-eval loss cannot reach the encoder.
    """
    representation = self.backbone(x, train=train)
    outputs = {
        "representation": representation,
        "projection": self.projection_head(representation, train=train),
    }
    if self.num_classes > 0:
      outputs["logits"] = SupervisedHead(
          self.num_classes, name="head_supervised")(
              jax.lax.stop_gradient(representation))
    return outputs
