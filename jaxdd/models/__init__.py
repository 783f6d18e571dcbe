"""Model zoo with the names DD papers use, the model contract, and functional helpers.

``get_model(name, num_classes, **overrides)`` returns a Flax Linen module; wherever jaxdd takes a model it takes a
registered name or any ``flax.linen`` module that satisfies the model contract (``MODEL_CONTRACT``): ``__call__``
takes ``(x, train=False, features=False)`` and returns logits (n, num_classes), or ``(logits, feats)`` with a dict
of named features holding at least ``"embedding"`` (n, d) when ``features=True`` (the zoo also gives
``"block1"``..). ``check_model`` checks a module against it; ``register_model`` adds a name.

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


MODEL_CONTRACT = """a jaxdd model is a flax.linen Module whose __call__(x, train=False, features=False) takes images
x (n, h, w, c) and returns logits (n, num_classes); with features=True it returns (logits, feats), feats a dict
holding at least "embedding": (n, d) (the features DM, KIP and the mutual-information term match). train switches
batch norm to batch statistics (a "batch_stats" collection). For example:

    class MyCNN(nn.Module):
        num_classes: int = 10
        @nn.compact
        def __call__(self, x, train=False, features=False):
            emb = nn.relu(nn.Conv(32, (3, 3))(x)).mean(axis=(1, 2))
            logits = nn.Dense(self.num_classes)(emb)
            return (logits, {"embedding": emb}) if features else logits"""


def register_model(name: str, factory: Callable[..., nn.Module]) -> None:
    """Register ``factory(num_classes, **overrides) -> nn.Module`` under ``name`` (then usable by name everywhere,
    in the CLI and in saved runs, e.g. ``register_model("MyCNN", lambda num_classes, **kw: MyCNN(num_classes,
    **kw))``). The module must satisfy ``MODEL_CONTRACT``."""
    if not isinstance(name, str) or not name or not callable(factory):
        raise JaxddError(f"register_model(name, factory) needs a non-empty name and a callable factory(num_classes, "
                         f"**overrides) -> flax module; got {name!r}, {factory!r}")
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

from jaxdd.models.resnet import resnet8bn, resnet18, resnet18bn  # noqa: E402

register_model("ResNet18", resnet18)
register_model("ResNet18BN", resnet18bn)
register_model("ResNet8BN", resnet8bn)


def available_models() -> list[str]:
    return sorted(_REGISTRY)


def model_name(model: str | nn.Module) -> str:
    """A registered name as it is; a module's class name (for metadata and results)."""
    return model if isinstance(model, str) else type(model).__name__


def get_model(name: str | nn.Module, num_classes: int, **overrides: Any) -> nn.Module:
    """The module registered as ``name`` (e.g. ``"ConvNet"``, ``"ConvNetD4"``, ``"ConvNetBN"``, ``"MLP"``).

    A flax module given instead of a name is returned as it is (``overrides`` set its fields with ``clone``); it is
    the caller's job to build it for ``num_classes`` (``check_model`` checks that)."""
    if isinstance(name, nn.Module):
        if not overrides:
            return name
        try:
            return name.clone(**overrides)
        except TypeError as e:
            raise JaxddError(f"model_kwargs {sorted(overrides)} do not apply to your module {model_name(name)} "
                             f"({e}); build the module with the settings you want and give no model_kwargs") from None
    if not isinstance(name, str):
        raise JaxddError(f"model must be a registered name or a flax.linen Module, got {type(name).__name__}: "
                         f"{name!r}; {MODEL_CONTRACT}")
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


def eval_module(model, num_classes: int, model_kwargs: dict | None = None):
    """The network evaluation trains: ConvNet-family and ResNet convolutions default to ``conv_impl="auto"``
    (``resolve_conv_impl``): on CPU ``"fused"`` (Winograd and the fused first block), where a training
    epoch of 100 images with DSA takes 0.22-0.24 s (0.37 s without jaxdd.hostmem's huge pages) against Winograd's
    0.42 s and vjp's 0.59 s on 28x28x1 (experiments/bench/results/bench_vs_reference*.md), and the library convolution on
    accelerators. ``model_kwargs`` naming a ``conv_impl`` wins. Test predictions use the model as configured (the
    library convolution unless ``model_kwargs`` says otherwise)."""
    kw = dict(model_kwargs or {})
    return with_conv_impl(get_model(model, num_classes, **kw), None if "conv_impl" in kw else "auto")


def has_batch_stats(variables: PyTree) -> bool:
    return "batch_stats" in variables


def _contract_error(module: nn.Module, what: str) -> JaxddError:
    return JaxddError(f"model {model_name(module)} does not satisfy the jaxdd model contract: {what}.\n"
                      f"{MODEL_CONTRACT}")


def _signature_error(module: nn.Module, e: TypeError) -> JaxddError | None:
    """The contract error for a TypeError raised because __call__ lacks the ``train``/``features`` keywords."""
    msg = str(e)
    if "unexpected keyword argument" in msg and ("'train'" in msg or "'features'" in msg):
        return _contract_error(module, f"calling it with train=/features= raised TypeError: {msg}")
    return None


def init_model(module: nn.Module, key: PRNGKey, image_shape: tuple[int, int, int]) -> PyTree:
    """Fresh variables for ``module`` on images of shape (h, w, c): ``{"params": ...}`` (+ ``"batch_stats"``)."""
    dummy = jnp.zeros((2, *image_shape), jnp.float32)
    try:
        return dict(module.init(key, dummy, train=False))
    except TypeError as e:
        err = _signature_error(module, e)
        if err is None:
            raise
        raise err from None


def check_model(module: nn.Module, image_shape: tuple[int, int, int], num_classes: int | None = None) -> None:
    """Raise ``JaxddError`` stating ``MODEL_CONTRACT`` unless ``module`` satisfies it on images (h, w, c).

    Abstract evaluation only (``jax.eval_shape``): nothing is computed. Checks that init and apply take
    ``train=False, features=True`` and return ``(logits (n, num_classes), {"embedding": (n, d), ...})``, and that
    ``features=False`` returns the logits alone."""
    if not isinstance(module, nn.Module):
        raise JaxddError(f"expected a flax.linen Module, got {type(module).__name__}; {MODEL_CONTRACT}")
    n = 2
    x = jax.ShapeDtypeStruct((n, *image_shape), jnp.float32)
    try:
        variables = jax.eval_shape(lambda x: init_model(module, jax.random.key(0), x.shape[1:]), x)
        out = jax.eval_shape(lambda v, x: module.apply(v, x, train=False, features=True), variables, x)
        plain = jax.eval_shape(lambda v, x: module.apply(v, x, train=False, features=False), variables, x)
    except JaxddError:
        raise
    except TypeError as e:
        raise (_signature_error(module, e) or _contract_error(module, f"it failed on images of shape "
                                                                      f"{(n, *image_shape)}: TypeError: {e}")) from None
    except Exception as e:  # noqa: BLE001  (anything the user's module raises: report it with the contract)
        raise _contract_error(module, f"it failed on images of shape {(n, *image_shape)}: "
                                      f"{type(e).__name__}: {e}") from None
    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict)):
        raise _contract_error(module, f"with features=True it returned {jax.tree.map(lambda a: a.shape, out)}, "
                                      "not a pair (logits, dict of features)")
    logits, feats = out
    k = num_classes
    if getattr(logits, "ndim", None) != 2 or logits.shape[0] != n or (k is not None and logits.shape[1] != k):
        want = f"({n}, {k})" if k is not None else f"({n}, num_classes)"
        raise _contract_error(module, f"its logits have shape {getattr(logits, 'shape', type(logits))}, expected "
                                      f"{want} for {n} images")
    emb = feats.get("embedding")
    if emb is None or getattr(emb, "ndim", None) != 2 or emb.shape[0] != n:
        got = "no 'embedding' entry" if emb is None else f"'embedding' of shape {getattr(emb, 'shape', emb)}"
        raise _contract_error(module, f"its features dict has {got}; expected 'embedding' of shape ({n}, d)")
    if getattr(plain, "shape", None) != logits.shape:
        raise _contract_error(module, "with features=False it must return the logits alone, got "
                                      f"{jax.tree.map(lambda a: a.shape, plain)}")


class ModelOutput(NamedTuple):
    logits: jax.Array
    features: dict | None
    variables: PyTree  # with updated batch statistics when train=True and the model has batch norm


def apply_model(module: nn.Module, variables: PyTree, x: jax.Array, *, train: bool = False,
                features: bool = False) -> ModelOutput:
    """Forward pass. In train mode batch-norm models use batch statistics and return updated running stats."""
    try:
        if train and has_batch_stats(variables):
            out, upd = module.apply(variables, x, train=True, features=features, mutable=["batch_stats"])
            variables = {**variables, **upd}
        else:
            out = module.apply(variables, x, train=train, features=features)
    except TypeError as e:
        err = _signature_error(module, e)
        if err is None:
            raise
        raise err from None
    if features and not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict)
                         and "embedding" in out[1]):
        raise _contract_error(module, "with features=True it must return (logits, {'embedding': ..., ...})")
    logits, feats = out if features else (out, None)
    return ModelOutput(logits, feats, variables)


__all__ = [
    "ConvNet", "MLP", "MODEL_CONTRACT", "ModelOutput", "apply_model", "available_models", "check_model", "eval_module",
    "get_model", "model_name",
    "CONV_IMPLS", "has_batch_stats", "init_model", "register_model", "resolve_conv_impl", "with_conv_impl",
]
