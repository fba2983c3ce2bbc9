"""Fast linear evaluation: L2-regularised softmax regression on frozen features.

Not the SimCLR paper's exact protocol. It is modelled on the paper's
transfer-learning evaluation (appendix B.8: features extracted once
without augmentation, a multinomial logistic regression fitted with L-BFGS,
the L2 strength chosen on a validation split), but the paper searched 45
log-spaced L2 values between 1e-6 and 1e5, whereas `L2_GRID` here has 7
(1e-6 ... 1, one per decade) on standardised features, so numbers from the
two cannot be compared. The SimCLR linear-evaluation numbers come from SGD
on augmented images (`linear_eval.py`). Here everything runs on
device: the standardised training features are uploaded once (rows split
over the mesh devices when a mesh is given), subsets are selected by weight
vectors rather than copies, and each fit is one jitted `lax.while_loop`
around `optax.lbfgs` (zoom line search). The objective

  mean_i CE(x_i W + b, y_i) + l2 / 2 * ||W||^2      (bias not penalised)

is strictly convex for l2 > 0, so the solver's answer is the unique optimum
(up to `tol`) whatever the starting point; that is why the grid can be swept
from strong to weak regularisation with warm starts, and why the result is
deterministic.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from simclr_jax import sharding
from simclr_jax.eval import features
from simclr_jax.eval.base import EvalContext, EvalResult, FeatureEvaluator
from simclr_jax.eval.base import Features

from simclr_jax.configlib.sections import LogisticSettings, RunConfig
from simclr_jax.errors import UserError


# L2 strengths tried by default: 1e-6, 1e-5, ..., 1e0 (one per decade), in
# units of the mean cross-entropy on standardised features.
L2_GRID: tuple[float, ...] = tuple(float(10.0**e) for e in range(-6, 1))


def stratified_split(
  labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
  """(fit, validation) index arrays, sorted; `fraction` of every class held out.

  Each class gives round(fraction * n_c) examples to validation, but always
  keeps at least one for fitting. Deterministic in (labels, fraction, seed).
  """
  if not 0.0 < fraction < 1.0:
    raise UserError(
      f"the probe's validation fraction must be in (0, 1), got {fraction}."
    )
  labels = np.asarray(labels)
  rng = np.random.default_rng(seed)
  val = []
  for c in np.unique(labels):
    members = np.flatnonzero(labels == c)
    take = min(int(round(fraction * len(members))), len(members) - 1)
    val.append(rng.permutation(members)[:take])
  val = np.sort(np.concatenate(val)).astype(np.int64)
  fit = np.setdiff1d(np.arange(len(labels)), val)
  return fit, val


@jax.jit
def _moments(x: jnp.ndarray, w: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Weighted per-feature mean and std (+1e-6), two passes for accuracy."""
  mean = jnp.sum(w[:, None] * x, 0)
  var = jnp.sum(w[:, None] * (x - mean) ** 2, 0)
  return mean, jnp.sqrt(var) + 1e-6


@functools.partial(jax.jit, donate_argnums=0)
def _standardize(
  x: jnp.ndarray, mean: jnp.ndarray, std: jnp.ndarray
) -> jnp.ndarray:
  return (x - mean) / std


class _Data:
  """Features standardised on device, labels, and row weights, all padded to
  a multiple of the mesh size (padding rows get weight 0)."""

  def __init__(
    self,
    x: np.ndarray,
    y: np.ndarray,
    mesh: Mesh,
    moments: tuple[jax.Array, jax.Array] | None = None,
  ):
    self.n = len(x)
    self.rows = -(-self.n // mesh.size) * mesh.size
    self.sharding = sharding.batch_sharding(mesh)
    raw = sharding.put_rows(np.asarray(x, np.float32), self.rows, self.sharding)
    self.y = sharding.put_rows(
      np.asarray(y, np.int32), self.rows, self.sharding
    )
    self.moments = moments or _moments(raw, self.weights())
    self.x = _standardize(raw, *self.moments)

  def weights(self, index: np.ndarray | None = None) -> jax.Array:
    """Row weights summing to 1 over `index` (all real rows if None)."""
    w = np.zeros(self.rows, np.float32)
    w[np.arange(self.n) if index is None else index] = 1.0
    return sharding.put_rows(w / w.sum(), self.rows, self.sharding)


_LBFGS = optax.lbfgs()


@functools.partial(jax.jit, static_argnames="precision")
def _solve(
  x: jnp.ndarray,
  y: jnp.ndarray,
  w: jnp.ndarray,
  l2: jnp.ndarray,
  params: dict,
  max_iters: jnp.ndarray,
  tol: jnp.ndarray,
  *,
  precision: Any,
) -> tuple[dict, jnp.ndarray]:
  """L-BFGS from `params` until grad norm < tol or max_iters; (params, iters).

  Row weights `w` sum to 1 over the rows being fitted (0 elsewhere).
  """

  def loss(p):
    logits = jnp.dot(x, p["w"], precision=precision) + p["b"]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    return jnp.sum(w * ce) + 0.5 * l2 * jnp.sum(p["w"] ** 2)

  value_and_grad = optax.value_and_grad_from_state(loss)

  def body(carry):
    p, state = carry
    value, grad = value_and_grad(p, state=state)
    updates, state = _LBFGS.update(
      grad, state, p, value=value, grad=grad, value_fn=loss
    )
    return optax.apply_updates(p, updates), state

  def cond(carry):
    _, state = carry
    count = optax.tree.get(state, "count")
    grad_norm = optax.tree.norm(optax.tree.get(state, "grad"))
    return (count == 0) | ((count < max_iters) & (grad_norm >= tol))

  params, state = jax.lax.while_loop(cond, body, (params, _LBFGS.init(params)))
  return params, optax.tree.get(state, "count")


@functools.partial(jax.jit, static_argnames="precision")
def _hits(
  params: dict,
  x: jnp.ndarray,
  y: jnp.ndarray,
  mask: jnp.ndarray,
  *,
  precision: Any,
) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Top-1 and top-min(5, C) hit counts over the rows where `mask` is 1."""
  logits = jnp.dot(x, params["w"], precision=precision) + params["b"]
  top = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
  valid = mask > 0
  hit1 = (jnp.argmax(logits, -1) == y) & valid
  hit5 = (top == y[:, None]).any(-1) & valid
  return hit1.sum(), hit5.sum()


def _checked_grid(
  num_train: int, num_test: int, l2_grid: Sequence[float]
) -> list[float]:
  """The L2 values strongest first; UserError for empty inputs or a bad
  grid."""
  if num_train == 0 or num_test == 0:
    raise UserError(
      "the linear probe needs training and test features; got "
      f"{num_train} and {num_test} examples."
    )
  grid = sorted({float(v) for v in l2_grid}, reverse=True)
  if not grid or grid[-1] <= 0:
    raise UserError(
      f"the probe's L2 grid must be positive values, got {list(l2_grid)}."
    )
  return grid


def _accuracy(
  params: dict,
  data: _Data,
  index: np.ndarray | None = None,
  *,
  precision: Any,
) -> tuple[float, float]:
  """(top-1, top-5) over the rows in `index` (all real rows if None)."""
  hits = _hits(params, data.x, data.y, data.weights(index), precision=precision)
  return tuple(int(h) / (data.n if index is None else len(index)) for h in hits)


def _search_l2(
  grid: Sequence[float],
  fit: Callable[[float, dict], dict],
  val_accuracy: Callable[[dict], float],
  params: dict,
) -> tuple[dict[float, float], float, float, dict]:
  """Fits every strength of `grid` in order, each from the previous fit;
  returns (accuracy by l2, best l2, its accuracy, its params). Ties go to
  the earlier (stronger) value."""
  by_l2, best, best_acc, init = {}, grid[0], None, params
  for l2 in grid:
    init = fit(l2, init)
    acc = val_accuracy(init)
    by_l2[l2] = acc
    if best_acc is None or acc > best_acc:
      best, best_acc, params = l2, acc, init
  return by_l2, best, best_acc, params


def fit_logistic_regression(
  train_x: np.ndarray,
  train_y: np.ndarray,
  test_x: np.ndarray,
  test_y: np.ndarray,
  *,
  num_classes: int,
  l2: float,
  max_iters: int = 1000,
  tol: float = 1e-5,
  mesh: Mesh | None = None,
  precision: Any = "highest",
) -> dict[str, float]:
  """One fit at a fixed L2 strength; returns test "top1" and "top5"."""
  return linear_probe(
    train_x,
    train_y,
    test_x,
    test_y,
    num_classes=num_classes,
    l2_grid=(l2,),
    max_iters=max_iters,
    tol=tol,
    mesh=mesh,
    precision=precision,
  )


def linear_probe(
  train_x: np.ndarray,
  train_y: np.ndarray,
  test_x: np.ndarray,
  test_y: np.ndarray,
  *,
  num_classes: int,
  l2_grid: Sequence[float] = L2_GRID,
  val_fraction: float = 0.1,
  seed: int = 0,
  max_iters: int = 1000,
  tol: float = 1e-5,
  mesh: Mesh | None = None,
  precision: Any = "highest",
) -> dict[str, Any]:
  """Chooses the L2 strength on a held-out split, refits, scores the test set.

  Features are standardised with the mean and std of all training features
  (label-free statistics, so using them during the search leaks no label
  information). With more than one `l2_grid` value, a stratified
  `val_fraction` of the training set (seeded by `seed`) is held out, every
  strength is fitted on the rest (strongest first, each warm-started from
  the previous), the one with the best validation top-1 wins (ties go to the
  stronger one), and it is refitted on the whole training set. `max_iters`
  and `tol` (on the gradient norm) bound each L-BFGS fit; `precision` is that
  of the feature matmuls ("highest": full float32 even on TPU/GPU).

  Returns "top1", "top5" (test), "l2" (chosen), "val_top1" (its validation
  accuracy; None without a search), "val_top1_by_l2" and "iterations" (of
  the final fit).
  """
  train_x, test_x = np.asarray(train_x), np.asarray(test_x)
  grid = _checked_grid(len(train_x), len(test_x), l2_grid)
  mesh = mesh or sharding.local_mesh()
  train = _Data(train_x, train_y, mesh)

  accuracy = functools.partial(_accuracy, precision=precision)
  params = {
    "w": np.zeros((train_x.shape[1], num_classes), np.float32),
    "b": np.zeros((num_classes,), np.float32),
  }
  limits = (np.int32(max_iters), np.float32(tol))

  def fit(weights, l2, init):
    return _solve(
      train.x, train.y, weights, np.float32(l2), init, *limits,
      precision=precision,
    )  # fmt: skip

  by_l2, best, best_acc = {}, grid[0], None
  if len(grid) > 1:
    fit_idx, val_idx = stratified_split(train_y, val_fraction, seed)
    if len(val_idx) == 0:
      raise UserError(
        f"the probe's validation split is empty ({len(train_x)} training "
        "examples); use more training examples or a larger val_fraction, "
        "or pass a single L2 value to skip the search."
      )
    fit_w = train.weights(fit_idx)
    by_l2, best, best_acc, params = _search_l2(
      grid,
      lambda l2, init: fit(fit_w, l2, init)[0],
      lambda p: accuracy(p, train, val_idx)[0],
      params,
    )
  params, iterations = fit(train.weights(), best, params)
  test = _Data(test_x, test_y, mesh, train.moments)
  top1, top5 = accuracy(params, test)
  return {
    "top1": top1,
    "top5": top5,
    "l2": best,
    "val_top1": best_acc,
    "val_top1_by_l2": by_l2,
    "iterations": int(iterations),
  }


class LogisticEvaluator(FeatureEvaluator):
  """`linear_probe` on frozen train-split and eval-split features."""

  def __init__(
    self, settings: LogisticSettings, ctx: EvalContext, feature_fn: Callable
  ):
    super().__init__(ctx, feature_fn, settings.max_train_examples)
    self.settings = settings

  def score(self, train: Features, test: Features) -> EvalResult:
    s = self.settings
    out = linear_probe(
      *train,
      *test,
      num_classes=self.ctx.num_classes,
      val_fraction=s.val_fraction,
      seed=s.seed,
      max_iters=s.max_iters,
      mesh=self.ctx.mesh,
    )
    return EvalResult(
      {"linear_top1": out["top1"], "linear_top5": out["top5"]},
      {
        "method": "logistic",
        "l2": out["l2"],
        "val_top1": out["val_top1"],
        "val_top1_by_l2": {str(k): v for k, v in out["val_top1_by_l2"].items()},
      },
    )


def from_config(
  run: RunConfig, ctx: EvalContext, model: Any
) -> LogisticEvaluator:
  """The encoder of `model` judged by a logistic regression on its frozen
  features (mode="linear" with linear_eval.method="logistic")."""
  return LogisticEvaluator(
    run.eval.logistic,
    ctx,
    features.make_feature_fn(model, ctx.mesh, ctx.data_cfg.image_size),
  )
