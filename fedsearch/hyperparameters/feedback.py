"""A client's hyperparameter feedback, bounded and privatised.

The gain a client reports is how much its local training lowered the loss on
its validation split: per example d_i = ℓ_i(before) − ℓ_i(after), clipped to
[−c, c] (a non-finite d_i counts as 0), summed, noised with N(0, (σ_f·c)²)
and divided by the public split size (`privacy.mechanisms.privatized_mean`).
Adding or removing one example moves the sum by at most c, whatever the
losses: the release is the Gaussian mechanism with sensitivity c and
multiplier σ_f, on the whole validation split (no subsampling), composed in
the accountant with every other release of that client.
"""

import jax

from fedsearch.privacy import mechanisms


def privatized_gain(loss_before: jax.Array, loss_after: jax.Array,
                    padding: jax.Array, clip: float, noise_multiplier: float,
                    key, split_size,
                    noised_sum=mechanisms.noised_sum) -> jax.Array:
  return mechanisms.privatized_mean(loss_before - loss_after, padding, clip,
                                    noise_multiplier, key, split_size,
                                    noised_sum)
