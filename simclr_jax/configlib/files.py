"""Config files from Python: what `--config FILE --config.key=value` does
on the command line, for notebooks and sweeps.

  from simclr_jax import configlib
  config = configlib.load_config(
    "configs/default.py", {"epochs": 2, "data.image_size": 16}
  )

The config is locked like the command line's, so a misspelt key is a
UserError that names the closest valid keys.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import ml_collections

from simclr_jax.config_docs import run_config_file
from simclr_jax.config_docs import unknown_key_message
from simclr_jax.errors import UserError


def load_config(
  path: str, overrides: Mapping[str, Any] | None = None
) -> ml_collections.ConfigDict:
  """`get_config()` of the config file `path`, locked, with `overrides`
  ({"dotted.key": value}) applied; UserError for a missing or broken file
  (naming its line), a missing key, or a value of the wrong type."""
  path = os.path.expanduser(path)
  if not os.path.isfile(path):
    raise UserError(
      f"config file {path} does not exist; pass e.g. configs/default.py "
      "(relative to the repository root)."
    )
  config = run_config_file(path)  # UserError with FILE:LINE if it fails
  config.lock()
  for dotted, value in (overrides or {}).items():
    message = unknown_key_message(config, dotted)
    if message:
      raise UserError(message)
    *parents, last = dotted.split(".")
    node = config
    for part in parents:
      node = node[part]
    current = node[last]
    if isinstance(current, tuple) and isinstance(value, list):
      value = tuple(value)
    try:
      node[last] = value
    except TypeError:
      raise UserError(
        f"config.{dotted}={value!r} does not have the type of "
        f"{current!r}; pass a {type(current).__name__}."
      ) from None
  return config
