"""Four forced CPU devices for the whole session, set before JAX is imported,
so that the multi-device tests can compare a 4-device mesh with one device."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4")
