"""The feedback anatomy tool: variance shares and replayed choices on hand-made records."""

import json

import numpy as np
import pytest

from experiments import feedback_anatomy

ROUND_EFFECT = (1.0, 0.2, -0.5)
CLIENT_EFFECT = (0.0, 0.6, -0.3)
CONFIG_EFFECT = (0.0, 0.1, -0.2)
# The strongest client draws configuration 0 in the first round, the weakest
# configuration 1 twice: the means prefer 0, the blocked fit 1 (the same
# design as the random-search unit test).
CONFIGS = ((2, 0, 1), (0, 2, 1), (1, 0, 2))


def _records(noise=0.0):
  rng = np.random.default_rng(0)
  records = [{"round": 0, "monitor_loss": 2.3}]  # A round without feedback.
  for t, configs in enumerate(CONFIGS, start=1):
    gains = [ROUND_EFFECT[t - 1] + CLIENT_EFFECT[c] + CONFIG_EFFECT[j]
             + noise * rng.normal() for c, j in enumerate(configs)]
    # A padding slot (weight 0) whose gain must count for nothing.
    records.append({"round": t, "hp_client_gains": gains + [50.0],
                    "hp_client_configurations": list(configs) + [2],
                    "hp_clients": [0, 1, 2, -1],
                    "hp_client_weights": [1.0, 1.0, 1.0, 0.0]})
  return records


def test_exact_additive_gains_are_fully_explained_and_padding_dropped():
  feedback = feedback_anatomy.read_feedback(_records())
  assert len(feedback.gain) == 9
  assert feedback_anatomy.explained_share(
      feedback, ("round", "client", "configuration")) == pytest.approx(1.0)
  assert feedback_anatomy.explained_share(feedback, ("round",)) < 0.9


def test_replay_matches_each_estimate_on_hand_numbers():
  assert feedback_anatomy.replay_choices(_records(), 3, 3) == {
      "mean": 0, "blocked": 1}


def test_describe_reads_a_run_directory(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps({
      "seed": 0, "federated": {"num_clients": 3},
      "hpo": {"pool_size": 0, "space": {"learning_rate": {
          "scale": "categorical", "choices": [0.5, 1.0, 2.0]}}}}))
  (tmp_path / "metrics.jsonl").write_text(
      "\n".join(json.dumps(r) for r in _records(noise=0.01)) + "\n")
  text = feedback_anatomy.describe(tmp_path)
  assert "9 gains" in text
  assert "blocked  estimate chooses (learning_rate 1)" in text


def test_a_run_without_feedback_records_is_refused():
  with pytest.raises(ValueError, match="hp_client_gains"):
    feedback_anatomy.read_feedback([{"round": 1}])
