"""What the comparison scripts share: scratch runs, the machine line, output."""

import pathlib
import statistics
import tempfile
import time

import jax

from experiments import cli
from fedsearch import runner
from fedsearch.search_space import cost


def run_in_scratch(config, label: str | None = None) -> dict:
  """One whole main-job run in a throw-away workdir; returns its summary.
  With a `label`, the run is announced and shows its progress
  (`cli.run_labelled`); without, it is silent."""
  with tempfile.TemporaryDirectory() as workdir:
    if label is None:
      return runner.run(config, workdir, report=lambda _: None)
    return cli.run_labelled(config, workdir, label)


def machine_line() -> str:
  """Date, hardware, jax version."""
  return (f"{time.strftime('%Y-%m-%d')}, {cost.hardware_name()},"
          f" jax {jax.__version__}")


def emit(table: str, out: str) -> None:
  """Prints the table and, if `out` is set, appends it to that file."""
  print(table)
  if out:
    path = pathlib.Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
      f.write(table + "\n")


def median_seconds(fn, repeats: int) -> float:
  """Median wall time of `fn()` (results awaited) after one warm-up call."""
  jax.block_until_ready(fn())  # Compile.
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def compiled_peak_bytes(compiled) -> int:
  """XLA's buffer assignment of a compiled function: temps + args + outputs."""
  memory = compiled.memory_analysis()
  return (memory.temp_size_in_bytes + memory.argument_size_in_bytes
          + memory.output_size_in_bytes)
