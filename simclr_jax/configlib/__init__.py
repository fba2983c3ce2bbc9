"""From a `ConfigDict` to checked, typed sections: `checks.validate` and
`sections.build` (the `RunConfig` every job is driven by); `load_config`
reads a config file from Python."""

from simclr_jax.configlib.checks import validate
from simclr_jax.configlib.sections import RunConfig
from simclr_jax.configlib.convert import augment_config
from simclr_jax.configlib.sections import build
from simclr_jax.configlib.files import load_config
from simclr_jax.configlib.convert import data_config
from simclr_jax.configlib.sections import model_config
from simclr_jax.configlib.convert import model_signature
from simclr_jax.configlib.sections import optim_config
from simclr_jax.configlib.convert import view_configs

__all__ = [
  "RunConfig",
  "augment_config",
  "build",
  "data_config",
  "load_config",
  "model_config",
  "model_signature",
  "optim_config",
  "validate",
  "view_configs",
]
