"""What the absl scripts share on the command line: a bad flag is one line.

`define_config_file` defines the `--config` flag after checking the command
line's `--config=FILE` and `--config.FIELD=...` overrides (ml_collections
applies them as the flag is defined, at import, with a traceback);
`parse_flags` is an `app.run(..., flags_parser=...)` parser for the rest. A
bad flag (a misspelt field, with the closest fields suggested, a value of
the wrong type, a config file that cannot be loaded) stops the script with
one `error:` line and exit status 2, before any work.
"""

import difflib
import importlib.util
import sys

import ml_collections
from absl import flags
from ml_collections import config_flags

DEFAULT_CONFIG = "experiments/configs/default.py"


def config_fields(config: ml_collections.ConfigDict, prefix: str = ""):
  """Every dotted field path of a config, nested dicts included."""
  for key, value in config.items():
    path = f"{prefix}{key}"
    yield path
    if isinstance(value, ml_collections.ConfigDict):
      yield from config_fields(value, path + ".")


def _fail(line: str):
  print(f"error: {line}", file=sys.stderr)
  sys.exit(2)


def _config_of(argv, default: str) -> ml_collections.ConfigDict:
  path = next((a.split("=", 1)[1] for a in argv[1:]
               if a.startswith("--config=")), default)
  file, _, arg = path.partition(":")
  try:
    spec = importlib.util.spec_from_file_location("_checked_config", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()
  except Exception as e:  # Whatever the config file raises.
    _fail(f"--config={path} cannot be loaded: {type(e).__name__}:"
          f" {str(e).strip().splitlines()[-1] if str(e).strip() else ''}")


def _unknown_field_line(argv, config) -> str | None:
  fields = list(config_fields(config))
  for arg in argv[1:]:
    if not arg.startswith("--config."):
      continue
    field = arg[len("--config."):].split("=", 1)[0]
    if field not in fields:
      close = difflib.get_close_matches(field, fields, n=3, cutoff=0.5)
      hint = (f"; did you mean {' or '.join(close)}?" if close
              else "; see experiments/configs/default.py for the fields")
      return f"--config.{field} is not a config field{hint}"
  return None


def define_config_file(default: str = DEFAULT_CONFIG, help_text: str = ""):
  """`config_flags.DEFINE_config_file("config", default, lock_config=True)`,
  after the command line's config overrides are checked."""
  if any(a.startswith("--config") for a in sys.argv[1:]):
    line = _unknown_field_line(sys.argv, _config_of(sys.argv, default))
    if line:
      _fail(line)
  return config_flags.DEFINE_config_file("config", default, help_text,
                                         lock_config=True)


def parse_flags(argv):
  """absl's flag parsing, with one `error:` line for a bad flag, and the
  dependencies' INFO logs (orbax writes hundreds a run) off unless
  `--verbosity` (or `-v`) asks for them."""
  if not any(a.split("=")[0] in ("--verbosity", "-v") for a in argv[1:]):
    argv = [*argv, "--verbosity=-1"]
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # absl and ml_collections raise many kinds.
    text = str(e).strip()
    _fail(text.splitlines()[0] if text else repr(e))
