"""Shared fixtures: tiny toy data so every test runs in seconds."""
from __future__ import annotations

import numpy as np
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
