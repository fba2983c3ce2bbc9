"""Command line: `python -m simclr_jax.main --config CONFIG.py --workdir DIR`.

`config.mode` says what runs: "pretrain" (the default; simclr_jax/pretrain/)
or a downstream protocol on `config.init_checkpoint` ("knn", "linear",
"finetune"; the evaluators of simclr_jax/eval/registry.py).

Config files define `get_config()`; any value can be overridden with
`--config.key=value` (the config is locked, so a misspelt key is an error
that names the closest valid key; a config file that does not parse or
raises is named with its line). Problems with the user's input end in one
`error:` line and exit code 2, never a traceback. Paths (`--workdir`,
`config.init_checkpoint`, `config.data.data_dir`) may be relative to the
current directory or start with `~`.

`--help` lists the flags and configs/; `--print_config` prints every key of
the resolved config with its comment in defaults.py (data/config.py for
`data.*`), without --workdir or JAX.
"""

from __future__ import annotations

import ast
import os
import re
import sys
import textwrap

# TensorFlow only decodes images here: keep its start-up chatter off stderr.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from simclr_jax import config_docs  # noqa: E402
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
_PRINT_CONFIG = flags.DEFINE_bool(
  "print_config",
  False,
  "Print every config key with its resolved value and meaning, then exit "
  "(no --workdir needed).",
)
_PACKAGE = os.path.dirname(os.path.abspath(__file__))
_CONFIGS = os.path.join(os.path.dirname(_PACKAGE), "configs")
_HELP = {"-h", "-?", "--help", "-help", "--helpshort", "-helpshort"}
_HELPFULL = {"--helpfull", "-helpfull"}
_USAGE = """\
usage: python -m simclr_jax.main --config CONFIG.py --workdir DIR
           [--config.KEY=VALUE ...]
       python -m simclr_jax.main --config CONFIG.py --print_config
           [--config.KEY=VALUE ...]

Pretrains SimCLR (config.mode="pretrain", the default), or runs a downstream
protocol on the encoder of the run in config.init_checkpoint (config.mode=
"knn", "linear", "logistic" or "finetune"). Each writes results.json in DIR.

flags:
  --config CONFIG.py   a config file defining get_config(), e.g. from below
  --workdir DIR        run directory: checkpoints, TensorBoard events,
                       results.json; an existing run there is resumed
  --config.KEY=VALUE   override any config key, e.g. --config.batch_size=256
                       or --config.data.source=folder (a misspelt key is an
                       error that names the closest valid one)
  --print_config       print every key with its resolved value and what it
                       means, then exit (no --workdir needed)
  --helpfull           also list absl's logging and debugging flags
{configs}
examples:
  python -m simclr_jax.main --config configs/default.py --workdir runs/quick
  python -m simclr_jax.main --config configs/cifar10.py --workdir runs/knn \\
      --config.mode=knn --config.init_checkpoint=runs/cifar10
  python -m simclr_jax.main --config configs/default.py --print_config \\
      --config.batch_size=64
"""


def _fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(2)


def _stopped(e: KeyboardInterrupt, workdir: str) -> None:
  """The one line of a run stopped by SIGTERM/SIGINT; exit 130 or 143."""
  message = str(e.args[0]) if e.args else ""
  if not message:  # Ctrl-C outside a training loop: nothing half-written
    message = (
      f"SIGINT: stopped; everything already saved in {workdir} is kept; "
      "rerun the same command to continue."
    )
  print(message, file=sys.stderr, flush=True)
  sys.exit(getattr(e, "exit_status", 130))


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
  config = config_docs.run_config_file(path)
  for arg in argv:
    if arg.startswith("--config."):
      flag = arg.split("=", 1)[0]
      message = config_docs.unknown_key_message(
        config, flag[len("--config.") :]
      )
      if message:
        return message.replace("';", f"' in {flag};", 1)
  return None


def _flag_error_message(argv: list[str], e: flags.Error) -> str:
  """absl's reason for a flag it could not parse; for a `--config.KEY`
  value of the wrong type, also the type the key takes."""
  text = _one_line(e)
  if "before a value for --config was specified" in text:
    return f"{text}; put --config FILE before the --config.KEY=VALUE flags."
  match = re.match(r"flag --config\.([\w.]+)=(.*?): (.*)$", text)
  path = _config_path(argv)
  if match and path:
    dotted, value, reason = match.groups()
    try:
      config = config_docs.run_config_file(path)
      return config_docs.bad_value_message(config, dotted, value, reason)
    except (UserError, KeyError, AttributeError):
      pass
  return f"{text} (see --helpshort)"


def _first_sentence(path: str) -> str:
  """The first sentence of a file's docstring, read without running it."""
  try:
    with open(path, encoding="utf-8") as f:
      doc = ast.get_docstring(ast.parse(f.read())) or ""
  except (OSError, SyntaxError, ValueError):
    return ""
  paragraph = " ".join(doc.split("\n\n")[0].split())
  return paragraph.split(". ")[0].rstrip(".") + "." if paragraph else ""


def _print_help(full: bool = False) -> None:
  """Usage, flags, the config files of configs/ and examples; exit 0."""
  names = []
  if os.path.isdir(_CONFIGS):
    names = sorted(n for n in os.listdir(_CONFIGS) if n.endswith(".py"))
  lines = [""]
  if names:
    where = os.path.relpath(_CONFIGS)
    lines.append(f"config files ({_CONFIGS if '..' in where else where}/):")
    width = max(len(n) for n in names) + 4
    for name in names:
      about = _first_sentence(os.path.join(_CONFIGS, name)) or "-"
      first, pad = f"  {name}".ljust(width), " " * width
      lines.append(
        textwrap.fill(about, 80, initial_indent=first, subsequent_indent=pad)
      )
    lines.append("")
  print(_USAGE.replace("{configs}", "\n".join(lines)), flush=True)
  if full:
    print(f"all flags:\n{flags.FLAGS.get_help()}", flush=True)
  sys.exit(0)


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, with config errors reduced to one line."""
  args = argv[1 : argv.index("--")] if "--" in argv else argv[1:]
  if _HELP.intersection(args) or _HELPFULL.intersection(args):
    _print_help(full=bool(_HELPFULL.intersection(args)))
  path = _config_path(argv)
  if path is not None and not os.path.isfile(path):
    what = "is a directory" if os.path.isdir(path) else "does not exist"
    _fail(
      f"config file {path or '(empty)'} {what}; pass e.g. "
      "--config configs/default.py."
    )
  try:
    if path:  # its errors with file and line, before ml_collections runs it
      config_docs.run_config_file(path)
    rest = flags.FLAGS(argv)
    if _CONFIG.value is None:
      _fail(
        "--config is required: a config file defining get_config(), e.g. "
        "--config configs/default.py (see --helpshort)"
      )
    _ = _CONFIG.value.keys()  # surfaces a config file that failed to load
    if not _PRINT_CONFIG.value and not _WORKDIR.value:
      _fail(
        "--workdir is required: the run directory, e.g. --workdir "
        "runs/mine (or --print_config to only show the config; see "
        "--helpshort)"
      )
    return rest
  except UserError as e:
    _fail(str(e))
  except flags.Error as e:
    _fail(_flag_error_message(argv, e))
  except (AttributeError, KeyError) as e:
    _fail(_unknown_key_message(argv) or f"bad config key: {_one_line(e)}")
  except OSError as e:
    _fail(f"cannot load --config: {_one_line(e)}")
  except Exception as e:  # pylint: disable=broad-except
    _fail(
      f"cannot apply the --config overrides ({type(e).__name__}: "
      f"{_one_line(e)}); check their spelling and values (see --helpshort)."
    )
  return []


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    _fail(
      f"unexpected arguments: {' '.join(argv[1:])}; pass settings as "
      "--config.key=value."
    )
  if _PRINT_CONFIG.value:  # before anything imports JAX
    given = [_config_path(sys.argv) or ""]
    given += [a for a in sys.argv if a.startswith("--config.")]
    head = config_docs.COMMENT.wrap(f"Resolved config: {' '.join(given)}.")
    head += ["# Change a key with --config.KEY=VALUE."]
    body = config_docs.format_config(
      _CONFIG.value, config_docs.config_comments()
    )
    print(*head, body, sep="\n", flush=True)
    return
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
      # Keys typed on the command line win over the run's run_config.json.
      given = config_flags.get_override_values(flags.FLAGS["config"])
      downstream.run(config, workdir, overrides=sorted(given))
  except UserError as e:
    _fail(str(e))
  except KeyboardInterrupt as e:  # preemption.Interrupted: saved, one line
    _stopped(e, workdir)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
