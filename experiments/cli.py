"""What the absl scripts share on the command line: a bad flag is one line.

`define_config_file` defines the `--config` flag after checking the command
line's `--config=FILE` and `--config.FIELD=...` overrides (ml_collections
applies them as the flag is defined, at import, with a traceback);
`parse_flags` is an `app.run(..., flags_parser=...)` parser for the rest. A
bad flag (a misspelt field, with the closest fields suggested, a value of
the wrong type, a config file that cannot be loaded) stops the script with
one `error:` line and exit status 2, before any work. `--config_help`
lists every field of the config with its default and, where the field
names a plug-in, the allowed values (from the registries themselves).
"""

import difflib
import importlib.util
import sys

import ml_collections
import tqdm
from absl import flags
from ml_collections import config_flags

from fedsearch.errors import ConfigError

DEFAULT_CONFIG = "experiments/configs/default.py"


def config_fields(config: ml_collections.ConfigDict, prefix: str = ""):
  """Every dotted field path of a config, nested dicts included."""
  for key, value in config.items():
    path = f"{prefix}{key}"
    yield path
    if isinstance(value, ml_collections.ConfigDict):
      yield from config_fields(value, path + ".")


def allowed_values() -> dict[str, list[str]]:
  """Config fields that name a plug-in or a choice: their allowed values."""
  # Imported here: the library is only needed when help is asked for.
  from fedsearch import data, models, nas, optimizers  # pylint: disable=g-import-not-at-top
  from fedsearch.hyperparameters import strategy as hpo
  from fedsearch.privacy import accounting, mechanisms, randomness
  from fedsearch.runner import job
  from fedsearch.search_space import cost, ops, space
  return {
      "dataset": list(data.DATASETS),
      "model": ["", *sorted(models.MODELS)],
      "space.op_set": sorted(ops.OP_SETS),
      "space.activation": sorted(ops.ACTIVATIONS),
      "space.head": list(space.HEADS), "space.stem": list(space.STEMS),
      "space.reduction": list(space.REDUCTIONS),
      "nas.strategy": sorted(nas.STRATEGIES),
      "nas.cost_metric": list(cost.METRICS),
      "federated.partition": list(data.PARTITIONS),
      "federated.server_optimizer": sorted(job.SERVER_OPTIMIZERS),
      "client.optimizer": sorted(optimizers.OPTIMIZERS),
      "privacy.accountant": list(accounting.ACCOUNTANTS),
      "privacy.dp_backend": sorted(mechanisms.DP_BACKENDS),
      "privacy.trust": sorted(mechanisms.MECHANISMS),
      "privacy.randomness": list(randomness.MODES),
      "hpo.strategy": sorted(hpo.STRATEGIES),
  }


def config_help(config: ml_collections.ConfigDict) -> str:
  """One line per field: `--config.FIELD=default  (allowed: ...)`."""
  allowed = allowed_values()
  lines = []
  for path in config_fields(config):
    value = config
    for part in path.split("."):
      value = value[part]
    if isinstance(value, ml_collections.ConfigDict):
      continue
    choices = (f"  (one of: {', '.join(repr(v) for v in allowed[path])})"
               if path in allowed else "")
    lines.append(f"--config.{path}={value!r}{choices}")
  return "\n".join(lines)


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
  if "--config_help" in sys.argv[1:]:
    print(config_help(_config_of(
        [a for a in sys.argv if a != "--config_help"], default)))
    sys.exit(0)
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


class RoundProgress:
  """The console of a run: on a terminal, one tqdm bar over its rounds
  (ETA, monitor loss and accuracy, ε spent) with every other line printed
  above it; elsewhere (a log file), the plain per-round lines.

  Pass `report` and `on_round` to `fedsearch.runner.run`.
  """

  def __init__(self, description: str = "", interactive: bool | None = None):
    self.description = description
    self.interactive = (sys.stderr.isatty() if interactive is None
                        else interactive)
    self.bar = None

  def report(self, line: str) -> None:
    if self.bar is None:
      print(line, flush=True)
    elif not line.startswith("round "):  # The bar shows the rounds.
      self.bar.write(line)

  def on_round(self, record: dict, total: int) -> None:
    if not self.interactive:
      return
    if self.bar is None:
      self.bar = tqdm.tqdm(total=total, desc=self.description, unit="round",
                           dynamic_ncols=True)
    self.bar.update(record["round"] - self.bar.n)
    self.bar.set_postfix({"loss": f"{record['monitor_loss']:.3f}",
                          "acc": f"{record['monitor_accuracy']:.3f}",
                          "eps": f"{record['epsilon']:.2f}"})

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()
      self.bar = None


def run_labelled(config, workdir, label: str, **kwargs) -> dict:
  """One run of a table script, announced by `label` (which row, which
  seed) and shown with a RoundProgress bar; returns its summary."""
  from fedsearch import runner  # pylint: disable=g-import-not-at-top
  print(f"[{label}] {workdir}", flush=True)
  console = RoundProgress(label)
  try:
    return runner.run(config, str(workdir), report=console.report,
                      on_round=console.on_round, **kwargs)
  finally:
    console.close()


def check_listed(*lists: tuple[str, list[str], tuple[str, ...]]) -> None:
  """Raises ConfigError at the first (flag, values, allowed) whose values
  name one outside `allowed`: a table script checks them all before any
  work."""
  for name, values, allowed in lists:
    for value in values:
      if value not in allowed:
        raise ConfigError(f"{name} must name any of {list(allowed)}; got"
                          f" {value!r}")
