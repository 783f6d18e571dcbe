"""The dataset-distillation ConvNet family and MLP (docs/methods.md section 1.2).

ConvNet(width 128, depth 3, relu, instancenorm, avgpool): depth x [Conv3x3 (bias) -> norm -> act -> pool], then
flatten -> Dense(num_classes). The first convolution of a 1-channel input uses padding 3 (so 28x28 becomes 32x32, as
in the DD code); every other convolution uses padding 1.

Convolutions are computed by ``jaxdd.ops.conv`` under the module's ``conv_impl`` (one of ``CONV_IMPLS``; ``"auto"``
resolves to ``"fused"`` on CPU and ``"xla"`` on accelerators, docs/performance.md).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdd.ops.conv import conv3x3, fused_block

Array = jax.Array


def torch_uniform_init(fan_in_axes: Sequence[int] | None = None):
    """PyTorch's default Conv/Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights (and biases)."""

    def init(key, shape, dtype=jnp.float32):
        axes = fan_in_axes if fan_in_axes is not None else tuple(range(len(shape) - 1))
        fan_in = math.prod(shape[a] for a in axes)
        bound = 1.0 / math.sqrt(fan_in)
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _bias_init(fan_in: int):
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class Conv3x3(nn.Module):
    features: int
    padding: int = 1
    impl: str = "xla"
    init_scheme: str = "torch"

    @nn.compact
    def weights(self, c: int) -> tuple[Array, Array]:
        """The (3, 3, c, features) kernel and the bias, for a c-channel input."""
        fan_in = 9 * c
        if self.init_scheme == "torch":
            k_init, b_init = torch_uniform_init((0, 1, 2)), _bias_init(fan_in)
        else:
            k_init, b_init = nn.initializers.lecun_normal(), nn.initializers.zeros
        return self.param("kernel", k_init, (3, 3, c, self.features)), self.param("bias", b_init, (self.features,))

    def __call__(self, x):
        kernel, bias = self.weights(x.shape[-1])
        return conv3x3(x, kernel, self.padding, self.impl) + bias


class Dense(nn.Module):
    features: int
    init_scheme: str = "torch"

    @nn.compact
    def __call__(self, x):
        fan_in = x.shape[-1]
        if self.init_scheme == "torch":
            k_init, b_init = torch_uniform_init((0,)), _bias_init(fan_in)
        else:
            k_init, b_init = nn.initializers.lecun_normal(), nn.initializers.zeros
        kernel = self.param("kernel", k_init, (fan_in, self.features))
        bias = self.param("bias", b_init, (self.features,))
        return x @ kernel + bias


class InstanceNorm(nn.Module):
    """GroupNorm with one group per channel: per-sample, per-channel statistics over H, W; affine; eps 1e-5."""

    eps: float = 1e-5

    @nn.compact
    def weights(self, c: int) -> tuple[Array, Array]:
        """The per-channel scale and shift."""
        return self.param("scale", nn.initializers.ones, (c,)), self.param("bias", nn.initializers.zeros, (c,))

    def __call__(self, x):
        mean = x.mean(axis=(1, 2), keepdims=True)
        var = jnp.square(x - mean).mean(axis=(1, 2), keepdims=True)
        y = (x - mean) * jax.lax.rsqrt(var + self.eps)
        scale, shift = self.weights(x.shape[-1])
        return y * scale + shift


class LayerNormCHW(nn.Module):
    """LayerNorm over (H, W, C) with elementwise affine of shape (H, W, C), as PyTorch's LayerNorm([C, H, W])."""

    eps: float = 1e-5

    @nn.compact
    def __call__(self, x):
        mean = x.mean(axis=(1, 2, 3), keepdims=True)
        var = jnp.square(x - mean).mean(axis=(1, 2, 3), keepdims=True)
        y = (x - mean) * jax.lax.rsqrt(var + self.eps)
        scale = self.param("scale", nn.initializers.ones, x.shape[1:])
        shift = self.param("bias", nn.initializers.zeros, x.shape[1:])
        return y * scale + shift


_ACTS: dict[str, Callable[[Array], Array]] = {
    "relu": nn.relu,
    "sigmoid": nn.sigmoid,
    "leakyrelu": lambda x: nn.leaky_relu(x, 0.01),
    "swish": lambda x: x * nn.sigmoid(x),
}
NORMS = ("instancenorm", "batchnorm", "layernorm", "groupnorm", "none")
POOLS = ("avgpool", "maxpool", "none")


class ConvNet(nn.Module):
    """The DD ConvNet. ``__call__(x, train=False, features=False)``.

    x: (n, h, w, c) float32. Returns logits (n, num_classes); with ``features=True`` returns
    ``(logits, feats)`` where ``feats`` maps ``"block1".."blockD"`` to each block's output (n, h', w', width) and
    ``"embedding"`` to the flattened last block (n, d) (DM's psi). ``train`` matters only for batch norm (its
    statistics live in the ``batch_stats`` collection, which must then be mutable).
    """

    num_classes: int
    width: int = 128
    depth: int = 3
    act: str = "relu"
    norm: str = "instancenorm"
    pool: str = "avgpool"
    conv_impl: str = "xla"
    init_scheme: str = "torch"

    @nn.compact
    def __call__(self, x, train: bool = False, features: bool = False):
        act = _ACTS[self.act]
        feats = {}
        h = x
        for d in range(self.depth):
            pad = 3 if (d == 0 and x.shape[-1] == 1) else 1
            conv = Conv3x3(self.width, padding=pad, impl=self.conv_impl, init_scheme=self.init_scheme, name=f"conv{d}")
            block = fused_block(self.conv_impl, h.shape[-1], self.norm, self.act, self.pool) if d == 0 else None
            if block is not None:  # the ops layer computes the whole block at once (jaxdd.ops.conv.fused_block)
                norm = InstanceNorm(name=f"norm{d}")
                h = block(h, *conv.weights(h.shape[-1]), *norm.weights(self.width), pad, norm.eps)
                feats[f"block{d + 1}"] = h
                continue
            h = conv(h)
            if self.norm == "instancenorm":
                h = InstanceNorm(name=f"norm{d}")(h)
            elif self.norm == "batchnorm":
                h = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=f"norm{d}")(h)
            elif self.norm == "layernorm":
                h = LayerNormCHW(name=f"norm{d}")(h)
            elif self.norm == "groupnorm":
                h = nn.GroupNorm(num_groups=4, epsilon=1e-5, name=f"norm{d}")(h)
            elif self.norm != "none":
                raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
            h = act(h)
            if self.pool == "avgpool":
                h = nn.avg_pool(h, (2, 2), (2, 2))
            elif self.pool == "maxpool":
                h = nn.max_pool(h, (2, 2), (2, 2))
            elif self.pool != "none":
                raise ValueError(f"pool must be one of {POOLS}, got {self.pool!r}")
            feats[f"block{d + 1}"] = h
        emb = h.reshape(h.shape[0], -1)
        feats["embedding"] = emb
        logits = Dense(self.num_classes, init_scheme=self.init_scheme, name="classifier")(emb)
        return (logits, feats) if features else logits


class MLP(nn.Module):
    """flatten -> 128 -> 128 -> num_classes with ReLU (the DD zoo's MLP)."""

    num_classes: int
    width: int = 128
    init_scheme: str = "torch"

    @nn.compact
    def __call__(self, x, train: bool = False, features: bool = False):
        h = x.reshape(x.shape[0], -1)
        feats = {}
        for i in range(2):
            h = nn.relu(Dense(self.width, init_scheme=self.init_scheme, name=f"fc{i}")(h))
            feats[f"block{i + 1}"] = h
        feats["embedding"] = h
        logits = Dense(self.num_classes, init_scheme=self.init_scheme, name="classifier")(h)
        return (logits, feats) if features else logits
