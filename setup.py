"""fedsearch: federated, differentially private architecture + hyperparameter search in JAX."""

import setuptools

setuptools.setup(
    name="fedsearch",
    version="0.1.0",
    description=(
        "Federated neural architecture and hyperparameter search under "
        "differential privacy, in JAX."
    ),
    packages=setuptools.find_packages(include=["fedsearch", "fedsearch.*"]),
    python_requires=">=3.11",
    # Versions verified to install and run together on Python 3.11 (CPU).
    install_requires=[
        "jax>=0.10.2,<0.13",
        "flax>=0.12.8,<0.13",
        "optax>=0.2.8,<0.3",
        "jax-privacy==2.0.0",
        "dp-accounting>=0.6.0,<0.7",
        "absl-py>=2.1",
        "ml_collections>=1.0",
        "numpy>=1.26",
        "scipy>=1.12",
        "scikit-learn>=1.5",
        "orbax-checkpoint>=0.12,<0.13",
        "pillow>=10",
        # TensorBoard event files without TensorFlow; the console's bar.
        "tensorboardX>=2.6",
        "tqdm>=4.66",
        "matplotlib>=3.8",  # A run's pictures (fedsearch/runner/pictures.py).
    ],
    extras_require={"test": ["pytest>=8", "pytest-xdist>=3", "chex>=0.1.90"]},
)
