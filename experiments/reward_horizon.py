r"""How a hyperparameter reward ranks the configurations it chooses among.

From round starts of the fixed recipe's own trajectory under the preset
`configs/hpo.py:DATASET` (its grid, schedule, clients and σ), every
configuration k of the grid is given to all of the round's clients, and each
reward a search could read is computed without its privacy noise (the
signal a search sees at best; no ε is spent, the tool is for development):

  client        each client's own validation-loss decrease over its round
                (the methods as published), mean over the clients' splits;
  client_clip   the same with each example's decrease clipped to
                ±hpo.feedback_clip, as the privatised gain clips it;
  credited      the client gain plus the released-noise credit
                (1 − Σp²)·(½[ℓ(θ + z') + ℓ(θ − z')] − ℓ(θ)), z' a fresh
                draw of the noise the client's round adds to its weights:
                a quadratic correction for the noise a client's own update
                carries and the round's mean does not;
  client_accuracy  the change of each client's own validation accuracy;
  client_brier  the decrease of each client's own validation Brier score
                (`hpo.feedback_measure = "brier"`), clipped as client_clip;
  client_soft_error  the same for 1 − p_y (`"soft_error"`);
  released_R    the released model's decrease after R rounds of k by every
                client, from the same start (R = 1: the round reward's
                signal), on the start round's clients' splits;
  released_accuracy_R  the released model's accuracy change after R rounds;
  released_soft_error_R  its soft-error (1 − p_y) decrease after R rounds:
                the soft-error gain's signal over a longer horizon.

It prints each reward's mean per configuration and its Spearman correlation
over the configurations with every released_R (and with `--long_run`, e.g.
each configuration's accuracy as a fixed row of the whole schedule), and
writes the rows to `--out`.

  python -m experiments.reward_horizon --seeds=0,1,2
"""

import dataclasses
import functools
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags
from scipy import stats

from experiments.configs import hpo
from fedsearch import federated as fed
from fedsearch.federated import client as client_lib
from fedsearch.federated.algorithm import client_key
from fedsearch.hyperparameters import feedback
from fedsearch.privacy import mechanisms
from fedsearch.runner import job as job_lib
from fedsearch.runner import loop, phases, states

_DATASET = flags.DEFINE_enum("dataset", "digits", list(hpo.DATASETS),
                             "the preset's dataset")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "one recipe trajectory per seed")
_STARTS = flags.DEFINE_list("starts", ["0", "7", "14"],
                            "round starts (rounds of the recipe before)")
_HORIZONS = flags.DEFINE_list("horizons", ["1", "3", "9"],
                              "rounds R of the released_R rewards")
_DATA_DIR = flags.DEFINE_string("data_dir", "../shared/data", "data folder")
_LONG_RUN = flags.DEFINE_list(
    "long_run", [], "optional LR:MOMENTUM:ACCURACY entries, e.g. each"
    " configuration's test accuracy as a fixed row of the whole schedule:"
    " every reward is also ranked against them")
_ROWS = flags.DEFINE_string("rows", "", "summarise the rows of this file"
                            " (an earlier run's --out) instead of running")
_OUT = flags.DEFINE_string("out", "workdir/reward_horizon.json",
                           "rows, one per (seed, start, configuration)")

# What each released_* target measures: per-example decrease of the measure
# (the error's decrease is the accuracy's change).
_RELEASED_MEASURES = {"loss": "released_{}", "error": "released_accuracy_{}",
                      "soft_error": "released_soft_error_{}"}


def noise_displacement(noise_optimizer: optax.GradientTransformation,
                       weights, steps: int, noise_mask_at) -> dict:
  """z': what `steps` steps of the client optimiser would move `weights` by
  on the noise alone, drawn afresh (the optimiser is linear in its input and
  in the weights it decays, so a run from zero weights on zero gradients is
  exactly the noise's part)."""
  zeros = jax.tree.map(jnp.zeros_like, weights)

  def body(carry, index):
    displacement, state = carry
    updates, state = noise_optimizer.update(zeros, state, displacement,
                                            noise_mask=noise_mask_at(index))
    return (optax.apply_updates(displacement, updates), state), None

  (displacement, _), _ = jax.lax.scan(
      body, (zeros, noise_optimizer.init(zeros)), jnp.arange(steps))
  return displacement


class _Probe:
  """One preset's job, its recipe, and the jitted pieces the rewards use."""

  def __init__(self, seed: int):
    config = hpo.get_config(f"{_DATASET.value},fedex")  # The grid as pool.
    config.data_dir, config.seed = _DATA_DIR.value, seed
    # Reproducible draws: nothing here is released.
    config.privacy.randomness = "seeded"
    job = job_lib.build_job(config)
    self.job, self.phase = job, phases.build_phase(job)
    self.inputs = loop.RoundInputsBuilder(job)
    pool = job.hpo.pool
    self.pool = pool
    self.recipe = int(np.flatnonzero(
        (pool["learning_rate"] == config.client.learning_rate)
        & (pool["momentum"] == config.client.momentum))[0])
    self.clip = job.client_config.feedback_clip
    strategy = job.nas
    self.strategy = strategy
    self.client_config = dataclasses.replace(
        job.client_config, feedback_noise_multiplier=0.0)
    self.local = jax.jit(fed.make_local_update(
        strategy.model, self.client_config, mechanism=job.mechanism,
        optimizer=job.client_optimizer, arch_step=strategy.arch_step,
        reads_validation=strategy.traits.reads_validation,
        active_weights=strategy.active_weights))
    # One jitted per-example evaluator for each measure a gain can read.
    self.measures = {
        name: jax.jit(mechanisms.example_losses(
            strategy.model,
            feedback.measure(name, mechanisms.softmax_cross_entropy)))
        for name in feedback.MEASURES}
    self.noise = jax.jit(self._noise, static_argnums=(3,))
    self.base_key = job.randomness.noise_key()

  def _noise(self, start: fed.ClientState, key, expected, steps, h):
    c = self.client_config
    keys = client_lib.client_keys(key)
    h = {name: getattr(c, name) for name in client_lib.TUNABLE} | h
    optimizer = self.job.mechanism.private_optimizer(
        c.noise_multiplier * c.clip_norm,
        jax.random.fold_in(keys.feedback, 1), expected[0],
        self.job.client_optimizer.transform(h))
    return noise_displacement(
        optimizer, start.params.weights, steps,
        lambda index: self.strategy.active_weights(
            *start.params, jax.random.fold_in(keys.model, index)))

  def round_inputs(self, round_: int, config: int) -> fed.RoundInputs:
    return self.inputs(round_, self.phase, np.full(
        self.inputs.client_slots(round_, self.phase), config), True)

  def client_rewards(self, server, round_: int, config: int):
    """Per client: its validation split's size and its rewards over one
    round of `config` (loss decrease: plain, clipped, credited; accuracy
    change), and how to evaluate a released model on its feedback child
    and rows, with the start's values there."""
    inputs = self.round_inputs(round_, config)
    fx, fy = self.job.federation.x, self.job.federation.y
    weights = inputs.client_weights / inputs.client_weights.sum()
    unreleased = 1.0 - float(np.sum(weights**2))
    h = {name: jnp.float32(v[config]) for name, v in self.pool.items()}
    key = jax.random.fold_in(self.base_key, round_)
    start = server.client_state()
    rows, evaluations = [], []
    for slot, client in enumerate(inputs.client_ids):
      if client < 0:
        continue

      def batch(idx, padding):
        return fed.Batches(fx[idx[slot]], fy[idx[slot]],
                           jnp.asarray(padding[slot]))
      batches = fed.ClientBatches(
          batch(inputs.train_idx, inputs.train_padding),
          None if inputs.val_idx is None
          else batch(inputs.val_idx, inputs.val_padding))
      k = client_key(key, int(client))
      expected = jnp.asarray(inputs.expected_batch[slot])
      new, _ = self.local(start, batches, k, expected,
                          round_ * inputs.train_idx.shape[1], h)
      rows_of = np.flatnonzero(~inputs.feedback_padding[slot])
      vx = fx[inputs.feedback_idx[slot][rows_of]]
      vy = fy[inputs.feedback_idx[slot][rows_of]]
      child = client_lib.client_keys(k).feedback_model

      def measured(name, params, vx=vx, vy=vy, child=child):
        return np.asarray(self.measures[name](params.weights, params.arch,
                                              vx, vy, child))
      evaluate = functools.partial(measured, "loss")

      def accuracy(params, measured=measured):
        return 1.0 - measured("error", params)

      def clipped_decrease(name):
        return float(np.mean(np.clip(
            measured(name, start.params) - measured(name, new.params),
            -self.clip, self.clip)))
      before, after = evaluate(start.params), evaluate(new.params)
      accuracy_before = accuracy(start.params)
      z = self.noise(start, k, expected, inputs.train_idx.shape[1], h)
      moved = [fed.ModelParams(jax.tree.map(lambda w, d, s=s: w + s * d,
                                            new.params.weights, z),
                               new.params.arch) for s in (1.0, -1.0)]
      credit = unreleased * (0.5 * (evaluate(moved[0]) + evaluate(moved[1]))
                             - after)
      decrease = before - after
      rows.append({"client": int(client), "n": len(before),
                   "client_gain": float(np.mean(decrease)),
                   "client_clip": float(np.mean(np.clip(decrease, -self.clip,
                                                        self.clip))),
                   "credited": float(np.mean(decrease + credit)),
                   "client_accuracy": float(np.mean(
                       accuracy(new.params) - accuracy_before)),
                   "client_brier": clipped_decrease("brier"),
                   "client_soft_error": clipped_decrease("soft_error")})
      evaluations.append((measured, {name: measured(name, start.params)
                                     for name in _RELEASED_MEASURES}))
    return rows, evaluations

  def released_rewards(self, server, round_: int, config: int, evaluations,
                       horizons: list[int]) -> dict:
    """For each R, the mean per-example decrease of each released measure,
    over the start round's clients' splits, after R rounds of `config`."""
    out, state = {}, server
    for r in range(1, max(horizons) + 1):
      state, _ = self.phase.algorithm.apply(
          state, self.job.federation.x, self.job.federation.y,
          self.round_inputs(round_ + r - 1, config), self.base_key,
          round_ + r - 1, True)
      if r in horizons:
        for name, label in _RELEASED_MEASURES.items():
          decreases = [before[name] - measured(name, state.params)
                       for measured, before in evaluations]
          out[label.format(r)] = float(np.mean(np.concatenate(decreases)))
    return out


def run_seed(seed: int, starts: list[int], horizons: list[int]) -> list[dict]:
  probe = _Probe(seed)
  server = states.supernet_state(probe.job, probe.phase)
  x, y = probe.job.federation.x, probe.job.federation.y
  rows = []
  for round_ in range(max(starts) + 1):
    if round_ in starts:
      for config in range(len(probe.pool["learning_rate"])):
        clients, evaluations = probe.client_rewards(server, round_, config)
        released = probe.released_rewards(server, round_, config,
                                          evaluations, horizons)
        n = np.array([c["n"] for c in clients], float)
        row = {"seed": seed, "start": round_, "config": config,
               "learning_rate": float(probe.pool["learning_rate"][config]),
               "momentum": float(probe.pool["momentum"][config])}
        for name in ("client_gain", "client_clip", "credited",
                     "client_accuracy", "client_brier",
                     "client_soft_error"):
          row[name] = float(np.average([c[name] for c in clients],
                                       weights=n))
        rows.append(row | released)
        print(json.dumps(rows[-1]), flush=True)
    server, _ = probe.phase.algorithm.apply(
        server, x, y, probe.round_inputs(round_, probe.recipe),
        probe.base_key, round_, True)
  return rows


def _long_run(entries: list[str]) -> dict[tuple[float, float], float]:
  out = {}
  for entry in entries:
    parts = entry.split(":")
    if len(parts) != 3:
      raise ValueError(f"--long_run entry {entry!r}: expected"
                       " LR:MOMENTUM:ACCURACY")
    out[float(parts[0]), float(parts[1])] = float(parts[2])
  return out


def summarise(rows: list[dict], long_run: dict | None = None) -> str:
  rewards = [k for k in rows[0] if k not in (
      "seed", "start", "config", "learning_rate", "momentum", "long_run")]
  targets = [k for k in rewards if k.startswith("released_")]
  if long_run:
    rows = [r | {"long_run": long_run[r["learning_rate"], r["momentum"]]}
            for r in rows]
    targets.append("long_run")
  configs = sorted({r["config"] for r in rows})
  lines = ["| (lr, momentum) | " + " | ".join(rewards) + " |",
           "|---|" + "---|" * len(rewards)]
  for c in configs:
    mine = [r for r in rows if r["config"] == c]
    lines.append(f"| ({mine[0]['learning_rate']:g}, {mine[0]['momentum']:g})"
                 " | " + " | ".join(f"{np.mean([r[k] for r in mine]):.3f}"
                                    for k in rewards) + " |")
  lines += ["", "Spearman over the configurations, mean over (seed, start):",
            "| reward | " + " | ".join(targets) + " |",
            "|---|" + "---|" * len(targets)]
  groups = {}
  for r in rows:
    groups.setdefault((r["seed"], r["start"]), []).append(r)
  for k in rewards:
    rhos = [[stats.spearmanr([r[k] for r in g], [r[t] for r in g])[0]
             for g in groups.values()] for t in targets]
    lines.append(f"| {k} | " + " | ".join(f"{np.mean(v):.2f}" for v in rhos)
                 + " |")
  return "\n".join(lines)


def main(argv):
  del argv
  starts = [int(s) for s in _STARTS.value]
  horizons = [int(h) for h in _HORIZONS.value]
  long_run = _long_run(_LONG_RUN.value)
  grid = {(lr, m) for lr in hpo.GRID["learning_rate"]["choices"]
          for m in hpo.GRID["momentum"]["choices"]}
  if long_run and set(long_run) != grid:
    raise app.UsageError(f"--long_run must give every (lr, momentum) of the"
                         f" preset's grid once: {sorted(grid)}")
  if _ROWS.value:
    print(summarise(json.loads(pathlib.Path(_ROWS.value).read_text()),
                    long_run))
    return
  rows = []
  for seed in _SEEDS.value:
    rows += run_seed(int(seed), starts, horizons)
    out = pathlib.Path(_OUT.value)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))
  print(summarise(rows, long_run))


if __name__ == "__main__":
  app.run(main)
