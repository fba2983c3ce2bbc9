"""The one exception type that means "the user asked for something we cannot do".

`simclr_jax.main` turns a `UserError` into a single `error: ...` line and a
non-zero exit code instead of a traceback. Library code raises it for bad
configuration values, missing or unreadable data, and incompatible
checkpoints; the message must say what is wrong and what to do about it.
The argparse commands (embed, plots, import_tf) print theirs with
`print_error` and parse with `ArgumentParser`, so their usage errors look
the same.
"""

import argparse
import sys


class UserError(Exception):
  """A problem with the user's input (config, data, workdir), not a bug."""


def print_error(message: str) -> None:
  """`message` as one `error: ...` line on stderr (whitespace folded)."""
  print(f"error: {' '.join(message.split())}", file=sys.stderr, flush=True)


class ArgumentParser(argparse.ArgumentParser):
  """argparse whose usage errors are one `error:` line and exit code 2."""

  def error(self, message: str) -> None:  # type: ignore[override]
    print_error(f"{message} (see --help)")
    sys.exit(2)
