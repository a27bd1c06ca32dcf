"""How exploring clients' updates enter the model (`hpo.exploration_step`).

`own` (FedEx and random search as published): every client's update is
aggregated as it trained it. Under DP-SGD a client's noise grows with its
step, so the clients that draw a pool's largest steps put the most noise
into the model while the search explores (measured on digits for FEATHERS,
whose aggregated exploration cost ~10 points: experiments/README.md).

`incumbent`: before aggregation, each client's weight update is multiplied
by s(incumbent) / s(c_k), where s(c) = lr / (1 − momentum) is heavy-ball's
long-run step per unit gradient; the noise a DP-SGD client adds grows with
s as its signal does. After the rescaling every client carries the
incumbent's noise, and the round moves the model as a round at the
incumbent's step would, along the average of every client's direction. The
gains still measure each client's own, unscaled update, so the search
learns what it would have without the rescaling. The factors read only
public values (the pool, the strategy's best, the configured defaults), so
multiplying released (noised) updates by them is post-processing: no ε.
The incumbent is the strategy's best once it has had feedback, and the
configured default before.

The target step is capped at the configured default's: a search that
still believes in a large step early (its best is a noisy estimate) would
otherwise rescale every client to it. Measured on digits (secret noise,
seed 1): the best sat at lr 8 / momentum 0.9, step 80 against the
default's 20, every client was rescaled to it and the model diverged
(experiments/README.md). With the cap, no search round moves the model
with more noise than a round at the configured default would; the search
can still choose a larger step for the rounds after it.
"""

from collections.abc import Mapping

import numpy as np

EXPLORATION_STEPS = ("own", "incumbent")


def step_scale(learning_rate, momentum):
  """Heavy-ball's long-run step per unit gradient, lr / (1 − momentum)."""
  return np.asarray(learning_rate) / (1.0 - np.asarray(momentum))


def _column(pool: Mapping, name: str, index, defaults: Mapping):
  if name in pool:
    return np.asarray(pool[name], np.float64)[index]
  return np.full(np.shape(index), defaults[name], np.float64)


def update_scales(pool: Mapping, ids, incumbent: int | None,
                  defaults: Mapping) -> np.ndarray:
  """(m,) float32: min(s(incumbent), s(default)) / s(c_k) for `ids`.

  `pool` maps hyperparameter names to (P,) values; learning rate and
  momentum absent from it take `defaults`' values, which also stand for
  the incumbent while `incumbent` is None.
  """
  ids = np.asarray(ids)
  own = step_scale(_column(pool, "learning_rate", ids, defaults),
                   _column(pool, "momentum", ids, defaults))
  target = step_scale(defaults["learning_rate"], defaults["momentum"])
  if incumbent is not None:
    target = np.minimum(target, step_scale(
        _column(pool, "learning_rate", incumbent, defaults),
        _column(pool, "momentum", incumbent, defaults)))
  return (target / own).astype(np.float32)
