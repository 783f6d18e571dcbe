"""Shared fixtures: tiny toy data so every test runs in seconds.

The suite is dominated by XLA compilation of many small programs, not by running them, so unless the caller set
XLA_FLAGS it compiles with LLVM optimisation off (about 2x faster compiles here; HLO-level passes such as fusion
still run, and every numerical check compares programs compiled the same way). Subprocesses inherit the setting.
"""
from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

import numpy as np  # noqa: E402
import pytest


def toy_images(num_classes=3, per_class=12, shape=(8, 8, 1), seed=0, separable=True):
    """Class-major toy images (n,h,w,c) float32 and labels; with separable=True each class has its own pattern."""
    rng = np.random.default_rng(seed)
    protos = rng.normal(0, 1.5, (num_classes, *shape)).astype(np.float32)  # drawn first: same seed, same classes
    n = num_classes * per_class
    labels = np.repeat(np.arange(num_classes), per_class).astype(np.int32)
    x = rng.normal(0, 0.3, (n, *shape)).astype(np.float32)
    if separable:
        x = x + protos[labels]
    return x, labels


@pytest.fixture
def toy():
    return toy_images()


MAX_MAPPINGS = 40_000  # of the kernel's vm.max_map_count (65530 here)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Free the compiled programs after a test module once the process holds many. One process runs the whole suite
    and compiles thousands of small XLA:CPU programs; each loaded executable holds a few memory mappings, and the jit
    caches (jax's and jaxdd.train.compiled) keep the programs of module-level functions alive, so the count of
    mappings climbs towards vm.max_map_count, where XLA's compiler crashes (seen once at 85 % of the suite).
    Clearing only past MAX_MAPPINGS keeps the programs that later modules share."""
    yield
    try:
        with open("/proc/self/maps") as f:
            mappings = sum(1 for _ in f)
    except OSError:  # not Linux: nothing to count
        return
    if mappings > MAX_MAPPINGS:
        import jax

        from jaxdd import train

        train._COMPILED.clear()
        jax.clear_caches()
