"""The evaluators a downstream `config.mode` can name.

Each entry builds an `Evaluator` from the job's typed `RunConfig` (taking
its own section), an `EvalContext` and the pretrained `SimCLRModel`. A
new evaluator is a module in this package with a `from_config` and one line
here; `main` and `downstream` take the modes from `MODES`.
"""

from __future__ import annotations

from typing import Any, Callable


from simclr_jax.eval import finetune
from simclr_jax.eval import knn
from simclr_jax.eval import linear
from simclr_jax.eval import logistic
from simclr_jax.errors import UserError
from simclr_jax.eval.base import EvalContext, Evaluator

from simclr_jax.configlib.sections import RunConfig

Builder = Callable[[RunConfig, EvalContext, Any], Evaluator]

EVALUATORS: dict[str, Builder] = {
  "knn": knn.from_config,
  "linear": linear.from_config,
  "logistic": logistic.from_config,
  "finetune": finetune.from_config,
}

NAMES: tuple[str, ...] = tuple(EVALUATORS)
MODES: tuple[str, ...] = ("pretrain",) + NAMES  # what config.mode may say


def check_mode(mode: str) -> None:
  """UserError unless `mode` is "pretrain" or an evaluator's name."""
  if mode not in MODES:
    raise UserError(
      f"config.mode={mode!r} is not a mode; use one of {', '.join(MODES)}."
    )


def evaluator_name(run: RunConfig) -> str:
  """The evaluator `config.mode` runs: "linear" with
  `linear_eval.method="logistic"` is the logistic regression."""
  if run.mode == "linear" and run.linear_method == "logistic":
    return "logistic"
  return run.mode
