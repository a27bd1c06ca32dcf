"""Session-wide JAX settings, made before JAX is imported.

Four forced CPU devices, so that the multi-device tests can compare a
4-device mesh with one device. A persistent compilation cache under
`.jax_cache/` (git-ignored): the end-to-end tests compile many identical
rounds, and subprocess tests inherit the cache through the environment.
"""

import os
import pathlib

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(
    pathlib.Path(__file__).resolve().parents[1] / ".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
