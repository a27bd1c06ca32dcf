"""HyFreeDP's client optimiser (Liu, Bu et al., ICLR 2025).

Automatic per-example clipping, the base optimiser at unit rate, and a step
size η that the server fits from privatised loss probes (`privacy.auto_lr`):
every K global steps a client releases the loss of the step's own batch at
θ + s·η·u for s in the probe scales; the server averages the clients'
reports (so their noise shrinks by √m before the nonlinear fit) and refits
η. The state the server carries is `HyFreeState`.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedsearch.optimizers.base import ClientOptimizer, StepProbe
from fedsearch.privacy import auto_lr


class HyFreeState(NamedTuple):
  learning_rate: auto_lr.AutoLRState
  report: auto_lr.ProbeReport  # this round's probes, averaged by the server
  # Under shared noise (`AutoLRConfig.shared_noise`): the weights' update the
  # server released last round over the η it was taken with, the public
  # direction the probes follow; None otherwise.
  direction: object = None


def hyfree(config: auto_lr.AutoLRConfig, noised_sum=None) -> ClientOptimizer:
  """`noised_sum`: the mechanism's scalar release (default: local noise).

  With `config.shared_noise` (trust `aggregate`, one local step) a client's
  own update carries only its share of the noise, so the probes follow the
  update the server released last round (`HyFreeState.direction`) from the
  round-start weights: every release stays a function of the round-start
  state. The first round has no direction yet: its probes all read L(θ),
  and η stays.
  """

  def init(weights=None):
    direction = None
    if config.shared_noise:
      if weights is None:
        raise ValueError("HyFreeDP under shared noise carries a direction"
                         " shaped like the weights: init(weights)")
      direction = jax.tree.map(jnp.zeros_like, weights)
    return HyFreeState(auto_lr.init(config), auto_lr.ProbeReport(
        jnp.zeros(config.releases_per_probe, jnp.float32), jnp.float32(0.0),
        jnp.float32(0.0)), direction)

  def transform(h):
    # The learning rate is η, applied in `update`.
    return optax.chain(optax.add_decayed_weights(h["weight_decay"]),
                       optax.sgd(1.0, h["momentum"]))

  def update(updates, state: HyFreeState, probe: StepProbe):
    # The step index is the same for every client, so under vmap this stays
    # a real branch: probes cost only on probe steps.
    def probed():
      new = auto_lr.probe_losses(
          lambda s: (probe.loss_at(s) if state.direction is None
                     else probe.loss_at(s, state.direction)),
          state.learning_rate,
          config, jax.random.fold_in(probe.key, probe.global_step),
          noised_sum)
      # Typed like the carried report (device-varying under shard_map).
      return jax.tree.map(lambda x, old: x + jnp.zeros_like(old), new,
                          state.report)

    report = jax.lax.cond(probe.global_step % config.probe_every == 0,
                          probed, lambda: state.report)
    eta = state.learning_rate.learning_rate
    return jax.tree.map(lambda u: eta * u, updates), state._replace(
        report=report)

  def server_update(state: HyFreeState, applied=None) -> HyFreeState:
    report = state.report
    lr_state = jax.lax.cond(
        report.probed > 0.5,
        lambda: auto_lr.update(state.learning_rate, report.losses, config,
                               report.noise_std),
        lambda: state.learning_rate)
    direction = state.direction
    if config.shared_noise:
      # Public: post-processing of this round's released update.
      eta = state.learning_rate.learning_rate
      direction = jax.tree.map(lambda a: (a / eta).astype(a.dtype), applied)
    return HyFreeState(lr_state, jax.tree.map(jnp.zeros_like, report),
                       direction)

  def map_weights(state: HyFreeState, f) -> HyFreeState:
    if state.direction is None:
      return state
    return state._replace(direction=f(state.direction))

  def metrics(state: HyFreeState) -> dict:
    return {"learning_rate": float(state.learning_rate.learning_rate),
            "loss_clip": float(state.learning_rate.loss_clip)}

  return ClientOptimizer(
      name="hyfree", clipping="auto", init=init, transform=transform,
      update=update, server_update=server_update, metrics=metrics,
      map_weights=map_weights, probe_every=config.probe_every,
      releases_per_probe=config.releases_per_probe)
