"""Importing an experiment script in a test process."""

import importlib
from collections.abc import Iterator
from types import ModuleType

from absl import flags


def import_script(module: str, shared_flags: tuple[str, ...]
                  ) -> Iterator[ModuleType]:
  """Yields `module` imported with its own definitions of `shared_flags`
  and restores the other scripts' definitions afterwards: the scripts run
  alone, but one pytest process imports several of them, and absl refuses
  a flag defined twice."""
  saved = {n: flags.FLAGS[n] for n in shared_flags if n in flags.FLAGS}
  for name in saved:
    delattr(flags.FLAGS, name)
  yield importlib.import_module(module)
  for name in shared_flags:
    if name in flags.FLAGS:
      delattr(flags.FLAGS, name)
  for name, flag in saved.items():
    flags.FLAGS[name] = flag
