"""ResNets with batch norm for teachers and students (docs/methods.md 1.2 zoo and 11: SRe2L/DWA teachers).

- ``ResNet18`` / ``ResNet18BN``: ResNet-18 with the CIFAR stem (3x3 stride-1 conv, no max-pool), BasicBlocks
  [2, 2, 2, 2] at widths 64/128/256/512 and strides 1/2/2/2, global average pool, linear classifier. The DD zoo's
  ``ResNet18`` uses instance norm, ``ResNet18BN`` batch norm (the SRe2L/DWA CIFAR teacher).
- ``ResNet8BN``: a small ResNet suited to 28x28 inputs: the same stem at width 16, one BasicBlock per stage at widths
  16/32/64 and strides 1/2/2 (28 -> 28 -> 14 -> 7), global average pool (ResNet-8, CIFAR-ResNet style).

Batch norm is functional: running statistics live in the ``batch_stats`` collection; ``train=True`` normalises with
batch statistics (``jaxdd.models.apply_model`` makes the collection mutable and returns the update), ``train=False``
with the running ones. Momentum 0.9 in Flax's convention = PyTorch momentum 0.1; eps 1e-5.

``__call__(x, train=False, features=False)`` returns logits, or ``(logits, feats)`` with ``"block1"``.. (each stage's
output) and ``"embedding"`` (the pooled feature vector). Weights use PyTorch's default init by default
(``init_scheme="torch"``; ``"flax"`` = LeCun normal). ``conv_impl="patches"`` computes convolutions as shifted slices
+ matmul, ``"vjp"`` as ``lax.conv`` with matmul/forward-convolution gradients, ``"winograd"`` and ``"fused"`` (whose
fused first block only the ConvNet has) by Winograd's F(2x2, 3x3) (numerically equal; fast weight gradients inside
``lax.scan`` on XLA:CPU, see ``jaxdd.ops.conv``).
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdd.models.convnet import Dense, InstanceNorm, torch_uniform_init
from jaxdd.ops.conv import conv3x3

NORMS = ("batchnorm", "instancenorm")


class Conv(nn.Module):
    """A bias-free square convolution (3x3 with padding 1, or 1x1 with padding 0) with a stride."""

    features: int
    kernel: int = 3
    stride: int = 1
    impl: str = "xla"
    init_scheme: str = "torch"

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        k_init = torch_uniform_init((0, 1, 2)) if self.init_scheme == "torch" else nn.initializers.lecun_normal()
        w = self.param("kernel", k_init, (self.kernel, self.kernel, c, self.features))
        pad = self.kernel // 2
        s = self.stride
        if self.impl == "xla":
            return jax.lax.conv_general_dilated(x, w, (s, s), ((pad, pad), (pad, pad)),
                                                dimension_numbers=("NHWC", "HWIO", "NHWC"))
        if self.kernel == 1:
            return x[:, ::s, ::s, :] @ w.reshape(c, self.features)
        if self.kernel != 3:
            raise ValueError(f"conv_impl={self.impl!r} supports 1x1 and 3x3 kernels")
        # a stride-s 3x3 convolution = the stride-1 one sampled every s pixels (same padding convention)
        return conv3x3(x, w, pad, self.impl)[:, ::s, ::s, :]


def _norm(kind: str, train: bool, name: str):
    if kind == "batchnorm":
        return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)
    if kind == "instancenorm":
        return InstanceNorm(name=name)
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


class BasicBlock(nn.Module):
    features: int
    stride: int = 1
    norm: str = "batchnorm"
    conv_impl: str = "xla"
    init_scheme: str = "torch"

    @nn.compact
    def __call__(self, x, train: bool = False):
        conv = lambda f, k, s, n: Conv(f, k, s, self.conv_impl, self.init_scheme, name=n)  # noqa: E731
        h = conv(self.features, 3, self.stride, "conv1")(x)
        h = nn.relu(_norm(self.norm, train, "bn1")(h))
        h = conv(self.features, 3, 1, "conv2")(h)
        h = _norm(self.norm, train, "bn2")(h)
        if self.stride != 1 or x.shape[-1] != self.features:
            x = conv(self.features, 1, self.stride, "shortcut_conv")(x)
            x = _norm(self.norm, train, "shortcut_bn")(x)
        return nn.relu(h + x)


class ResNet(nn.Module):
    """CIFAR-stem ResNet with BasicBlocks. ``blocks`` per stage, ``widths`` per stage, ``strides`` per stage."""

    num_classes: int
    blocks: Sequence[int] = (2, 2, 2, 2)
    widths: Sequence[int] = (64, 128, 256, 512)
    strides: Sequence[int] = (1, 2, 2, 2)
    norm: str = "batchnorm"
    conv_impl: str = "xla"
    init_scheme: str = "torch"

    @nn.compact
    def __call__(self, x, train: bool = False, features: bool = False):
        if not (len(self.blocks) == len(self.widths) == len(self.strides)):
            raise ValueError("blocks, widths and strides need one entry per stage")
        h = Conv(self.widths[0], 3, 1, self.conv_impl, self.init_scheme, name="stem_conv")(x)
        h = nn.relu(_norm(self.norm, train, "stem_bn")(h))
        feats = {}
        for s, (n, w, st) in enumerate(zip(self.blocks, self.widths, self.strides)):
            for b in range(n):
                h = BasicBlock(w, st if b == 0 else 1, self.norm, self.conv_impl, self.init_scheme,
                               name=f"stage{s + 1}_block{b + 1}")(h, train)
            feats[f"block{s + 1}"] = h
        emb = jnp.mean(h, axis=(1, 2))
        feats["embedding"] = emb
        logits = Dense(self.num_classes, init_scheme=self.init_scheme, name="classifier")(emb)
        return (logits, feats) if features else logits


def resnet18(num_classes: int, **kw) -> ResNet:
    return ResNet(num_classes=num_classes, **{"norm": "instancenorm", **kw})


def resnet18bn(num_classes: int, **kw) -> ResNet:
    return ResNet(num_classes=num_classes, **{"norm": "batchnorm", **kw})


def resnet8bn(num_classes: int, **kw) -> ResNet:
    return ResNet(num_classes=num_classes, **{"blocks": (1, 1, 1), "widths": (16, 32, 64), "strides": (1, 2, 2),
                                               "norm": "batchnorm", **kw})
