"""TensorBoard event files beside metrics.jsonl: every numeric field and the
architecture distribution per round, rewritten on resume (no round twice);
runner.run returns the history."""

import json
import struct

from tensorboardX.proto import event_pb2

from fedsearch import runner
from fedsearch.runner import tensorboard
from tests.runner.test_job import small_config


def _events(workdir) -> list[tuple[str, int, float]]:
  """(tag, step, value) of every scalar in the run's event files (TFRecord
  framing: length, its CRC, the Event proto, its CRC)."""
  found = []
  for path in sorted((workdir / tensorboard.FOLDER).glob("events.*")):
    data = path.read_bytes()
    at = 0
    while at < len(data):
      (length,) = struct.unpack("<Q", data[at:at + 8])
      event = event_pb2.Event.FromString(data[at + 12:at + 12 + length])
      at += 12 + length + 4
      for value in event.summary.value:
        found.append((value.tag, event.step, value.simple_value))
  return found


def test_events_hold_each_round_once_after_a_resume(tmp_path):
  config = small_config()
  assert runner.run(config, tmp_path, report=lambda _: None,
                    stop_after_round=3) == {}
  seen = []
  summary = runner.run(config, tmp_path, report=lambda _: None,
                       on_round=lambda record, total: seen.append(
                           (record["round"], total)))
  # The hook sees the rounds done before the resume, then the new ones.
  assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
  lines = [json.loads(l) for l in
           (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert summary["history"] == lines
  events = _events(tmp_path)
  accuracy = [(step, v) for tag, step, v in events
              if tag == "monitor_accuracy"]
  assert [step for step, _ in accuracy] == [1, 2, 3, 4]
  for (step, value), line in zip(accuracy, lines):
    assert abs(value - line["monitor_accuracy"]) < 1e-6
  assert {step for tag, step, _ in events if tag == "epsilon"} == {1, 2, 3, 4}
  # The architecture distribution per edge, while searching (2 rounds).
  arch = [(tag, step, v) for tag, step, v in events
          if tag.startswith("architecture/edge0/")]
  assert {step for _, step, _ in arch} == {1, 2}
  for step in (1, 2):
    total = sum(v for _, s, v in arch if s == step)
    assert abs(total - 1.0) < 1e-4
  # A finished run returns its summary and history from disk.
  again = runner.run(config, tmp_path, report=lambda _: None)
  assert again["history"] == lines
