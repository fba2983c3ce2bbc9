"""Projection head, linear-eval head and the full SimCLR model (docs/fidelity.md section 4).

The projection head follows the reference: every layer is a bias-free Dense
(init normal, stddev 0.01) followed by BN. Middle layers keep the input width
and use BN with offset plus ReLU; the last layer maps to `out_dim` with a BN
that has a scale but no offset, and no ReLU. SimCLR v1 uses 2 layers, v2 3.

The online linear-eval head sees `stop_gradient(representation)`, so training
it jointly with the contrastive objective never changes the encoder.

`FineTuneModel` is the network of semi-supervised fine-tuning: backbone, the
first k projection-head layers and a classifier, all trained;
`init_from_pretrained` copies a pretrained `SimCLRModel`'s weights into it.
"""

from typing import Any, Dict, List, Optional, Tuple, Union

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from simclr_jax.errors import UserError
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
        f"ProjectionHead needs num_layers >= 1; got {self.num_layers!r}."
      )
    super().__post_init__()

  @nn.compact
  def __call__(
    self,
    x: jnp.ndarray,
    train: bool,
    return_hiddens: bool = False,
    layers: Optional[int] = None,
  ) -> Union[jnp.ndarray, Tuple[jnp.ndarray, List[jnp.ndarray]]]:
    """Projects (B, F) features to (B, out_dim) float32.

    With `return_hiddens`, also returns the float32 output of every layer
    ([h_0, ..., h_{L-1}], h_{L-1} == z); h_0 is "head layer 1", the input of
    SimCLRv2 fine-tuning.

    `layers` = k runs (and creates parameters for) only the first k layers,
    unchanged, and returns the output of layer k: fine-tuning from the middle
    of the head keeps the pretrained layers' names and shapes.
    """
    run = self.num_layers if layers is None else layers
    if not 1 <= run <= self.num_layers:
      raise ValueError(
        f"layers must be in [1, {self.num_layers}]; got {layers!r}."
      )
    norm = batch_norm(
      train=train,
      momentum=self.bn_momentum,
      epsilon=self.bn_epsilon,
      dtype=self.dtype,
      axis_name=self.bn_axis_name,
    )
    hiddens = []
    for j in range(run):
      last = j == self.num_layers - 1
      features = self.out_dim if last else x.shape[-1]
      x = nn.Dense(
        features,
        use_bias=False,
        kernel_init=dense_kernel_init,
        dtype=self.dtype,
        param_dtype=jnp.float32,
        name=f"dense_{j}",
      )(x)
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
    return nn.Dense(
      self.num_classes,
      use_bias=True,
      kernel_init=dense_kernel_init,
      dtype=jnp.float32,
      param_dtype=jnp.float32,
      name="linear",
    )(jnp.asarray(x, jnp.float32))


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
        self.num_classes, name="head_supervised"
      )(jax.lax.stop_gradient(representation))
    return outputs


class FineTuneModel(nn.Module):
  """Backbone + the first `head_layers` projection-head layers + classifier.

  The representation that is fine-tuned is the backbone output
  (`head_layers=0`, SimCLR v1) or the output of projection-head layer k
  (v2 uses k = 1: Dense + BN + ReLU). Unlike `SimCLRModel`, the classifier
  ('head_supervised') sees the representation without stop_gradient, so the
  whole network trains. Parameter scopes 'backbone' and
  'projection_head/{dense,bn}_j' match `SimCLRModel`'s, so pretrained
  weights copy over by path (`init_from_pretrained`).
  """

  backbone: ResNet
  projection_head: Optional[ProjectionHead]
  num_classes: int
  head_layers: int = 0

  def __post_init__(self):
    available = self.projection_head.num_layers if self.projection_head else 0
    if not 0 <= self.head_layers <= available:
      raise UserError(
        f"head_layers={self.head_layers!r} must be in [0, {available}]: "
        f"the projection head has {available} layer(s); use 0 to fine-tune "
        "from the backbone output (v1) or 1 (v2)."
      )
    if self.num_classes < 1:
      raise UserError(
        f"fine-tuning needs num_classes >= 1, got "
        f"{self.num_classes!r}; use a labelled dataset."
      )
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> Dict[str, jnp.ndarray]:
    """Returns 'representation' (the classifier's input) and 'logits', f32."""
    h = self.backbone(x, train=train)
    if self.head_layers:
      h = self.projection_head(h, train=train, layers=self.head_layers)
    logits = SupervisedHead(self.num_classes, name="head_supervised")(h)
    return {"representation": h, "logits": logits}


def finetune_model(
  pretrained: SimCLRModel, *, num_classes: int, head_layers: int
) -> FineTuneModel:
  """The fine-tuning network for a pretraining `SimCLRModel`'s architecture."""
  return FineTuneModel(
    backbone=pretrained.backbone,
    projection_head=pretrained.projection_head,
    num_classes=num_classes,
    head_layers=head_layers,
  )


# Scopes copied from the pretrained model; 'head_supervised' starts fresh.
PRETRAINED_SCOPES = ("backbone", "projection_head")


def _flat(tree: Any) -> Dict[Tuple[str, ...], Any]:
  return flax.traverse_util.flatten_dict(flax.core.unfreeze(tree))


def _describe(
  paths: List[Tuple[str, ...]],
  limit: int = 5,
  shapes: Optional[Dict[Tuple[str, ...], Any]] = None,
) -> str:
  def one(path):
    if shapes is None:
      return "/".join(path)
    return "/".join(path) + " {} vs {}".format(*shapes[path])

  shown = ", ".join(one(p) for p in paths[:limit])
  more = len(paths) - limit
  return shown + (f" and {more} more" if more > 0 else "")


def init_from_pretrained(
  finetune_variables: Dict[str, Any],
  pretrained_variables: Dict[str, Any],
) -> Dict[str, Any]:
  """Copies the pretrained backbone and projection-head layers by path.

  Every 'backbone' and 'projection_head' leaf of `finetune_variables` (params
  and BN statistics) is replaced by the pretrained leaf at the same path;
  the classifier keeps its fresh initialisation. The backbones must have the
  same architecture (same leaves and shapes); the pretrained head may have
  more layers than are fine-tuned. Raises UserError naming the paths that
  are missing or differ.
  """
  if "backbone" not in pretrained_variables.get("params", {}):
    raise UserError(
      "the pretrained variables have no 'params/backbone'; pass "
      "{'params': ..., 'batch_stats': ...} of a pretrained SimCLRModel "
      "(e.g. a restored TrainState's params and batch_stats)."
    )
  missing, mismatched, unexpected = [], [], []
  shapes, result = {}, {}
  # 'params' first, so the messages name weights before BN statistics.
  for collection in sorted(finetune_variables, key=lambda c: c != "params"):
    tree = finetune_variables[collection]
    flat = _flat(tree)
    source = _flat(pretrained_variables.get(collection, {}))
    for path, leaf in flat.items():
      if path[0] not in PRETRAINED_SCOPES:
        continue
      where = (collection,) + path
      if path not in source:
        missing.append(where)
      elif tuple(source[path].shape) != tuple(leaf.shape):
        mismatched.append(where)
        shapes[where] = (tuple(source[path].shape), tuple(leaf.shape))
      else:
        flat[path] = jnp.asarray(source[path], dtype=leaf.dtype)
    unexpected += [
      (collection,) + p for p in source if p[0] == "backbone" and p not in flat
    ]
    result[collection] = flax.traverse_util.unflatten_dict(flat)
  problems = []
  if missing:
    problems.append(f"missing in the pretrained weights: {_describe(missing)}")
  if mismatched:
    problems.append(
      "shapes differ (pretrained vs fine-tuning): "
      f"{_describe(mismatched, shapes=shapes)}"
    )
  if unexpected:
    problems.append(
      "pretrained backbone weights the fine-tuning model lacks: "
      f"{_describe(unexpected)}"
    )
  if problems:
    raise UserError(
      "the pretrained checkpoint does not fit the fine-tuning model ("
      + "; ".join(problems)
      + "); build the fine-tuning model with the pretraining run's model "
      "settings (depth, width_multiplier, sk_ratio, se_ratio, cifar_stem, "
      "proj_head_layers)."
    )
  return result
