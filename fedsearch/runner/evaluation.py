"""Accuracy and loss of a predictor on a host-held split, in batches."""

from collections.abc import Callable

import jax.numpy as jnp
import optax


def accuracy_and_loss(predict: Callable, x, y, batch: int = 1024
                      ) -> tuple[float, float]:
  """(accuracy, mean cross-entropy) of `predict(x) -> logits` on (x, y)."""
  correct, loss = 0.0, 0.0
  for i in range(0, len(y), batch):
    logits = predict(jnp.asarray(x[i:i + batch]))
    labels = jnp.asarray(y[i:i + batch])
    correct += float(jnp.sum(jnp.argmax(logits, -1) == labels))
    loss += float(jnp.sum(
        optax.softmax_cross_entropy_with_integer_labels(logits, labels)))
  return correct / max(len(y), 1), loss / max(len(y), 1)
