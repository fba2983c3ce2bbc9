"""Runs many command lines of the entry points in ONE process, as a CLI would.

  python tests/bad_input_driver.py CASES.json RESULTS.json

CASES.json is a list of {"id", "module", "argv", "cwd", "env", "watch"}:
`module` is "simclr_jax.main", "simclr_jax.embed" or "simclr_jax.plots",
`argv` its arguments (without the program name), `env` variables set for
that case only, and `watch` paths whose contents are hashed after the case.
RESULTS.json maps each id to {"rc", "stdout", "stderr", "before", "after",
"s"}: the exit status, everything written to file descriptors 1 and 2 (so
C++ TensorFlow and absl log lines are caught as well), `tree_hash` of every
watched path just before and after the case (None where it does not exist;
per case, so a change is blamed on the case that made it) and the seconds
the case took.

A subprocess per command line costs 5-10 s of imports; here the imports are
paid once. Between cases the absl flags are reset (the `--config.*`
override flags that ml_collections defines while parsing are deleted), and
an uncaught exception is written to the captured stderr as a traceback,
just as the interpreter would.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
import traceback
from typing import Any, Callable


def tree_hash(path: str) -> str | None:
  """sha256 over the relative names and bytes of every file under `path`
  (a file: its bytes; a symlink that resolves nowhere: its target); None
  if `path` does not exist."""
  if not os.path.lexists(path):
    return None
  digest = hashlib.sha256()
  if not os.path.exists(path):
    return "link " + os.readlink(path)
  if not os.path.isdir(path):
    with open(path, "rb") as f:
      digest.update(f.read())
    return digest.hexdigest()
  for root, dirs, files in os.walk(path):
    dirs.sort()
    rel = os.path.relpath(root, path)
    digest.update(f"D {rel}\n".encode())
    for name in sorted(files):
      digest.update(f"F {os.path.join(rel, name)}\n".encode())
      with open(os.path.join(root, name), "rb") as f:
        digest.update(hashlib.sha256(f.read()).digest())
  return digest.hexdigest()


def _entry(module: str) -> Callable[[list[str]], Any]:
  """What `python -m module ARGS` runs, as a function of sys.argv."""
  if module == "simclr_jax.main":
    from absl import app  # pylint: disable=import-outside-toplevel
    from absl import flags  # pylint: disable=import-outside-toplevel

    from simclr_jax import main  # pylint: disable=import-outside-toplevel

    def run_main(argv: list[str]) -> Any:
      for name in [n for n in flags.FLAGS if n.startswith("config.")]:
        delattr(flags.FLAGS, name)
      flags.FLAGS.unparse_flags()
      # ml_collections loads config files as the module "config_config"
      # with the deprecated load_module, which re-runs a file into the
      # module already there: a file without get_config() would find the
      # previous file's.
      sys.modules.pop("config_config", None)
      app.run(main.main, argv=argv, flags_parser=main.parse_flags)

    return run_main
  if module == "simclr_jax.embed":
    from simclr_jax import embed  # pylint: disable=import-outside-toplevel

    return lambda argv: sys.exit(embed.main(argv[1:]))
  if module == "simclr_jax.import_tf":
    from simclr_jax import import_tf  # pylint: disable=import-outside-toplevel

    return lambda argv: sys.exit(import_tf.main(argv[1:]))
  if module == "simclr_jax.plots":
    from simclr_jax import plots  # pylint: disable=import-outside-toplevel

    return lambda argv: sys.exit(plots.main(argv[1:]))
  raise ValueError(f"unknown module {module!r}")


def _call(entry: Callable[[list[str]], Any], argv: list[str]) -> int:
  """The exit status of `entry(argv)`; a traceback goes to stderr."""
  try:
    entry(argv)
  except SystemExit as e:
    if e.code is None:
      return 0
    if isinstance(e.code, int):
      return e.code
    print(e.code, file=sys.stderr)
    return 1
  except BaseException:  # pylint: disable=broad-except
    traceback.print_exc()
    return 1
  return 0


def run_case(case: dict[str, Any], scratch: str) -> dict[str, Any]:
  """Runs one case with fd 1 and 2 captured, in its cwd and environment."""
  watched = case.get("watch", [])
  before = {p: tree_hash(p) for p in watched}
  saved_env, saved_cwd, saved_argv = dict(os.environ), os.getcwd(), sys.argv
  out_path = os.path.join(scratch, f"{case['id']}.out")
  err_path = os.path.join(scratch, f"{case['id']}.err")
  sys.stdout.flush()
  sys.stderr.flush()
  saved_fds = os.dup(1), os.dup(2)
  with open(out_path, "wb") as out, open(err_path, "wb") as err:
    os.dup2(out.fileno(), 1)
    os.dup2(err.fileno(), 2)
  try:
    os.environ.update(case.get("env", {}))
    os.chdir(case.get("cwd") or saved_cwd)
    argv = [case["module"].replace(".", "/") + ".py", *case["argv"]]
    sys.argv = argv
    start = time.time()
    rc = _call(_entry(case["module"]), argv)
    seconds = time.time() - start
  finally:
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(saved_fds[0], 1)
    os.dup2(saved_fds[1], 2)
    os.close(saved_fds[0])
    os.close(saved_fds[1])
    os.chdir(saved_cwd)
    os.environ.clear()
    os.environ.update(saved_env)
    sys.argv = saved_argv
  with open(out_path, encoding="utf-8", errors="replace") as f:
    stdout = f.read()
  with open(err_path, encoding="utf-8", errors="replace") as f:
    stderr = f.read()
  after = {p: tree_hash(p) for p in watched}
  return dict(
    rc=rc, stdout=stdout, stderr=stderr, before=before, after=after, s=seconds
  )


def main(cases_path: str, results_path: str) -> None:
  with open(cases_path, encoding="utf-8") as f:
    cases = json.load(f)
  results = {}
  with tempfile.TemporaryDirectory(prefix="bad_input_") as scratch:
    for case in cases:
      results[case["id"]] = run_case(case, scratch)
      with open(results_path, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
  main(*sys.argv[1:])
