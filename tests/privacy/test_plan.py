"""The privacy plan: counts and ε against a direct dp_accounting composition."""

import dataclasses
import math

import dp_accounting
import numpy as np
import pytest
from jax_privacy import accounting as jp_accounting

from fedsearch.errors import ConfigError
from fedsearch.privacy import accounting
from fedsearch.privacy import plan as plan_lib
from fedsearch.privacy.plan import NoiseMultipliers, make_plan


def _rdp():
  return dp_accounting.rdp.RdpAccountant(
      orders=jp_accounting.RdpAccountantConfig().orders)


def _sizes():
  # Each client's size, released once with σ_n = 10 (the default).
  return dp_accounting.GaussianDpEvent(10.0)


def _subsampled(q, sigma):
  return dp_accounting.PoissonSampledDpEvent(
      q, dp_accounting.GaussianDpEvent(sigma))


def _plan(probe_every, rounds=12, search_rounds=4, local_steps=3, q=0.2,
          **kw):
  schedule = np.tile(np.arange(5), (rounds, 1))[:, :4]  # Clients 0-3 always.
  return make_plan(schedule, search_rounds=search_rounds,
                   local_steps=local_steps, sampling_rate=q, num_clients=5,
                   epsilon=3.0, delta=1e-5, truncation_delta_fraction=0.1,
                   accountant="rdp", probe_every=probe_every,
                   releases_per_probe=3, kappa=0.01, **kw)


def test_accountant_total_matches_direct_dp_accounting_composition():
  plan = _plan(probe_every=4)
  sigmas = NoiseMultipliers(gradient=1.3, loss=5.0)
  # 12 rounds x 3 steps = global steps 0..35; probes at 0, 4, ..., 32 (9),
  # of which steps 0..11 are search rounds (0, 4, 8: 3 probes).
  search_steps, train_steps = 4 * 3, 8 * 3
  probe_search, probe_train = 3, 6
  # A probe step releases the gradient and 3 losses of one Poisson sample:
  # one Gaussian on the whitened stack, sensitivity sqrt(1/σ_g² + 3/σ_l²).
  joint = (1.3**-2 + 3 * 5.0**-2) ** -0.5
  acc = _rdp()
  acc.compose(_sizes())
  acc.compose(_subsampled(0.2, 1.3), search_steps - probe_search)  # Weights.
  acc.compose(_subsampled(0.2, joint), probe_search)
  acc.compose(_subsampled(0.2, 1.3), search_steps)  # Architecture.
  acc.compose(_subsampled(0.2, 1.3), train_steps - probe_train)
  acc.compose(_subsampled(0.2, joint), probe_train)
  direct = acc.get_epsilon(plan.accounting_delta)
  assert plan.spent(sigmas, 12) == pytest.approx(direct, rel=1e-9)
  assert plan.counts(12) == {
      "weight_steps_search": 9, "probe_steps_search": 3,
      "arch_steps_search": 12, "weight_steps_train": 18,
      "probe_steps_train": 6, "hp_feedback": 0}
  # δ: the truncation's share is taken off the accountant's.
  assert plan.accounting_delta == pytest.approx(1e-5 * 0.9)


def test_spent_grows_round_by_round_from_the_sizes_release():
  plan = _plan(probe_every=4)
  sigmas = NoiseMultipliers(gradient=1.3, loss=5.0)
  spent = [plan.spent(sigmas, r) for r in range(0, 13, 3)]
  # Before round one only the clients' sizes are out.
  acc = _rdp()
  acc.compose(_sizes())
  assert spent[0] == pytest.approx(acc.get_epsilon(plan.accounting_delta),
                                   rel=1e-9)
  assert 0 < spent[0] < 0.5
  assert all(a < b for a, b in zip(spent, spent[1:]))


def test_calibration_splits_the_budget():
  plan = _plan(probe_every=2)
  sigmas = plan.noise_multipliers(0.0)
  reference = _plan(probe_every=0).noise_multipliers(0.0).gradient
  # σ_g = (1 + κ)·σ_ref; σ_l fills the rest of ε.
  assert sigmas.gradient == pytest.approx(1.01 * reference, rel=1e-3)
  assert plan.spent(sigmas, 12) == pytest.approx(3.0, rel=1e-3)
  assert plan.spent(sigmas, 12) <= 3.0 * (1 + 1e-6)
  breakdown = plan.breakdown(sigmas)
  assert breakdown["gradients_only"] < breakdown["total"]
  assert breakdown["loss_probes_only"] < breakdown["total"]


def test_a_given_noise_multiplier_over_the_budget_is_refused():
  with pytest.raises(ConfigError, match="privacy.noise_multiplier=0.3"):
    _plan(probe_every=0).noise_multipliers(0.3)


def test_accountant_total_with_feedback_matches_direct_composition():
  # 6 clients, 3 per round, 10 rounds of which 4 search; 2 local steps.
  schedule = np.array([[0, 1, 2], [3, 4, 5], [0, 2, 4], [1, 3, 5], [0, 1, 2],
                       [0, 1, 3], [2, 4, 5], [0, 2, 3], [1, 4, 5], [0, 3, 5]])
  plan = make_plan(schedule, search_rounds=4, local_steps=2, sampling_rate=0.3,
                   num_clients=6, epsilon=3.0, delta=1e-5,
                   truncation_delta_fraction=0.1, accountant="rdp",
                   feedback=True, feedback_fraction=0.2)
  sigmas = NoiseMultipliers(gradient=2.0, feedback=6.0)
  # Component-wise max over clients: search participations max 2 (client 0
  # in rounds 0 and 2 ...), training participations max 4 (client 0).
  counts = plan.counts(10)
  search = int(np.bincount(schedule[:4].ravel(), minlength=6).max())
  train = int(np.bincount(schedule[4:].ravel(), minlength=6).max())
  assert (search, train) == (2, 4)
  assert counts["hp_feedback"] == search
  acc = _rdp()
  acc.compose(_sizes())
  step = _subsampled(0.3, 2.0)
  acc.compose(step, 2 * search)  # Weight steps.
  acc.compose(step, 2 * search)  # Architecture steps.
  acc.compose(step, 2 * train)
  acc.compose(dp_accounting.GaussianDpEvent(6.0), search)  # Whole val split.
  assert plan.spent(sigmas, 10) == pytest.approx(
      acc.get_epsilon(plan.accounting_delta), rel=1e-9)
  # Calibration: gradients within 80 % of ε, the feedback fills it up.
  calibrated = plan.noise_multipliers(0.0)
  breakdown = plan.breakdown(calibrated)
  # The gradients' share (with the sizes, released before them) is 80 %.
  assert plan.spent(NoiseMultipliers(calibrated.gradient), 10) == (
      pytest.approx(2.4, rel=1e-3))
  assert breakdown["gradients_only"] < 2.4
  assert breakdown["total"] == pytest.approx(3.0, rel=1e-3)
  assert breakdown["total"] <= 3.0 * (1 + 1e-6)


def test_the_mechanisms_release_stream_is_what_the_plan_accounts():
  # A mechanism that, say, shares the noise out differently enters the plan
  # only through `release_stream`: here one that doubles every σ.
  def doubled(name, q, count, sigma):
    return accounting.ReleaseStream(name, q, count, 2 * sigma)

  plan = _plan(probe_every=0)
  custom = dataclasses.replace(plan, release_stream=doubled)
  assert custom.spent(NoiseMultipliers(1.0), 12) == pytest.approx(
      _plan(probe_every=0, size_noise_multiplier=20.0).spent(
          NoiseMultipliers(2.0), 12), rel=1e-12)
  assert custom.spent(NoiseMultipliers(1.0), 12) < plan.spent(
      NoiseMultipliers(1.0), 12)


def test_one_stage_search_has_no_separate_architecture_releases():
  plan = _plan(probe_every=0, arch_steps=False)
  assert plan.counts(12)["arch_steps_search"] == 0
  acc = _rdp()
  acc.compose(_sizes())
  acc.compose(_subsampled(0.2, 1.3), 12 * 3)  # Joint and weight steps only.
  assert plan.spent(NoiseMultipliers(1.3), 12) == pytest.approx(
      acc.get_epsilon(plan.accounting_delta), rel=1e-9)


def test_two_stages_spend_one_total_budget_composed_in_one_accountant():
  # A search calibrated to 30 % of ε = 3, then a retraining that composes
  # the search's releases and calibrates its σ for what is left.
  search = _plan(probe_every=0, rounds=6, search_rounds=6, stage_share=0.3)
  search = dataclasses.replace(search, accountant="pld")
  search_sigmas = search.noise_multipliers(0.0)
  assert search.spent(search_sigmas, 6) == pytest.approx(0.9, rel=1e-3)
  prior = plan_lib.PriorStage.from_json(
      search.as_prior(search_sigmas).to_json(), "search")
  schedule = np.zeros((10, 1), np.int32)  # One client holding all data.
  retrain = make_plan(schedule, search_rounds=0, local_steps=5,
                      sampling_rate=0.05, num_clients=1, epsilon=3.0,
                      delta=1e-5, truncation_delta_fraction=0.1,
                      accountant="pld", prior=prior)
  sigmas = retrain.noise_multipliers(0.0)
  total = retrain.spent(sigmas, 10)
  assert total == pytest.approx(3.0, rel=1e-3) and total <= 3.0 * (1 + 1e-6)
  # Both stages' truncation shares come off δ.
  assert retrain.accounting_delta == pytest.approx(1e-5 - 2 * 1e-6)
  # The total is dp_accounting's own composition of every release.
  acc = dp_accounting.pld.PLDAccountant(
      value_discretization_interval=1e-4)
  acc.compose(_sizes())  # The search's clients' sizes ...
  acc.compose(_subsampled(0.2, search_sigmas.gradient), 6 * 3)  # weights,
  acc.compose(_subsampled(0.2, search_sigmas.gradient), 6 * 3)  # arch,
  acc.compose(_sizes())  # ... then the retraining's.
  acc.compose(_subsampled(0.05, sigmas.gradient), 10 * 5)
  assert total == pytest.approx(acc.get_epsilon(retrain.accounting_delta),
                                rel=1e-6)
  breakdown = retrain.breakdown(sigmas)
  assert breakdown["earlier_stages_only"] == pytest.approx(
      search.spent(search_sigmas, 6), rel=0.02)  # At a slightly smaller δ.
  assert breakdown["this_stage_only"] < total
  # Nothing left: refused before any work.
  with pytest.raises(ConfigError, match="already spends"):
    make_plan(schedule, search_rounds=0, local_steps=5, sampling_rate=0.05,
              num_clients=1, epsilon=0.5, delta=1e-5,
              truncation_delta_fraction=0.1, accountant="pld", prior=prior)


@pytest.mark.parametrize("accountant", ["pld", "rdp"])
def test_the_sizes_release_is_counted_once_whatever_the_rounds(accountant):
  plan = dataclasses.replace(_plan(probe_every=0), accountant=accountant)
  streams = plan.streams(NoiseMultipliers(1.3), 12)
  sizes = [s for s in streams if s.name == "client_sizes"]
  assert sizes == [accounting.ReleaseStream("client_sizes", 1.0, 1, 10.0)]
  breakdown = plan.breakdown(NoiseMultipliers(1.3))
  # Alone, the sizes spend what one Gaussian with σ = 10 spends.
  assert breakdown["client_sizes_only"] == pytest.approx(accounting.epsilon(
      sizes, plan.accounting_delta, accountant), rel=1e-9)
  assert breakdown["gradients_only"] < breakdown["total"]
  # Each client's size bound is one more event that may truncate.
  assert plan.total_draws() == 5 + 4 * 3 * (2 * 4 + 8)


@pytest.mark.parametrize("field,kw", [
    ("privacy.size_noise_multiplier", {"size_noise_multiplier": 0.0}),
    ("privacy.stage_share", {"stage_share": 0.0}),
    ("federated.sampling_rate", {"q": 0.0}),
    ("nas.controller_warmup_rounds", {"arch_warmup_rounds": 5}),
])
def test_bad_plan_inputs_name_the_field(field, kw):
  with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
    _plan(probe_every=0, **kw)


def test_epsilon_inf_is_a_plan_without_noise_or_accounting():
  plan = dataclasses.replace(_plan(probe_every=4), epsilon=math.inf)
  assert not plan.private
  assert plan.noise_multipliers(0.0) == plan_lib.NoiseMultipliers(0.0, 0.0,
                                                                  0.0)
  assert plan.spent(plan.noise_multipliers(0.0), 3) == math.inf
  assert plan.breakdown(plan.noise_multipliers(0.0)) == {"total": math.inf}
  with pytest.raises(ConfigError, match="privacy.noise_multiplier=0"):
    plan.noise_multipliers(1.0)


def _tuned_plan(**kw):
  return _plan(probe_every=0, tuning=accounting.Tuning(5.0, 0.0), **kw)


def test_a_tuned_run_spends_the_tunings_selection_as_dp_accounting_does():
  plan = _tuned_plan()
  sigmas = plan.noise_multipliers(0.0)
  # dp_accounting's own repeat-and-select of the run's whole composition.
  run = dp_accounting.ComposedDpEvent([
      _sizes(),
      dp_accounting.SelfComposedDpEvent(_subsampled(0.2, sigmas.gradient),
                                        4 * 3),  # Search weight steps,
      dp_accounting.SelfComposedDpEvent(_subsampled(0.2, sigmas.gradient),
                                        4 * 3),  # architecture steps,
      dp_accounting.SelfComposedDpEvent(_subsampled(0.2, sigmas.gradient),
                                        8 * 3)])  # training steps.
  acc = _rdp()
  acc.compose(dp_accounting.dp_event.RepeatAndSelectDpEvent(run, 5.0, 0.0))
  direct = acc.get_epsilon(plan.accounting_delta)
  assert plan.spent(sigmas, 12) == pytest.approx(direct, rel=1e-9)
  assert plan.spent(sigmas, 12) == pytest.approx(3.0, rel=1e-3)
  # The selection costs more noise than one run alone, far less than the
  # composition of five.
  alone = _plan(probe_every=0).noise_multipliers(0.0).gradient
  five = dataclasses.replace(_plan(probe_every=0, rounds=60, search_rounds=20),
                             num_clients=5).noise_multipliers(0.0).gradient
  assert alone < sigmas.gradient < five
  # The tuning's runs share its truncation δ.
  assert plan.truncation_tail() == pytest.approx(
      _plan(probe_every=0).truncation_tail() / 5.0)


@pytest.mark.parametrize("kw, match", [
    ({}, r"privacy\.accountant='rdp'"),
    ({"stage_share": 0.5}, r"privacy\.stage_share=0\.5"),
])
def test_a_tuning_is_refused_where_its_bound_does_not_apply(kw, match):
  schedule = np.zeros((4, 1), np.int32)
  with pytest.raises(ConfigError, match=match):
    make_plan(schedule, search_rounds=0, local_steps=2, sampling_rate=0.1,
              num_clients=1, epsilon=3.0, delta=1e-5,
              truncation_delta_fraction=0.1,
              accountant="rdp" if kw else "pld",
              tuning=accounting.Tuning(4.0), **kw)


def test_a_tuned_search_is_no_earlier_stage_of_a_retraining():
  search = _tuned_plan()
  prior = plan_lib.PriorStage.from_json(
      search.as_prior(NoiseMultipliers(2.0)).to_json(), "search")
  assert prior.tuning == accounting.Tuning(5.0, 0.0)
  with pytest.raises(ConfigError, match=r"one run of a private tuning"):
    make_plan(np.zeros((4, 1), np.int32), search_rounds=0, local_steps=2,
              sampling_rate=0.1, num_clients=1, epsilon=3.0, delta=1e-5,
              truncation_delta_fraction=0.1, accountant="rdp", prior=prior)


def _per_client(rows):
  """(clients, kinds) counts from {kind: count} rows."""
  return np.array([[row.get(kind, 0) for kind in plan_lib._KINDS]
                   for row in rows])


@pytest.mark.parametrize("rows, expected", [
    # HyFreeDP, 10 of 100 clients a round: every client takes 20 steps, one
    # of them 9 probe rounds, another none. The component-wise maximum
    # would charge 20 + 9.
    ([{"weight_steps_train": 20}, {"weight_steps_train": 11,
                                    "probe_steps_train": 9}],
     {"weight_steps_train": 11, "probe_steps_train": 9}),
    # No client dominates: the most probes (3) with the most steps (14).
    ([{"weight_steps_train": 7, "probe_steps_train": 3},
      {"weight_steps_train": 13, "probe_steps_train": 1}],
     {"weight_steps_train": 11, "probe_steps_train": 3}),
    # The gradient kinds are one mechanism: the client with the most steps
    # (12), with the most feedback of any (2).
    ([{"weight_steps_search": 4, "arch_steps_search": 4, "hp_feedback": 2,
       "weight_steps_train": 2},
      {"weight_steps_search": 2, "arch_steps_search": 2, "hp_feedback": 1,
       "weight_steps_train": 8}],
     {"weight_steps_search": 2, "arch_steps_search": 2, "hp_feedback": 2,
      "weight_steps_train": 8}),
])
def test_most_exposed_counts_on_hand_numbers(rows, expected):
  counts = plan_lib.most_exposed(_per_client(rows))
  assert counts == {kind: expected.get(kind, 0) for kind in plan_lib._KINDS}


@pytest.mark.parametrize("seed", range(5))
def test_most_exposed_dominates_every_client_and_the_old_bound(seed):
  rng = np.random.default_rng(seed)
  per_client = rng.integers(0, 6, (7, len(plan_lib._KINDS)))
  counts = plan_lib.most_exposed(per_client)
  kinds = plan_lib._KINDS
  probes = lambda c: sum(c[kinds.index(k)] for k in plan_lib._PROBE_KINDS)
  steps = lambda c: probes(c) + sum(c[kinds.index(k)]
                                    for k in plan_lib._GRADIENT_KINDS)
  bound = [counts[k] for k in kinds]
  assert probes(bound) == max(probes(c) for c in per_client)
  assert steps(bound) == max(steps(c) for c in per_client)
  assert counts["hp_feedback"] == per_client[:, -1].max()
  assert all(counts[k] <= per_client[:, i].max() for i, k in enumerate(kinds))


def test_partial_participation_epsilon_is_the_most_exposed_clients():
  # 4 clients, 2 a round, one local step, a probe every 2 global steps
  # (rounds 0, 2, 4, ...): clients 0-1 take the even rounds (all probes),
  # clients 2-3 the odd ones (none).
  schedule = np.array([[0, 1], [2, 3]] * 4)
  plan = make_plan(schedule, search_rounds=0, local_steps=1,
                   sampling_rate=0.2, num_clients=4, epsilon=3.0, delta=1e-5,
                   truncation_delta_fraction=0.1, accountant="rdp",
                   probe_every=2, releases_per_probe=3, kappa=0.01)
  sigmas = NoiseMultipliers(gradient=1.3, loss=5.0)
  joint = (1.3**-2 + 3 * 5.0**-2) ** -0.5
  assert plan.counts(8)["probe_steps_train"] == 4
  assert plan.counts(8)["weight_steps_train"] == 0
  acc = _rdp()
  acc.compose(_sizes())
  acc.compose(_subsampled(0.2, joint), 4)  # Client 0: four probe steps.
  assert plan.spent(sigmas, 8) == pytest.approx(
      acc.get_epsilon(plan.accounting_delta), rel=1e-9)


def test_weight_releases_are_the_most_of_any_client():
  # Client 0 searches twice (weights and architecture), client 1 trains
  # three times: the dominating count splits as client 1's plain steps, but
  # an audit of the weights must see client 1's three releases (and client
  # 0's two, fewer).
  schedule = np.array([[0], [0], [1], [1], [1]])
  plan = make_plan(schedule, search_rounds=2, local_steps=1,
                   sampling_rate=0.2, num_clients=2, epsilon=3.0, delta=1e-5,
                   truncation_delta_fraction=0.1, accountant="rdp")
  assert plan.weight_releases(5) == 3
  assert plan.weight_releases(2) == 2
