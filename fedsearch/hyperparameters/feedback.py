"""A client's hyperparameter feedback, bounded and privatised.

The gain a client reports is how much its local training lowered the loss on
its validation split: per example d_i = ℓ_i(before) − ℓ_i(after), clipped to
[−c, c] (a non-finite d_i counts as 0), summed, noised with N(0, (σ_f·c)²)
and divided by the public split size (`privacy.mechanisms.privatized_mean`).
Adding or removing one example moves the sum by at most c, whatever the
losses: the release is the Gaussian mechanism with sensitivity c and
multiplier σ_f, on the whole validation split (no subsampling), composed in
the accountant with every other release of that client.

What ℓ is (`hpo.feedback_measure`): "loss", the training loss (cross-
entropy), as the methods are published; "error", the 0/1 error, so that
d_i is −1, 0 or 1 and the gain is the accuracy the update added;
"soft_error", 1 − p_y, the expected 0/1 error of the model's own randomised
prediction ŷ ~ softmax(logits): in [0, 1] like the error, smooth like the
loss, so that a small split still reads a decrease from every example; or
"brier", the Brier score Σ_k (p_k − 1[k = y])² ∈ [0, 2] (Brier 1950), a
proper scoring rule that is smooth like the loss but, like the error,
charges a confidently wrong example at most 2. Under DP noise the loss and
the error can disagree: on digits the released model's loss decrease
preferred smaller steps than its accuracy gain did, and than the fixed rows'
test accuracies, because noisier steps make confident wrong logits that the
cross-entropy punishes without bound; the error, on small splits, moves in
steps of 1/n and its noise decides (experiments/README.md, "What the rewards
rank", "A gain that reads the error"). Whichever ℓ, d_i is clipped to
[−c, c]: the mechanism and its ε do not change.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from fedsearch.privacy import mechanisms


def zero_one_error(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """1 where the argmax class is not the label, else 0 (per example)."""
  return (jnp.argmax(logits, -1) != labels).astype(jnp.float32)


def brier_score(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Σ_k (softmax(logits)_k − 1[k = label])² per example, in [0, 2]."""
  one_hot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
  return jnp.sum((jax.nn.softmax(logits, -1) - one_hot)**2, -1)


def soft_error(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """1 − softmax(logits)_label per example, in [0, 1]."""
  probabilities = jax.nn.softmax(logits, -1)
  return 1.0 - jnp.take_along_axis(probabilities, labels[:, None], -1)[:, 0]


MEASURES = ("loss", "error", "soft_error", "brier")


def measure(name: str, loss: Callable) -> Callable:
  """The per-example `(logits, labels) -> ℓ` a gain is measured with: the
  training `loss` ("loss"), the 0/1 error ("error"), its smooth
  expectation 1 − p_y ("soft_error") or the Brier score ("brier")."""
  return {"loss": loss, "error": zero_one_error, "soft_error": soft_error,
          "brier": brier_score}[name]


def privatized_gain(loss_before: jax.Array, loss_after: jax.Array,
                    padding: jax.Array, clip: float, noise_multiplier: float,
                    key, split_size,
                    noised_sum=mechanisms.noised_sum) -> jax.Array:
  return mechanisms.privatized_mean(loss_before - loss_after, padding, clip,
                                    noise_multiplier, key, split_size,
                                    noised_sum)
