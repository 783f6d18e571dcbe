"""Model zoo with the names DD papers use, and functional helpers.

``get_model(name, num_classes, **overrides)`` returns a Flax Linen module. Every module's ``__call__`` takes
``(x, train=False, features=False)`` and returns logits, or ``(logits, feats)`` with named features
(``"block1"``.., ``"embedding"``) when ``features=True``.

``init_model`` / ``apply_model`` hide the difference between stateless models (instance norm: ``{"params"}``) and
batch-norm models (``{"params", "batch_stats"}``), so training code is written once.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdd.models.convnet import MLP, ConvNet
from jaxdd.ops.conv import CONV_IMPLS, resolve_conv_impl
from jaxdd.types import JaxddError, PRNGKey, PyTree

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str, factory: Callable[..., nn.Module]) -> None:
    """Register ``factory(num_classes, **overrides) -> nn.Module`` under ``name``."""
    _REGISTRY[name] = factory


def _convnet(**fixed):
    return lambda num_classes, **kw: ConvNet(num_classes=num_classes, **{**fixed, **kw})


register_model("ConvNet", _convnet())
for _d in (1, 2, 3, 4, 5):
    register_model(f"ConvNetD{_d}", _convnet(depth=_d))
for _w in (32, 64, 128, 256):
    register_model(f"ConvNetW{_w}", _convnet(width=_w))
for _tag, _norm in (("NN", "none"), ("BN", "batchnorm"), ("LN", "layernorm"), ("IN", "instancenorm"),
                    ("GN", "groupnorm")):
    register_model(f"ConvNet{_tag}", _convnet(norm=_norm))
for _tag, _pool in (("NP", "none"), ("MP", "maxpool"), ("AP", "avgpool")):
    register_model(f"ConvNet{_tag}", _convnet(pool=_pool))
for _tag, _act in (("AS", "sigmoid"), ("AR", "relu"), ("AL", "leakyrelu"), ("ASwish", "swish")):
    register_model(f"ConvNet{_tag}", _convnet(act=_act))
register_model("ConvNetASwishBN", _convnet(act="swish", norm="batchnorm"))
register_model("MLP", lambda num_classes, **kw: MLP(num_classes=num_classes, **kw))

from jaxdd.models import resnet as _resnet  # noqa: E402,F401  (registers ResNet18, ResNet18BN, ResNet8BN)


def available_models() -> list[str]:
    return sorted(_REGISTRY)


def get_model(name: str, num_classes: int, **overrides: Any) -> nn.Module:
    """The module registered as ``name`` (e.g. ``"ConvNet"``, ``"ConvNetD4"``, ``"ConvNetBN"``, ``"MLP"``)."""
    if name not in _REGISTRY:
        raise JaxddError(f"unknown model {name!r}; available models: {', '.join(available_models())}")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise JaxddError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if "conv_impl" in overrides:  # "auto" resolves here, so model kwargs may name it too
        conv_impl = resolve_conv_impl(overrides["conv_impl"])
        if not conv_impl:
            raise JaxddError(f"conv_impl must be one of {CONV_IMPLS} or 'auto', got {overrides['conv_impl']!r}")
        overrides = {**overrides, "conv_impl": conv_impl}
    return _REGISTRY[name](num_classes, **overrides)


def with_conv_impl(module: nn.Module, conv_impl: str | None) -> nn.Module:
    """``module`` with convolutions computed by ``conv_impl`` (one of ``CONV_IMPLS``, or ``"auto"``: see
    ``resolve_conv_impl``) where its architecture has the setting (the ConvNet family, ResNets); other modules (MLP)
    and a falsy ``conv_impl`` return it unchanged."""
    conv_impl = resolve_conv_impl(conv_impl)
    if conv_impl and hasattr(module, "conv_impl"):
        return module.clone(conv_impl=conv_impl)
    return module


def has_batch_stats(variables: PyTree) -> bool:
    return "batch_stats" in variables


def init_model(module: nn.Module, key: PRNGKey, image_shape: tuple[int, int, int]) -> PyTree:
    """Fresh variables for ``module`` on images of shape (h, w, c): ``{"params": ...}`` (+ ``"batch_stats"``)."""
    dummy = jnp.zeros((2, *image_shape), jnp.float32)
    return dict(module.init(key, dummy, train=False))


class ModelOutput(NamedTuple):
    logits: jax.Array
    features: dict | None
    variables: PyTree  # with updated batch statistics when train=True and the model has batch norm


def apply_model(module: nn.Module, variables: PyTree, x: jax.Array, *, train: bool = False,
                features: bool = False) -> ModelOutput:
    """Forward pass. In train mode batch-norm models use batch statistics and return updated running stats."""
    if train and has_batch_stats(variables):
        out, upd = module.apply(variables, x, train=True, features=features, mutable=["batch_stats"])
        variables = {**variables, **upd}
    else:
        out = module.apply(variables, x, train=train, features=features)
    logits, feats = out if features else (out, None)
    return ModelOutput(logits, feats, variables)


__all__ = [
    "ConvNet", "MLP", "ModelOutput", "apply_model", "available_models", "get_model",
    "CONV_IMPLS", "has_batch_stats", "init_model", "register_model", "resolve_conv_impl", "with_conv_impl",
]
