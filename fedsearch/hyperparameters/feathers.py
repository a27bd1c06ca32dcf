"""FEATHERS's server-side bandit over a fixed pool of hyperparameter configs.

(Seng et al. 2022/23.) Every `period` rounds an exploration phase of
round(γ·H(p)) rounds starts, where p = softmax(r / ‖r‖∞) over the pool's
rewards r and H is its entropy (nats). In exploration rounds each client
draws a configuration from p, all start from the same stored weights, and
afterwards the rewards move: r_j ← r_j + α(gain_j − r_j) for the drawn
configurations, r_j ← α·r_j for the others, with gain_j the FedAvg-weighted
sum Σ_{k: c_k = j} w_k·gain_k of the (privatised) validation-loss decreases
of the clients that used j. Otherwise every client uses argmax r.

Optional departure (`explore_aggregates`; off by default, as published):
the paper restarts every exploration round from the stored weights, so those
rounds train nothing though under DP their gradients cost ε all the same.
With `explore_aggregates` the server aggregates the exploration rounds'
updates as any other (each gain is still measured from the round's start);
the rewards move after exploration rounds either way. It is off by default
because the clients that draw the pool's largest steps then put their
noise into the model: on digits at eight seeds the aggregating form ended
9.8 ± 5.0 points below the paper's (experiments/README.md, "Eight seeds on
digits"). A round reward needs it, since it measures the released model.

Optional departure (`memory = "mean"`; "decay" by default, as published):
r_j is the mean of every gain released for j since the search began, each
client's weighted by its FedAvg weight, r_j = Σ w_k·gain_k / Σ w_k over the
clients that ever drew j, and the others' rewards stay. The published
update remembers about two draws, and with about one client a configuration
a round its argmax follows whichever client drew a configuration last. On
digits the mean took the loss gain's small steps reliably and lost
(experiments/README.md, "Bounded gains and a longer memory"), so it is not
a default.

Optional departure (`exploration = "client"`; "round" by default, as
published): once any feedback has arrived, each client of an exploration
round explores with probability `explore_share` (drawn from p) and the
others run the incumbent argmax r; only the incumbent's clients are
aggregated, the explorers are measured and left out of the mean, so the
model and the architecture train in every round at the incumbent's step and
no explorer's noise reaches them. Every client's gain moves the rewards as
published. The first exploration round (no feedback yet, no incumbent)
measures only, as published. On digits it lost (four seeds, 38.1 %): the
incumbent changes most rounds and half the clients carry more noise into
the mean (experiments/README.md), so it is not a default.

State and transitions are pure (`init`, `choose`, `update`), jit-able.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from fedsearch.hyperparameters.base import Strategy, per_config_sums


MEMORIES = ("decay", "mean")
EXPLORATIONS = ("round", "client")


class FeathersState(NamedTuple):
  rewards: jax.Array  # (pool,)
  explore_left: jax.Array  # int32: exploration rounds left in this phase
  round: jax.Array  # int32: rounds chosen so far
  exploring: jax.Array  # bool: the round last chosen explores
  gain_sums: jax.Array  # (pool,): Σ w_k·gain_k of every draw ("mean")
  weight_sums: jax.Array  # (pool,): Σ w_k of every draw ("mean")


def init(pool_size: int) -> FeathersState:
  zeros = jnp.zeros(pool_size, jnp.float32)
  return FeathersState(zeros, jnp.int32(0), jnp.int32(0), jnp.bool_(False),
                       zeros, zeros)


def probabilities(rewards: jax.Array) -> jax.Array:
  """softmax(r / ‖r‖∞); uniform while every reward is 0."""
  scale = jnp.max(jnp.abs(rewards))
  return jax.nn.softmax(jnp.where(scale > 0, rewards / scale, 0.0))


def entropy(p: jax.Array) -> jax.Array:
  return -jnp.sum(jnp.where(p > 0, p * jnp.log(p), 0.0))


def exploration_rounds(rewards: jax.Array, gamma: float) -> jax.Array:
  return jnp.round(gamma * entropy(probabilities(rewards))).astype(jnp.int32)


def choose(state: FeathersState, key, num_clients: int, *, period: int = 15,
           gamma: float = 6.0, explore_share: float = 1.0
           ) -> tuple[FeathersState, jax.Array, jax.Array]:
  """Configurations for this round's clients.

  Returns (state, config ids (num_clients,), which clients explore
  (num_clients,) bool). A phase starts on rounds 0, period, 2·period, ...
  when none is running. In an exploration round each client explores with
  probability `explore_share` once any feedback has arrived (1: all of them,
  as published), and always before.
  """
  starts = (state.explore_left == 0) & (state.round % period == 0)
  explore_left = jnp.where(starts, exploration_rounds(state.rewards, gamma),
                           state.explore_left)
  exploring = explore_left > 0
  draw_key, share_key = jax.random.split(key)
  drawn = jax.random.choice(draw_key, state.rewards.shape[0], (num_clients,),
                            p=probabilities(state.rewards))
  best = jnp.full((num_clients,), jnp.argmax(state.rewards))
  had_feedback = jnp.sum(state.weight_sums) > 0
  explorers = exploring & (
      ~had_feedback
      | (jax.random.uniform(share_key, (num_clients,)) < explore_share))
  ids = jnp.where(explorers, drawn, best)
  new = state._replace(
      explore_left=jnp.where(exploring, explore_left - 1, 0).astype(jnp.int32),
      round=state.round + 1, exploring=exploring)
  return new, ids, explorers


def update(state: FeathersState, config_ids: jax.Array, gains: jax.Array,
           weights: jax.Array, *, alpha: float = 0.5,
           memory: str = "decay") -> FeathersState:
  """Reward update after an exploration round (call only for those)."""
  # Weights normalised over the round's clients, as in FEATHERS's Σ_k w_k.
  gain, used_weight = per_config_sums(config_ids, gains,
                                      weights / jnp.sum(weights),
                                      state.rewards.shape[0])
  used = used_weight > 0
  gain_sums = state.gain_sums + gain
  weight_sums = state.weight_sums + used_weight
  if memory == "mean":
    rewards = jnp.where(weight_sums > 0,
                        gain_sums / jnp.where(weight_sums > 0, weight_sums, 1),
                        0.0)
  else:
    rewards = jnp.where(used, state.rewards + alpha * (gain - state.rewards),
                        alpha * state.rewards)
  return state._replace(rewards=rewards, gain_sums=gain_sums,
                        weight_sums=weight_sums)


def strategy(period: int = 15, gamma: float = 6.0, alpha: float = 0.5,
             explore_aggregates: bool = False, memory: str = "decay",
             exploration: str = "round",
             explore_share: float = 0.5) -> Strategy:
  """FEATHERS's bandit behind the `Strategy` protocol; `explore_aggregates`,
  `memory = "mean"` and `exploration = "client"` depart from the paper
  (module docstring)."""
  share = explore_share if exploration == "client" else 1.0

  def choose_(state, key, num_clients):
    state, ids, explorers = choose(state, key, num_clients, period=period,
                                   gamma=gamma, explore_share=share)
    aggregate = ~explorers | explore_aggregates
    # As published a round aggregates all its clients or none of them.
    return state, ids, aggregate if exploration == "client" else aggregate[0]

  def update_(state, ids, gains, weights, aggregate, clients=None):
    del aggregate, clients  # The rewards move after exploration rounds only.
    updated = update(state, ids, gains, weights, alpha=alpha, memory=memory)
    return jax.tree.map(lambda a, b: jnp.where(state.exploring, a, b),
                        updated, state)

  return Strategy(init, choose_, update_,
                  lambda state: jnp.argmax(state.rewards),
                  lambda state: probabilities(state.rewards),
                  # Under explore_aggregates every round aggregates, so the
                  # log says which rounds explored.
                  lambda state: {"hp_exploring": bool(state.exploring)})
