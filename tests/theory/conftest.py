"""Fixtures for theory/ tests. x64 is switched on only inside the tests that ask for it (other test modules share
the process)."""
import jax
import pytest


@pytest.fixture
def x64():
    prev = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", prev)
