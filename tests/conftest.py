"""Shared pytest set-up: hypothesis profiles (fast by default, thorough on request)."""

from __future__ import annotations

import os
import tempfile

from hypothesis import HealthCheck, settings

# Decoded-audio caches of the tests' data sets go to a scratch folder, not the user's
# ~/.cache/sigmae-gen (subprocesses inherit it); tests of the default location unset it.
os.environ["SIGMAE_CACHE_DIR"] = tempfile.mkdtemp(prefix="sigmae-test-cache-")

# Under pytest-xdist (`make test` runs one worker per core), torch in each worker and in the
# scripts it starts uses one thread, so the workers share the cores instead of fighting over
# them. Set before any test module imports torch, which reads it once.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

settings.register_profile(
    "fast",
    max_examples=8,
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "thorough",
    max_examples=200,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("SIGMAE_HYPOTHESIS_PROFILE", "fast"))
