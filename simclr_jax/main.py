"""Command line: `python -m simclr_jax.main --config CONFIG.py --workdir DIR`.

`config.mode` says what runs: "pretrain" (the default; simclr_jax/pretrain/)
or a downstream protocol on `config.init_checkpoint` ("knn", "linear",
"finetune"; the evaluators of simclr_jax/eval/registry.py).

Config files define `get_config()`; any value can be overridden with
`--config.key=value` (the config is locked, so a misspelt key is an error
that names the closest valid key). Problems with the user's input end in one
`error:` line and exit code 2, never a traceback. Paths (`--workdir`,
`config.init_checkpoint`, `config.data.data_dir`) may be relative to the
current directory or start with `~`.
"""

from __future__ import annotations

import difflib
import os
import runpy
import sys

# TensorFlow only decodes images here: keep its start-up chatter off stderr.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
import ml_collections  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from simclr_jax.errors import UserError  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
  "config",
  None,
  "Path to a config file defining get_config().",
  lock_config=True,
)
_WORKDIR = flags.DEFINE_string(
  "workdir",
  None,
  "Run directory: checkpoints, TensorBoard events, "
  "results.json. An existing run there is resumed.",
)
flags.mark_flags_as_required(["config", "workdir"])


def _fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(2)


def _one_line(e: BaseException) -> str:
  text = str(e.args[0]) if e.args else str(e)
  lines = [l.strip() for l in text.replace("\\n", "\n").splitlines()]
  return " ".join(l for l in lines if l)


def _config_path(argv: list[str]) -> str | None:
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      return arg.split("=", 1)[1]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _unknown_key_message(argv: list[str]) -> str | None:
  """Names the first `--config.a.b` override that is not in the config."""
  path = _config_path(argv)
  if not path or not os.path.exists(path):
    return None
  config = runpy.run_path(path)["get_config"]()
  for arg in argv:
    if not arg.startswith("--config."):
      continue
    keys = arg[len("--config.") :].split("=", 1)[0].split(".")
    node, seen = config, []
    for key in keys:
      if not isinstance(node, ml_collections.ConfigDict) or key not in node:
        options = (
          list(node.keys())
          if isinstance(node, ml_collections.ConfigDict)
          else []
        )
        prefix = ".".join(seen + [""])
        close = difflib.get_close_matches(key, options, n=3, cutoff=0.5)
        hint = (
          f"did you mean {', '.join(prefix + c for c in close)}?"
          if close
          else f"valid keys here: {', '.join(options)}."
        )
        return (
          f"unknown config key '{prefix}{key}' in {arg.split('=')[0]}; {hint}"
        )
      node = node[key]
      seen.append(key)
  return None


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, with config errors reduced to one line."""
  path = _config_path(argv)
  if path and not os.path.isfile(path):
    _fail(
      f"config file {path} does not exist; pass e.g. "
      "--config configs/default.py."
    )
  try:
    rest = flags.FLAGS(argv)
    _ = _CONFIG.value.keys()  # surfaces a config file that failed to load
    return rest
  except flags.Error as e:
    _fail(f"{_one_line(e)} (see --helpshort)")
  except (AttributeError, KeyError) as e:
    _fail(_unknown_key_message(argv) or f"bad config key: {_one_line(e)}")
  except OSError as e:
    _fail(f"cannot load --config: {_one_line(e)}")
  except Exception as e:  # pylint: disable=broad-except
    _fail(f"the config file raised {type(e).__name__}: {_one_line(e)}")
  return []


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    _fail(
      f"unexpected arguments: {' '.join(argv[1:])}; pass settings as "
      "--config.key=value."
    )
  logging.set_verbosity(logging.WARNING)
  from simclr_jax.data import sources  # pylint: disable=g-import-not-at-top

  sources.hide_tf_from_accelerators()
  from simclr_jax import checkpointing  # pylint: disable=g-import-not-at-top
  from simclr_jax import distributed  # pylint: disable=g-import-not-at-top
  from simclr_jax import downstream  # pylint: disable=g-import-not-at-top
  from simclr_jax.eval import registry  # pylint: disable=g-import-not-at-top
  from simclr_jax.pretrain import run  # pylint: disable=g-import-not-at-top

  config = _CONFIG.value
  # Paths as typed: relative to the current directory, or with a `~` that no
  # shell expands after `=` (and tfds does not either). downstream.run
  # resolves config.init_checkpoint, as it does for Python callers.
  workdir = checkpointing.resolve_path(_WORKDIR.value)
  config.data.data_dir = checkpointing.resolve_path(config.data.data_dir)
  try:
    registry.check_mode(config.mode)
    distributed.initialize(config.distributed)
    if config.mode == "pretrain":
      run.train_and_evaluate(config, workdir)
    else:
      downstream.run(config, workdir)
  except UserError as e:
    _fail(str(e))


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
