r"""Pictures of any run, finished or partial, from its workdir.

  python -m experiments.report WORKDIR [WORKDIR ...]

Writes `curves.png` (monitor accuracy and loss, ε per round),
`architecture.png` (each edge's distribution over ops per search round) and
`cell.png` (the found cell) into each workdir, as far as its files allow
(`fedsearch/runner/pictures.py`); the main job draws them when it finishes.
"""

import pathlib
import sys

from absl import app

from fedsearch.runner import pictures


def main(argv):
  folders = [pathlib.Path(a) for a in argv[1:]]
  if not folders:
    print("error: name at least one WORKDIR", file=sys.stderr)
    sys.exit(2)
  for folder in folders:
    if not (folder / "config.json").exists():
      print(f"error: {folder} is not a run's workdir (no config.json)",
            file=sys.stderr)
      sys.exit(2)
  for folder in folders:
    drawn = pictures.draw(folder)
    print(f"{folder}: {', '.join(str(p) for p in drawn) or 'no rounds yet'}")


if __name__ == "__main__":
  app.run(main)
