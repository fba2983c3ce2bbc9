"""Optimizers and learning-rate schedule of SimCLR (docs/fidelity.md section 2).

LARS is `optax.lars` with its two masks set from the parameter pytree paths:
weight decay and the trust ratio apply to conv/dense kernels only, never to
BatchNorm scale/bias, biases, or the supervised (linear-eval) head, which is
what the reference's name-based exclusion list
`['batch_normalization', 'bias', 'head_supervised']` selects for our models.
The schedule is the reference's linear warmup followed by cosine decay, with
the arithmetic done in the same order so it matches the reference values to
float32 rounding.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

# Top-level parameter scope of the linear-eval head trained on frozen features.
SUPERVISED_HEAD = "head_supervised"

MaskFn = Callable[[Any], Any]


def total_steps(
  *, batch_size: int, num_examples: int, epochs: float, train_steps: int = 0
) -> int:
  """Number of training steps: `train_steps` if set, else the reference's
  `num_examples * epochs // batch_size + 1`."""
  return int(train_steps or num_examples * epochs // batch_size + 1)


def warmup_steps(
  *, batch_size: int, num_examples: int, warmup_epochs: float
) -> int:
  """Linear-warmup steps, `round(warmup_epochs * num_examples // batch_size)`
  as in the reference (floor division first, so fractional epochs work)."""
  return int(round(warmup_epochs * num_examples // batch_size))


def scaled_learning_rate(
  base_learning_rate: float, batch_size: int, scaling: str
) -> float:
  """Peak learning rate: `base * B / 256` ("linear") or `base * sqrt(B)`
  ("sqrt"); e.g. 0.3 linear == 0.075 sqrt == 4.8 at B = 4096."""
  if scaling == "linear":
    return base_learning_rate * batch_size / 256.0
  if scaling == "sqrt":
    return base_learning_rate * math.sqrt(batch_size)
  raise ValueError(
    f"Unknown learning-rate scaling {scaling!r}; use 'linear' or 'sqrt'."
  )


def step_schedule(
  *,
  base_learning_rate: float,
  batch_size: int,
  scaling: str,
  total_steps: int,
  warmup_steps: int = 0,
) -> optax.Schedule:
  """Linear warmup over `warmup_steps` from 0 to the scaled rate, then cosine
  decay to 0 at `total_steps` (fine-tuning and linear evaluation count in
  steps; `learning_rate_schedule` is the epoch-based form).

  Written out rather than built from `optax.warmup_cosine_decay_schedule`:
  optax's linear ramp is `peak - peak * (1 - t / w)`, whose cancellation
  costs ~1e-4 relative error in the first warmup steps, whereas the reference
  computes `t / w * peak`. The decay is Keras' `CosineDecay(peak, T - w)`
  evaluated at `t - w`, clamped so the rate is exactly 0 from step T on.
  """
  peak = scaled_learning_rate(base_learning_rate, batch_size, scaling)
  warmup, total = int(warmup_steps), int(total_steps)
  # Guard the division only; with total <= warmup the rate after warmup is
  # 0 (the decay is already complete), as with any step >= total.
  decay_steps = max(total - warmup, 1)

  def schedule(count: jax.typing.ArrayLike) -> jnp.ndarray:
    step = jnp.asarray(count, jnp.float32)
    if warmup:
      warmup_lr = step / float(warmup) * peak
    else:
      warmup_lr = jnp.full_like(step, peak)
    done = jnp.clip(step - warmup, 0.0, float(decay_steps)) / decay_steps
    cosine_lr = peak * (0.5 * (1.0 + jnp.cos(jnp.pi * done)))
    if total <= warmup:
      cosine_lr = jnp.zeros_like(step)
    return jnp.where(step < warmup, warmup_lr, cosine_lr)

  return schedule


def learning_rate_schedule(
  *,
  base_learning_rate: float,
  batch_size: int,
  num_examples: int,
  epochs: float,
  warmup_epochs: float,
  scaling: str,
  train_steps: int = 0,
) -> optax.Schedule:
  """`step_schedule` with the reference's step counts from epochs
  (`warmup_steps`, `total_steps`; `train_steps` > 0 overrides the total)."""
  return step_schedule(
    base_learning_rate=base_learning_rate,
    batch_size=batch_size,
    scaling=scaling,
    total_steps=total_steps(
      batch_size=batch_size,
      num_examples=num_examples,
      epochs=epochs,
      train_steps=train_steps,
    ),
    warmup_steps=warmup_steps(
      batch_size=batch_size,
      num_examples=num_examples,
      warmup_epochs=warmup_epochs,
    ),
  )


def _key_name(entry: Any) -> Any:
  """The name of one pytree path entry (dict key, attribute or index)."""
  for attr in ("key", "name", "idx"):
    if hasattr(entry, attr):
      return getattr(entry, attr)
  return entry


def _path_names(path: tuple[Any, ...]) -> list[Any]:
  """Path entry names, dropping a leading Flax 'params' collection key and
  the trailing `.value` attribute of Flax NNX `Param` leaves."""
  if path and isinstance(path[-1], jax.tree_util.GetAttrKey):
    if path[-1].name == "value":
      path = path[:-1]
  names = [_key_name(entry) for entry in path]
  if names and names[0] == "params":
    names = names[1:]
  return names


def kernel_mask(params: Any) -> Any:
  """True for every leaf named 'kernel' (conv/dense weights), wherever it is.

  The weight-decay mask of linear evaluation, and the reference's effective
  decay set during pretraining: it also adds `wd * ||W||^2 / 2` for the
  supervised head's kernel as a loss term (see `lars`).
  """

  def is_kernel(path, _):
    names = _path_names(path)
    return bool(names) and names[-1] == "kernel"

  return jax.tree_util.tree_map_with_path(is_kernel, params)


def lars_mask(params: Any) -> Any:
  """True where LARS applies weight decay and the trust ratio.

  That is every 'kernel' leaf except those under the top-level
  'head_supervised' scope; False for BatchNorm 'scale'/'bias', dense 'bias'
  and the whole supervised head. Decided from the pytree path, so a module
  that merely has 'bias' or 'head_supervised' inside a longer name is not
  misclassified.
  """

  def applies(path, _):
    names = _path_names(path)
    return bool(names) and names[-1] == "kernel" and names[0] != SUPERVISED_HEAD

  return jax.tree_util.tree_map_with_path(applies, params)


def _mask(mask_fn: MaskFn, params: Any) -> Any:
  """A mask tree computed now when params are given, else the function
  itself (optax then calls it on the params/updates it sees)."""
  return mask_fn if params is None else mask_fn(params)


def lars(
  learning_rate: optax.ScalarOrSchedule,
  params: Any = None,
  *,
  weight_decay: float,
  momentum: float = 0.9,
  trust_coefficient: float = 0.001,
  mask_fn: MaskFn = lars_mask,
  weight_decay_mask_fn: MaskFn | None = None,
) -> optax.GradientTransformation:
  """The reference LARS: `optax.lars` with masks from the param paths.

  Per variable: `g += wd * w` where decayed; `g *= trust_coefficient * |w| /
  |g|` where adapted (1 if either norm is 0); `v = momentum * v + lr * g`;
  `w -= v` (classic momentum, eps 0, no Nesterov).

  Args:
    learning_rate: constant or schedule (see `learning_rate_schedule`).
    params: the parameter pytree, used to build the masks eagerly; None to
      let optax apply `mask_fn` to whatever tree it is given.
    weight_decay: 1e-6 (v1) or 1e-4 (v2) in the reference recipes.
    momentum: momentum decay.
    trust_coefficient: the reference's `eeta`.
    mask_fn: params -> bool tree of where decay and the trust ratio apply.
    weight_decay_mask_fn: a different decay mask, if wanted. The reference
      pretraining also decays the supervised head's kernel through an L2 loss
      term (gradient `wd * W`, no trust ratio); `kernel_mask` here reproduces
      that inside the optimizer. Do not combine it with such a loss term.
  """
  decay_mask_fn = (
    mask_fn if weight_decay_mask_fn is None else weight_decay_mask_fn
  )
  return optax.lars(
    learning_rate,
    weight_decay=weight_decay,
    weight_decay_mask=_mask(decay_mask_fn, params),
    trust_coefficient=trust_coefficient,
    eps=0.0,
    trust_ratio_mask=_mask(mask_fn, params),
    momentum=momentum,
    nesterov=False,
  )


def sgd_nesterov(
  learning_rate: optax.ScalarOrSchedule,
  *,
  momentum: float = 0.9,
  weight_decay: float = 0.0,
  params: Any = None,
) -> optax.GradientTransformation:
  """SGD with Nesterov momentum for linear evaluation.

  Weight decay (`g += wd * w`) applies to kernels only (`kernel_mask`), never
  to biases or BatchNorm parameters. The learning rate is applied before the
  momentum trace, as in Keras' SGD and in LARS, so schedules behave as in the
  reference: `v = m * v - lr * g; w += m * v - lr * g`.
  """
  transforms = []
  if weight_decay:
    transforms.append(
      optax.add_decayed_weights(weight_decay, mask=_mask(kernel_mask, params))
    )
  transforms += [
    optax.scale_by_learning_rate(learning_rate),
    optax.trace(decay=momentum, nesterov=True),
  ]
  return optax.chain(*transforms)
