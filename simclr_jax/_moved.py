"""Old module paths, kept as aliases for one release (docs/api.md lists the
new ones)."""

import importlib
import sys
import warnings


def alias(old: str, new: str) -> None:
  """Makes module `old` the module `new`, with a DeprecationWarning."""
  warnings.warn(
    f"{old} is deprecated and will be removed in the next release; "
    f"import {new} instead.",
    DeprecationWarning,
    stacklevel=3,
  )
  sys.modules[old] = importlib.import_module(new)
