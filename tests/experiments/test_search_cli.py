"""The main job's command line: a bad value is one `error:` line and exit 2,
before any work and before anything is written."""

import json
import os
import pathlib
import signal
import subprocess
import sys

import pytest

from experiments import cli

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _cli(*flags):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "experiments.search", *flags],
                        cwd=ROOT, capture_output=True, text=True, env=env,
                        timeout=300)


def test_bad_flag_value_gives_one_clear_line_and_writes_nothing(tmp_path):
  result = _cli("--config.federated.partition=round_robin",
                f"--workdir={tmp_path}/w")
  assert result.returncode == 2
  errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and "federated.partition" in errors[0], result.stderr
  # Nothing written: the corrected command may use the same workdir.
  assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("flag,expected", [
    ("--config.federated.rounds=5",
     "--config.federated.rounds is not a config field; did you mean"
     " federated.train_rounds"),
    ("--config=missing.py", "--config=missing.py cannot be loaded"),
    ("--config.seed=abc", "--config.seed=abc"),
])
def test_a_bad_flag_is_one_line_with_a_suggestion(tmp_path, flag, expected):
  result = _cli(flag, f"--workdir={tmp_path}/w")
  assert result.returncode == 2
  errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and expected in errors[0], result.stderr
  assert "Traceback" not in result.stderr
  assert not (tmp_path / "w").exists()


def test_a_workdir_that_is_a_file_is_one_line(tmp_path):
  (tmp_path / "file").write_text("")
  result = _cli(f"--workdir={tmp_path}/file")
  assert result.returncode == 2
  errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and "is a file" in errors[0], result.stderr


def test_missing_data_file_is_one_line(tmp_path):
  result = _cli("--config.dataset=fashion_mnist",
                f"--config.data_dir={tmp_path}", f"--workdir={tmp_path}/w")
  assert result.returncode == 2
  errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1
  assert "fashion-mnist/train-images-idx3-ubyte.gz" in errors[0]


_SMALL = ("--config.space.nodes=1", "--config.federated.search_rounds=2",
          "--config.federated.train_rounds=2",
          "--config.federated.local_steps=2", "--config.privacy.trust=local",
          "--config.privacy.randomness=seeded", "--verbosity=-1")


def _metrics(workdir):
  return [{k: v for k, v in json.loads(line).items() if k != "elapsed_s"}
          for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_a_process_killed_at_the_phase_change_resumes_to_the_same_result(
    tmp_path):
  straight = _cli(*_SMALL, f"--workdir={tmp_path}/a")
  assert straight.returncode == 0, straight.stderr
  # SIGKILL as soon as the genotype is written: the first derived-model
  # checkpoint is not there yet.
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  process = subprocess.Popen(
      [sys.executable, "-m", "experiments.search", *_SMALL,
       f"--workdir={tmp_path}/b"], cwd=ROOT, stdout=subprocess.PIPE,
      stderr=subprocess.DEVNULL, text=True, env=env)
  for line in process.stdout:
    if line.startswith("derived genotype"):
      process.send_signal(signal.SIGKILL)
      break
  process.wait(timeout=300)
  assert process.returncode == -signal.SIGKILL
  assert not (tmp_path / "b" / "summary.json").exists()
  resumed = _cli(*_SMALL, f"--workdir={tmp_path}/b")
  assert resumed.returncode == 0, resumed.stderr
  assert _metrics(tmp_path / "a") == _metrics(tmp_path / "b")
  summary = lambda d: json.loads((tmp_path / d / "summary.json").read_text())
  assert summary("a")["test_accuracy"] == summary("b")["test_accuracy"]


def test_config_help_lists_every_field_with_default_and_choices():
  result = _cli("--config_help")
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  from experiments import cli
  from experiments.configs import default
  config = default.get_config()

  def value(path):
    node = config
    for part in path.split("."):
      node = node[part]
    return node

  leaves = [p for p in cli.config_fields(config)
            if not hasattr(value(p), "items")]
  assert len(lines) == len(leaves)
  trust = next(l for l in lines if l.startswith("--config.privacy.trust="))
  assert "'local'" in trust and "'aggregate'" in trust
  # Every field given allowed values exists in the config.
  assert set(cli.allowed_values()) <= set(leaves)


def _record(round_):
  return {"round": round_, "monitor_loss": 1.0 / round_,
          "monitor_accuracy": 0.1 * round_, "epsilon": 0.5 * round_}


def test_progress_bar_counts_rounds_and_keeps_other_lines(capsys):
  console = cli.RoundProgress("digits", interactive=True)
  console.report("noise multiplier σ=1.0")  # Before the bar: plain.
  for round_ in (1, 2, 3):
    console.on_round(_record(round_), 5)
    console.report(f"round {round_}/5 [train] ...")  # Shown by the bar.
  console.report("derived genotype: ...")
  assert console.bar.n == 3 and console.bar.total == 5
  assert console.bar.postfix == "loss=0.333, acc=0.300, eps=1.50"
  console.close()
  out = capsys.readouterr()
  printed = out.out.splitlines()
  assert printed[0] == "noise multiplier σ=1.0"
  assert "derived genotype: ..." in printed
  assert not any(line.startswith("round ") for line in printed)


def test_without_a_terminal_the_round_lines_are_printed(capsys):
  console = cli.RoundProgress(interactive=False)
  console.on_round(_record(1), 5)
  console.report("round 1/5 [train] ...")
  console.close()
  assert capsys.readouterr().out == "round 1/5 [train] ...\n"


def test_a_table_run_is_announced_and_forwards_its_arguments(
    capsys, monkeypatch):
  from fedsearch import runner
  seen = {}
  def fake_run(config, workdir, report, on_round, **kwargs):
    seen.update(config=config, workdir=workdir, **kwargs)
    report("noise multiplier σ=1.0")
    on_round(_record(1), 2)
    return {"test_accuracy": 0.5}
  monkeypatch.setattr(runner, "run", fake_run)
  summary = cli.run_labelled("CONFIG", "workdir/x", "mnist, seed 0",
                             canaries="C")
  assert summary == {"test_accuracy": 0.5}
  assert seen == {"config": "CONFIG", "workdir": "workdir/x", "canaries": "C"}
  printed = capsys.readouterr().out.splitlines()
  assert printed[:2] == ["[mnist, seed 0] workdir/x", "noise multiplier σ=1.0"]
