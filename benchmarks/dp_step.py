r"""One DP-SGD step: non-DP vs plain-vmap DP vs the ghost-norm backend.

Each case is a whole jitted SGD step (gradient, then for DP the clipped sum,
Gaussian noise σC, the mean over the batch, then the update), params donated,
on random inputs of the model's shape. Cases are timed interleaved (round
robin, `--rounds` rounds of `--steps` steps) so that machine drift hits all
of them alike; the median step time and its ratio to the non-DP step of the
same run are printed as a markdown table.

Models: `cnn`, the 6-conv tanh CNN of ../shared/BENCHMARKS.md (0.55 M
parameters, 32x32x3), and `derived`, a model derived from the DPNAS search
space (every edge a tanh separable 3x3 convolution, 32x32x3).

  python -m benchmarks.dp_step                        # GPU: batches 256,1024
  python -m benchmarks.dp_step --batches=32,128       # what CPU runs reduce to

With torch and opacus installed, `--opacus` adds Opacus's hook-based DP step
on the same CNN in PyTorch.
"""

import statistics
import time

import jax
import jax.numpy as jnp
import optax
from absl import app, flags

from experiments import cli, reporting
from fedsearch import models, search_space as ss
from fedsearch.privacy import mechanisms, private_optimizer

_MODELS = flags.DEFINE_list("models", ["cnn", "derived"], "cnn, derived")
_BATCHES = flags.DEFINE_list(
    "batches", None, "batch sizes (default 256,1024 on an accelerator,"
    " 32,128 on CPU: the reduced form)")
_STEPS = flags.DEFINE_integer("steps", None, "steps per timed call"
                              " (default 10; 2 on CPU)")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "interleaved timing rounds")
_CASES = flags.DEFINE_list(
    "cases", ["non_dp", "vmap", "vmap_nan_safe", "ghost"],
    "non_dp, vmap (jax-privacy, nan_safe=False), vmap_nan_safe, ghost")
_OPACUS = flags.DEFINE_bool("opacus", False, "also time Opacus (needs torch)")

CLIP_NORM, NOISE_MULTIPLIER, LEARNING_RATE = 1.0, 1.0, 0.1


def derived_space_model():
  space = ss.SearchSpace(op_set="dpnas", channels=16, nodes=3, cells=2,
                         groups=4, num_classes=10, head="gap")
  edges = tuple((to, src, "sep_conv_3x3_tanh")
                for to in range(1, space.nodes + 1) for src in range(to))
  genotype = ss.Genotype("dpnas", space.nodes, edges)
  model = ss.derived_network(space, genotype)
  return ss.derived_model(space, genotype), model


def build(name: str):
  if name == "cnn":
    return models.tanh_cnn_model(), models.TanhCNN()
  if name == "derived":
    return derived_space_model()
  raise ValueError(f"--models: {name!r} is not one of cnn, derived")


def clipped_sum(model: mechanisms.Model, case: str):
  """The clipped per-example gradient sum of a DP `case` (flat clipping),
  as the local mechanism's weight steps compute it."""
  if case == "ghost":
    mechanism = mechanisms.local(dp_backend="ghost")
  elif case in ("vmap", "vmap_nan_safe"):
    mechanism = mechanisms.local(dp_backend="vmap",
                                 nan_safe=case == "vmap_nan_safe")
  else:
    raise ValueError(f"--cases: {case!r} is not one of {_CASES.default}")
  return mechanism.weight_gradient(model, mechanisms.softmax_cross_entropy,
                                   CLIP_NORM)


def make_step(model: mechanisms.Model, case: str, batch: int):
  """A jitted `(weights, x, y, key) -> weights` SGD step of `case`."""
  if case == "non_dp":
    mean_loss = mechanisms.mean_loss(model, mechanisms.softmax_cross_entropy)

    def step(w, x, y, key):
      del key
      return jax.tree.map(lambda p, g: p - LEARNING_RATE * g, w,
                          jax.grad(mean_loss)(w, None, x, y, None))
  else:
    clipped = clipped_sum(model, case)

    def step(w, x, y, key):
      opt = private_optimizer(NOISE_MULTIPLIER * CLIP_NORM, key, batch,
                              optax.sgd(LEARNING_RATE))
      updates, _ = opt.update(clipped(w, None, x, y, None), opt.init(w), w)
      return optax.apply_updates(w, updates)

  return jax.jit(step, donate_argnums=0)


def time_cases(steps_by_case, weights, x, y, steps, rounds):
  """Median seconds per step of each case, timed round robin."""
  state = {}
  for case, step in steps_by_case.items():
    w = jax.tree.map(jnp.copy, weights)
    state[case] = jax.block_until_ready(step(w, x, y, jax.random.key(0)))
  times = {case: [] for case in steps_by_case}
  for r in range(rounds):
    for case, step in steps_by_case.items():
      w = state[case]
      start = time.perf_counter()
      for s in range(steps):
        w = step(w, x, y, jax.random.key(r * steps + s))
      state[case] = jax.block_until_ready(w)
      times[case].append((time.perf_counter() - start) / steps)
  return {case: statistics.median(t) for case, t in times.items()}


def opacus_step_time(batch: int, steps: int, rounds: int) -> float | None:
  try:
    import torch  # pylint: disable=g-import-not-at-top
    from opacus import GradSampleModule  # pylint: disable=g-import-not-at-top
  except ImportError:
    print("opacus: torch/opacus not installed, skipped")
    return None
  device = "cuda" if torch.cuda.is_available() else "cpu"
  layers, cin = [], 3
  for i, c in enumerate((32, 32, 64, 64, 128, 128)):
    layers += [torch.nn.Conv2d(cin, c, 3, padding=1), torch.nn.Tanh()]
    if i % 2:
      layers.append(torch.nn.MaxPool2d(2))
    cin = c
  net = torch.nn.Sequential(*layers, torch.nn.Flatten(),
                            torch.nn.Linear(128 * 16, 128), torch.nn.Tanh(),
                            torch.nn.Linear(128, 10)).to(device)
  model = GradSampleModule(net)
  x = torch.randn(batch, 3, 32, 32, device=device)
  y = torch.randint(0, 10, (batch,), device=device)

  def step():
    model.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    params = [p for p in model.parameters() if p.requires_grad]
    norms = torch.stack([p.grad_sample.reshape(batch, -1).norm(dim=1)
                         for p in params]).norm(dim=0)
    factor = (CLIP_NORM / (norms + 1e-6)).clamp(max=1.0)
    with torch.no_grad():
      for p in params:
        g = torch.einsum("b,b...->...", factor, p.grad_sample)
        g += NOISE_MULTIPLIER * CLIP_NORM * torch.randn_like(g)
        p -= LEARNING_RATE * g / batch
        p.grad_sample = None

  step()
  times = []
  for _ in range(rounds):
    if device == "cuda":
      torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
      step()
    if device == "cuda":
      torch.cuda.synchronize()
    times.append((time.perf_counter() - start) / steps)
  return statistics.median(times)


def main(argv):
  del argv
  on_cpu = jax.default_backend() == "cpu"
  batches = [int(b) for b in (_BATCHES.value or
                              (["32", "128"] if on_cpu else ["256", "1024"]))]
  steps = _STEPS.value or (2 if on_cpu else 10)
  import flax, jax_privacy  # pylint: disable=g-import-not-at-top,multiple-imports
  print(f"{reporting.machine_line()}, flax {flax.__version__}, optax"
        f" {optax.__version__}, jax-privacy {jax_privacy.__version__}")
  print(f"median of {_ROUNDS.value} interleaved rounds of {steps} steps;"
        f" {'reduced CPU form' if on_cpu and not _BATCHES.value else ''}")
  print("| model | params | batch | " + " | ".join(
      f"{c} ms (× non-DP)" for c in _CASES.value) + " |")
  print("|---|---|---|" + "---|" * len(_CASES.value))
  for name in _MODELS.value:
    model, module = build(name)
    for batch in batches:
      x = jax.random.normal(jax.random.key(1), (batch, 32, 32, 3))
      y = jnp.arange(batch) % 10
      weights = module.init(jax.random.key(0), x[:1])["params"]
      n_params = sum(a.size for a in jax.tree.leaves(weights))
      steps_by_case = {c: make_step(model, c, batch) for c in _CASES.value}
      t = time_cases(steps_by_case, weights, x, y, steps, _ROUNDS.value)
      base = t.get("non_dp")
      cells = [f"{1e3 * t[c]:.2f}" + (f" ({t[c] / base:.2f}×)" if base else "")
               for c in _CASES.value]
      print(f"| {name} | {n_params / 1e6:.2f} M | {batch} | "
            + " | ".join(cells) + " |", flush=True)
      if _OPACUS.value and name == "cnn":
        opacus = opacus_step_time(batch, steps, _ROUNDS.value)
        if opacus is not None:
          print(f"| cnn, Opacus (torch) | | {batch} | {1e3 * opacus:.2f} ms;"
                f" ghost is {opacus / t['ghost']:.2f}× faster |"
                if "ghost" in t else f"| Opacus | | {batch} |"
                f" {1e3 * opacus:.2f} ms |", flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
