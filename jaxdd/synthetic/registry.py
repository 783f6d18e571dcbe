"""The parameterization registry: how the CLI, configs and ``distill_dataset`` find a parameterization by name.

A factory is ``factory(ipc=..., image_shape=..., num_classes=..., init=..., **options) -> Parameterization``; a
parameterization module registers its own factory when imported (``jaxdd.synthetic`` imports the built-in ones).
"""
from __future__ import annotations

from typing import Any, Callable

from jaxdd.types import JaxddError

PARAMETERIZATIONS: dict[str, Callable[..., Any]] = {}


def register_parameterization(name: str, factory: Callable[..., Any]) -> None:
    PARAMETERIZATIONS[name] = factory


def available_parameterizations() -> list[str]:
    return sorted(PARAMETERIZATIONS)


def make_parameterization(name: str, **kwargs):
    """The registered parameterization ``name`` built with ``kwargs`` (ipc, image_shape, num_classes, init, options)."""
    if name not in PARAMETERIZATIONS:
        raise JaxddError(f"unknown parameterization {name!r}; available: {available_parameterizations()}")
    return PARAMETERIZATIONS[name](**kwargs)
