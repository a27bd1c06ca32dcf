r"""Federated, differentially private architecture search.

  python -m experiments.search                       # digits, 10 clients, ε=3
  python -m experiments.search --config.dataset=mnist --workdir=/tmp/mnist
"""

import sys

from absl import app
from absl import flags

from experiments import cli
from fedsearch.errors import USER_ERRORS
from fedsearch.runner import run

_CONFIG = cli.define_config_file(cli.DEFAULT_CONFIG, "Search configuration.")
_WORKDIR = flags.DEFINE_string(
    "workdir", "workdir/search",
    "Output folder; a run started there before resumes from its last round.")


def main(argv):
  del argv
  try:
    console = cli.RoundProgress()
    try:
      run(_CONFIG.value, _WORKDIR.value, report=console.report,
          on_round=console.on_round)
    finally:
      console.close()
  except USER_ERRORS as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
