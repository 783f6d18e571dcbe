"""The method registry: how the CLI, the API and experiment configs find a distillation method by name.

A ``MethodSpec`` maps a name to a builder ``build(ctx) -> Objective`` (the objective constructors of
``jaxdd.objectives`` are the library; this registry is how the application wires them), its ``--flags``
(``options``, whose defaults are read from the constructors) and the paper's settings (``defaults``). The built-in
methods are registered by ``jaxdd.methods.builtin``; a user's method is one ``register_method(MethodSpec(...))``.
``defaults`` are the paper's driver settings (``DistillConfig`` fields such as ``lr_img``, ``momentum``,
``iterations``, ``optimizer``, ``learn_labels``, ``lrs``) plus the paper's evaluation protocol
(``jaxdd.evaluate.standard_eval_augment``, ``paper_eval_models``):

- ``init``: "real" or "noise";
- ``eval_augment``: the DSA strategy the standard evaluation trains with for this method, or None;
- ``eval_dc_augment``: True when, without ``eval_augment``, the evaluation follows the DC code's rule
  (DC-augmentation on MNIST or on a ConvNetBN network; ``jaxdd.evaluate.dc_eval_augment``);
- ``eval_models``: networks per set in the paper's protocol (default 20; MTT 5).
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, NamedTuple

from jaxdd.types import JaxddError, PRNGKey


@dataclasses.dataclass(frozen=True)
class Option:
    """A method-specific option, exposed as ``--name`` (underscores become dashes) on ``jaxdd distill``."""

    name: str
    type: type
    default: Any
    help: str = ""
    choices: tuple | None = None


def constructor_option(fn: Callable, name: str, type: type, help: str = "", choices: tuple | None = None,
                       param: str | None = None) -> Option:
    """An ``Option`` whose default is the default of ``fn``'s keyword ``param`` (default: ``name``): the method's
    constructor (``jaxdd.dm``, ``jaxdd.dc``, ...) is the one place its paper defaults live; the CLI reads them here."""
    default = inspect.signature(fn).parameters[param or name].default
    if default is inspect.Parameter.empty:
        raise TypeError(f"{fn.__name__} has no default for {param or name!r}")
    return Option(name, type, default, help, choices)


class MethodContext(NamedTuple):
    num_classes: int
    image_shape: tuple[int, int, int]
    ipc: int  # decoded images per class of the synthetic set
    model: str
    model_kwargs: dict
    options: dict  # option name -> value (defaults filled in)
    dataset: str
    pool: Any  # jaxdd.distill.RealPool: the normalised training split (minus validation)
    preprocess: Any  # jaxdd.data.Preprocess
    key: PRNGKey
    data_dir: str | None = None


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    name: str
    build: Callable[[MethodContext], Any]  # -> jaxdd.objectives.Objective
    defaults: dict
    options: tuple[Option, ...] = ()
    help: str = ""
    # tiny(ctx, tmp_dir) -> option overrides for a seconds-long run on toy data (the contract test suite uses it;
    # it may create small resources such as an expert buffer or a teacher under tmp_dir).
    tiny: Callable[[MethodContext, str], dict] | None = None
    # artifact_metadata(final synthetic extras (numpy), options) -> entries for the artifact's metadata, e.g. MTT's
    # learned inner lr as {"eval_lr": ...}, which evaluate_run trains with.
    artifact_metadata: Callable[[dict, dict], dict] | None = None


_METHODS: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> MethodSpec:
    _METHODS[spec.name] = spec
    return spec


# Derivers: fn(methods: dict[str, MethodSpec]) -> None registers derived methods (e.g. "dm+mim" from "dm") with
# register_method. They run after every built-in method is imported (and again on each lookup, so a base method
# registered later is derived too); a deriver must skip what it already registered.
_DERIVERS: list[Callable[[dict], None]] = []


def register_deriver(fn: Callable[[dict], None]) -> None:
    _DERIVERS.append(fn)


def _derive():
    for derive in _DERIVERS:
        derive(dict(_METHODS))


def available_methods() -> list[str]:
    _derive()
    return sorted(_METHODS)


def get_method(name: str) -> MethodSpec:
    _derive()
    if name not in _METHODS:
        raise JaxddError(f"unknown method {name!r}; available methods: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]


def resolve_options(spec: MethodSpec, given: dict) -> dict:
    """The method's option values: ``given`` (None = not given) over the option defaults, checked against each
    option's ``choices``."""
    out = {}
    for opt in spec.options:
        v = given.get(opt.name)
        out[opt.name] = opt.default if v is None else v
        if opt.choices and out[opt.name] not in opt.choices:
            raise JaxddError(f"option {opt.name}={out[opt.name]!r} of method {spec.name!r} must be one of "
                             f"{list(opt.choices)}")
    unknown = set(k for k, v in given.items() if v is not None) - {o.name for o in spec.options}
    if unknown:
        raise JaxddError(f"options {sorted(unknown)} do not apply to method {spec.name!r}; "
                         f"its options are {[o.name for o in spec.options]}")
    return out
