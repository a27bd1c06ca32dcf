r"""Federated, differentially private architecture search.

  python -m experiments.search                       # digits, 10 clients, ε=3
  python -m experiments.search --config.dataset=mnist --workdir=/tmp/mnist
"""

import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from fedsearch.errors import ConfigError, DataFileError
from fedsearch.runner import run

_CONFIG = config_flags.DEFINE_config_file(
    "config", "experiments/configs/default.py", "Search configuration.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", "workdir/search",
    "Output folder; a run started there before resumes from its last round.")


def main(argv):
  del argv
  try:
    run(_CONFIG.value, _WORKDIR.value, report=lambda line: print(line, flush=True))
  except (ConfigError, DataFileError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
