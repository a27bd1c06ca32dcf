"""Exploring clients' updates rescaled to the incumbent's step
(`hpo.exploration_step='incumbent'`): the factors on hand numbers."""

import chex
import numpy as np
import pytest

from fedsearch import hyperparameters as hp

# Steps lr / (1 − m): 1, 10, 20, 8, 80.
_POOL = {"learning_rate": np.array([0.5, 1.0, 2.0, 4.0, 8.0]),
         "momentum": np.array([0.5, 0.9, 0.9, 0.5, 0.9])}
_RECIPE = {"learning_rate": 2.0, "momentum": 0.9}  # Step 20.


@pytest.mark.parametrize("incumbent,expected", [
    # Before any feedback the configured default is the incumbent.
    (None, [20.0, 2.0, 1.0, 2.5, 0.25]),
    (3, [8.0, 0.8, 0.4, 1.0, 0.1]),
    (0, [1.0, 0.1, 0.05, 0.125, 0.0125]),
    # An incumbent above the default's step 20 is capped at 20.
    (4, [20.0, 2.0, 1.0, 2.5, 0.25])])
def test_every_client_is_rescaled_to_the_incumbents_step(incumbent, expected):
  scales = hp.update_scales(_POOL, [0, 1, 2, 3, 4], incumbent, _RECIPE)
  assert scales.dtype == np.float32
  chex.assert_trees_all_close(scales, np.array(expected, np.float32),
                              rtol=1e-6)


def test_the_incumbents_own_clients_keep_their_update():
  # Step 20 is the default's: the cap leaves it alone.
  scales = hp.update_scales(_POOL, [2, 2, 4, 2], 2, _RECIPE)
  chex.assert_trees_all_close(scales, np.array([1.0, 1.0, 0.25, 1.0],
                                               np.float32))


def test_a_hyperparameter_the_pool_does_not_search_takes_the_default():
  # Momentum 0.9 for everyone: only the learning rates' ratio remains.
  pool = {"learning_rate": _POOL["learning_rate"]}
  scales = hp.update_scales(pool, [0, 4], 1, _RECIPE)
  chex.assert_trees_all_close(scales, np.array([2.0, 0.125], np.float32))
  # lr 8 against the default's 2 is capped: the lr-8 client is halved to 2.
  scales = hp.update_scales(pool, [0, 4], 4, _RECIPE)
  chex.assert_trees_all_close(scales, np.array([4.0, 0.25], np.float32))
