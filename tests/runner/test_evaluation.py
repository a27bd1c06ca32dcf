"""Accuracy and loss over batches equal the whole-split values."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedsearch.runner.evaluation import accuracy_and_loss


@pytest.mark.parametrize("batch", [1, 3, 7, 100])
def test_batched_accuracy_and_loss_equal_the_whole_split(batch):
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(7, 4)).astype(np.float32)
  labels = np.array([0, 1, 2, 3, 0, 1, 2])
  table = dict(enumerate(logits))
  # The "model" looks its logits up by example index (x holds the index).
  predict = lambda x: jnp.stack([table[int(i)] for i in np.asarray(x)])
  acc, loss = accuracy_and_loss(predict, np.arange(7), labels, batch=batch)
  assert acc == pytest.approx(np.mean(np.argmax(logits, -1) == labels))
  assert loss == pytest.approx(float(np.mean(
      optax.softmax_cross_entropy_with_integer_labels(logits, labels))),
                               rel=1e-6)


def test_empty_split_is_zero_not_nan():
  assert accuracy_and_loss(lambda x: x, np.zeros((0, 3)), np.zeros(0)) == (
      0.0, 0.0)
