"""Errors that reach the user as one line naming what to change."""


class ConfigError(ValueError):
  """A configuration value is not allowed; the message names field and choices."""


class DataFileError(FileNotFoundError):
  """A dataset file is missing or corrupt; the message names it and the fix."""


class DivergedError(ArithmeticError):
  """Training produced non-finite parameters; the message names the round,
  the ε spent so far and the likely field to change."""


# What a script reports as one `error:` line (exit status 2), not a traceback.
USER_ERRORS = (ConfigError, DataFileError, DivergedError)
