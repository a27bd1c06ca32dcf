"""Errors that reach the user as one line naming what to change."""


class ConfigError(ValueError):
  """A configuration value is not allowed; the message names field and choices."""


class DataFileError(FileNotFoundError):
  """A dataset file is missing or corrupt; the message names it and the fix."""
