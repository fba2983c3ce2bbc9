"""What the config keys mean, read from the source without running it (for
`python -m simclr_jax.main --print_config`), the one message for an unknown
key or a value of the wrong type, and `run_config_file`, which runs a
config file with errors that name its file and line. Imports neither JAX
nor TensorFlow, so help stays instant.
"""

from __future__ import annotations

import ast
import difflib
import os
import re
import textwrap
import tokenize
import traceback
from typing import Any

import ml_collections

from simclr_jax.errors import UserError

_PACKAGE = os.path.dirname(os.path.abspath(__file__))
_PRAGMA = re.compile(r"(noqa|pylint|type|fmt)(:|$)")
COMMENT = textwrap.TextWrapper(
  78, initial_indent="# ", subsequent_indent="# ", break_on_hyphens=False
)


def unknown_key_message(
  config: ml_collections.ConfigDict, dotted: str
) -> str | None:
  """None if `dotted` ("a.b.c") names a key of `config`; otherwise a
  sentence naming the first unknown part and the closest valid keys."""
  node, seen = config, []
  for key in dotted.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or key not in node:
      options = (
        list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
      )
      prefix = ".".join(seen + [""])
      close = difflib.get_close_matches(key, options, n=3, cutoff=0.5)
      hint = (
        f"did you mean {', '.join(prefix + c for c in close)}?"
        if close
        else f"valid keys here: {', '.join(options)}."
      )
      return f"unknown config key '{prefix}{key}'; {hint}"
    node = node[key]
    seen.append(key)
  return None


_KINDS = {
  bool: "True or False",
  int: "an integer",
  float: "a number",
  str: "a string",
  tuple: "a tuple",
}


def bad_value_message(
  config: ml_collections.ConfigDict, dotted: str, value: str, reason: str
) -> str:
  """`--config.DOTTED=VALUE` could not be parsed (`reason`): says which type
  the key takes, with the config's own value as the example."""
  node: Any = config
  for key in dotted.split("."):
    node = node[key]
  kind = _KINDS.get(type(node), f"a {type(node).__name__}")
  example = repr(node) if isinstance(node, (str, tuple)) else str(node)
  if isinstance(node, tuple):
    example = f'"{example}"'
  return (
    f"--config.{dotted}={value} is not {kind} ({reason}); pass {kind}, "
    f"e.g. --config.{dotted}={example}."
  )


def _error_line(e: BaseException, path: str) -> str:
  """`FILE:LINE` of the deepest frame of `path` in the traceback of `e`."""
  frames = [
    f
    for f in traceback.extract_tb(e.__traceback__)
    if os.path.abspath(f.filename) == os.path.abspath(path)
  ]
  return f"{path}:{frames[-1].lineno}" if frames else path


def run_config_file(path: str) -> ml_collections.ConfigDict:
  """`get_config()` of the config file `path` (run as ml_collections runs
  it); UserError naming the file and line, with what to do, for a file that
  does not parse, raises, lacks get_config() or returns no ConfigDict."""
  try:
    with open(path, encoding="utf-8") as f:
      code = compile(f.read(), path, "exec")
  except SyntaxError as e:
    raise UserError(
      f"{e.filename or path}:{e.lineno}: SyntaxError: {e.msg}; fix the "
      "config file."
    ) from None
  except (OSError, ValueError) as e:
    raise UserError(
      f"cannot read config file {path} ({e}); pass a readable Python file "
      "defining get_config(), e.g. --config configs/default.py."
    ) from None
  namespace: dict[str, Any] = {"__file__": path, "__name__": "config_file"}
  try:
    exec(code, namespace)  # pylint: disable=exec-used
    get_config = namespace.get("get_config")
    if not callable(get_config):
      raise UserError(
        f"{path} has no get_config(); define get_config() returning an "
        "ml_collections.ConfigDict (see configs/default.py)."
      )
    config = get_config()
  except UserError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    where = _error_line(e, path)
    if isinstance(e, SyntaxError):  # in a module the config imports
      where = f"{e.filename}:{e.lineno}"
    detail = " ".join(str(e).split()) or "no message"
    raise UserError(
      f"{where}: {type(e).__name__}: {detail} (raised while loading the "
      "config); fix the config file."
    ) from None
  if not isinstance(config, ml_collections.ConfigDict):
    raise UserError(
      f"{path}: get_config() returned {type(config).__name__}, not a "
      "ConfigDict; return an ml_collections.ConfigDict (see "
      "configs/default.py)."
    )
  return config


def _comment_lines(path: str) -> tuple[dict[int, str], dict[int, str]]:
  """Comment text by line: after code on the line, and on a line alone."""
  after, alone = {}, {}
  with tokenize.open(path) as f:
    for tok in tokenize.generate_tokens(f.readline):
      text = tok.string.lstrip("#").strip()
      if tok.type == tokenize.COMMENT and not _PRAGMA.match(text):
        code = tok.line[: tok.start[1]].strip()
        (after if code else alone)[tok.start[0]] = text
  return after, alone


def _key_lines(tree: ast.Module) -> list[tuple[str, int, int, bool]]:
  """(key, first line, last line, holds a value) of the keys of a config
  source: `c.key = ...` and `c.section = ConfigDict(dict(key=...))` in
  `base_config()`, and the `key: type = ...` fields of `DataConfig` (data.*)."""
  keys = []
  for node in ast.walk(tree):
    if isinstance(node, ast.ClassDef) and node.name == "DataConfig":
      for a in node.body:
        if isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name):
          keys.append((f"data.{a.target.id}", a.lineno, a.end_lineno, True))
    if not (isinstance(node, ast.FunctionDef) and node.name == "base_config"):
      continue
    for a in node.body:
      target = a.targets[0] if isinstance(a, ast.Assign) else None
      parts = []
      while isinstance(target, ast.Attribute):
        parts.insert(0, target.attr)
        target = target.value
      if not parts or not isinstance(target, ast.Name):
        continue
      key, value = ".".join(parts), a.value
      if isinstance(value, ast.Call) and value.args:  # ConfigDict(...)
        value = value.args[0]
      fields = []
      if isinstance(value, ast.Call) and not value.args:  # dict(k=v, ...)
        fields = [(k.arg, k) for k in value.keywords if k.arg]
      elif isinstance(value, ast.Dict):  # {"k": v, ...}
        fields = [
          (k.value, k) for k in value.keys if isinstance(k, ast.Constant)
        ]
      keys.append((key, a.lineno, a.end_lineno, not fields))
      keys.extend(
        (f"{key}.{n}", k.lineno, k.end_lineno, True) for n, k in fields
      )
  return sorted(keys, key=lambda k: k[1])


def source_comments(path: str) -> dict[str, str]:
  """Key -> its comment ("" if none) for every key of a config source such
  as simclr_jax/defaults.py, in source order.

  A key's comment is the block of comment lines right above it, then the
  one after its value, with the lines below that continue it: they follow
  without a blank line, the text so far does not end a sentence and they do
  not start with a capital (which starts the next key's block instead).
  """
  with open(path, encoding="utf-8") as f:
    keys = _key_lines(ast.parse(f.read()))
  after, alone = _comment_lines(path)
  tails, claimed = {}, set()
  for key, first, last, is_value in keys:
    tail = [after[l] for l in range(first, last + 1) if is_value and l in after]
    line = last + 1
    while tail and line in alone and not tail[-1].endswith("."):
      if alone[line][:1].isupper():
        break
      tail.append(alone[line])
      claimed.add(line)
      line += 1
    tails[key] = tail
  comments = {}
  for key, first, _, _ in keys:
    head, line = [], first - 1
    while line in alone and line not in claimed:
      head.insert(0, alone[line])
      line -= 1
    comments[key] = " ".join(" ".join(head + tails[key]).split())
  return comments


def config_comments() -> dict[str, str]:
  """Key -> comment ("" if none) of every key of defaults.py and of the
  DataConfig fields (data/config.py) it builds data.* from; {} if
  unreadable."""
  comments = {}
  for rel in ("defaults.py", "data/config.py"):
    try:
      comments.update(source_comments(os.path.join(_PACKAGE, rel)))
    except (OSError, SyntaxError, ValueError, tokenize.TokenError):
      pass
  return comments


def _leaves(node: ml_collections.ConfigDict, prefix: str = ""):
  for key in node.keys():
    if isinstance(node[key], ml_collections.ConfigDict):
      yield from _leaves(node[key], f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}", node[key]


def format_config(
  config: ml_collections.ConfigDict, comments: dict[str, str]
) -> str:
  """Every key as `key = value`, in the order of `comments` (other keys
  after, sorted), with its comment after it if the line stays within 80
  columns, else above; a section's comment heads its keys."""
  rank = {k: i for i, k in enumerate(comments)}

  def order(item: tuple[str, object]) -> tuple:
    parts = item[0].split(".")
    prefixes = [".".join(parts[: i + 1]) for i in range(len(parts))]
    return tuple((rank.get(p, len(rank)), p) for p in prefixes)

  lines, section = [], None
  for key, value in sorted(_leaves(config), key=order):
    top = key.split(".")[0] if "." in key else None
    if top != section and (top or section):
      lines.extend([""] + COMMENT.wrap(comments.get(top, "")))
    section, line = top, f"{key} = {value!r}"
    text = comments.get(key, "")
    if len(f"{line}  # {text}") > 80:
      lines.extend(COMMENT.wrap(text))
    elif text:
      line = f"{line}  # {text}"
    lines.append(line)
  return "\n".join(lines)
