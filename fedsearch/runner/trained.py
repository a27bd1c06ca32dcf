"""A finished run's model in one call: `fedsearch.load(workdir).predict(x)`."""

import dataclasses
import json
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fedsearch import data as data_lib
from fedsearch import models
from fedsearch import search_space as ss
from fedsearch.errors import ConfigError
from fedsearch.runner.workdir import load_weights


@dataclasses.dataclass(frozen=True)
class TrainedModel:
  """The model a run trained, its weights and its summary.

  Attributes:
    network: the flax module (the found genotype's network, or the fixed
      model the run trained).
    weights: its final parameters.
    genotype: the found or retrained architecture (None for a fixed model).
    summary: the run's summary.json (test accuracy, ε, ...).
  """

  network: nn.Module
  weights: dict
  genotype: ss.Genotype | None
  summary: dict

  @property
  def parameters(self) -> int:
    return int(sum(x.size for x in jax.tree.leaves(self.weights)))

  @property
  def dataset(self) -> str:
    return self.summary["dataset"]

  def predict(self, images) -> jax.Array:
    """Logits (N, classes) of raw images in the dataset's own units and
    layout (uint8 pixels 0..255, 0..16 for digits; NHWC, or NHW for
    one-channel data); the run's normalisation and input features
    (`summary["features"]`) are applied here."""
    images = np.asarray(images)
    shape = tuple(self.summary["input_shape"])
    if images.ndim == 3:
      images = images[..., None]
    x = data_lib.normalize(self.dataset, images,
                           data_lib.PIXEL_MAX[self.dataset])
    features = self.summary.get("features", "pixels")
    if features != "pixels":
      x = data_lib.transform(features, x)
    if x.shape[1:] != shape:
      raise ValueError(f"images of shape {images.shape[1:]} per example"
                       f" give inputs of {x.shape[1:]}; this model takes"
                       f" {shape} ({features}, NHWC)")
    return self.network.apply({"params": self.weights}, jnp.asarray(x))


def load(workdir) -> TrainedModel:
  """The model of the finished run in `workdir`, ready to predict."""
  path = pathlib.Path(workdir)
  summary_file = path / "summary.json"
  if not summary_file.exists():
    raise ConfigError(f"{path} holds no finished run (no summary.json)")
  summary = json.loads(summary_file.read_text())
  if summary.get("model"):
    network = models.make_module(summary["model"],
                                 summary["space"]["num_classes"])
    genotype = None
  else:
    # The summary holds the architecture the run trained: a retraining's
    # workdir has no genotype.json of its own (it read its search's).
    genotype = ss.Genotype.from_json(json.dumps(summary["genotype"]))
    space = ss.SearchSpace(**summary["space"])
    network = ss.derived_network(space, genotype)
  like = network.init(jax.random.key(0),
                      jnp.zeros((1, *summary["input_shape"])))["params"]
  return TrainedModel(network, load_weights(path, like, "final"), genotype,
                      summary)
