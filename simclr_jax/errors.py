"""The one exception type that means "the user asked for something we cannot do".

`simclr_jax.main` turns a `UserError` into a single `error: ...` line and a
non-zero exit code instead of a traceback. Library code raises it for bad
configuration values, missing or unreadable data, and incompatible
checkpoints; the message must say what is wrong and what to do about it.
"""


class UserError(Exception):
  """A problem with the user's input (config, data, workdir), not a bug."""
