"""Convolution kernels for the DD networks, chosen by one setting, ``conv_impl`` (docs/performance.md).

Nothing here knows a model or a method: these are functions of arrays. The models call ``conv3x3`` (and, for the
ConvNet's first block, ``conv_instnorm_relu_avgpool``) with the ``conv_impl`` they were built with.

Convolutions have five numerically equivalent implementations, chosen per path by ``conv_impl`` (``resolve_conv_impl``:
``"auto"`` is ``"fused"`` on CPU and ``"xla"`` on accelerators):
- ``"xla"``: ``lax.conv_general_dilated`` (what ``nn.Conv`` does); best on GPU/TPU.
- ``"patches"``: the 3x3 neighbourhood gathered by nine shifted slices, then one matmul. Its weight gradient is a
  matmul, which XLA:CPU runs fast inside ``lax.scan`` and unrolled meta-gradients, where the convolution weight
  gradient is about 40x slower (jax-ml/jax#12868).
- ``"vjp"``: ``lax.conv`` forward with a custom VJP (``conv3x3_vjp``): the input gradient is a forward convolution,
  the weight gradient the patches matmul, recursively for gradients of gradients. On one XLA:CPU core its forward
  is 2.4x faster than ``"patches"``, training steps, second-order passes and scanned unrolls 7-16 % faster
  (experiments/bench/PROFILE.md); accelerators run its convolutions in cuDNN/TPU kernels. The CPU default of every
  differentiated loop before ``"winograd"``.
- ``"winograd"``: Winograd's F(2x2, 3x3) minimal filtering (``conv3x3_winograd``): 16 matmuls with 2.25x
  fewer multiply-adds than the direct convolution, and additions for the tile transforms; JAX differentiates it
  to any order, all as matmuls. Layers with fewer than 16 input channels (the first, on images) use ``"vjp"``.
  On XLA:CPU faster than the above in every pass inside loops and in every row of the issue-5 benchmark
  (experiments/bench/PROFILE.md); under ``vmap`` over per-network weights its matmuls stay batched matmuls.
- ``"fused"``: ``"winograd"``, and the ConvNet's first block on an image of at most ``STEM_MAX_CHANNELS`` channels
  (conv, instance norm, ReLU, average pooling) as one function, ``conv_instnorm_relu_avgpool``, that never forms
  the full-resolution (n, h, w, width) tensors between those layers: the norm's statistics come from each image's
  9c x 9c patch covariance. Those tensors' memory-bound passes were a quarter to 40 % of a CPU training step. The
  fastest on XLA:CPU in every row of the issue-5 benchmark (experiments/bench/results/bench_vs_reference.md).
``tests/test_models.py`` pins each to ``"xla"`` (values, gradients, second order, inside ``lax.scan``).
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from jaxdd.types import JaxddError

Array = jax.Array
CONV_IMPLS = ("xla", "patches", "vjp", "winograd", "fused")  # the values of ``conv_impl``


def resolve_conv_impl(conv_impl: str | None) -> str | None:
    """``"auto"``: the fastest measured convolution for this backend: ``"fused"`` on CPU (Winograd and the fused first
    block; docs/performance.md), the library convolution (``"xla"``: cuDNN, TPU) on accelerators. A falsy value (the
    model's own) is returned as it is; anything else not in ``CONV_IMPLS`` raises ``JaxddError``."""
    if conv_impl == "auto":
        return "fused" if jax.default_backend() == "cpu" else "xla"
    if conv_impl and conv_impl not in CONV_IMPLS:
        raise JaxddError(f"conv_impl must be one of {CONV_IMPLS}, 'auto' (or '' for the model's own), got "
                         f"{conv_impl!r}")
    return conv_impl


def _shifted3x3(x: Array, padding: int) -> list[Array]:
    """The nine (n, ho, wo, c) slices of the padded x under a 3x3 window, in a (3,3,c,o) kernel's (i, j) order."""
    xp = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    ho, wo = xp.shape[1] - 2, xp.shape[2] - 2
    return [xp[:, i:i + ho, j:j + wo, :] for i in range(3) for j in range(3)]


def _patches3x3(x: Array, padding: int) -> Array:
    """The 3x3 neighbourhoods of the padded x: (n, ho, wo, 9c), ordered (i, j, c) like a (3,3,c,o) kernel."""
    return jnp.concatenate(_shifted3x3(x, padding), axis=-1)


def conv3x3_patches(x: Array, kernel: Array, padding: int) -> Array:
    """3x3 stride-1 convolution as nine shifted slices + one matmul. x: (n,h,w,c), kernel: (3,3,c,o)."""
    return _patches3x3(x, padding) @ kernel.reshape(-1, kernel.shape[-1])


def _lax_conv(x: Array, kernel: Array, padding: int) -> Array:
    p = padding
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), ((p, p), (p, p)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv3x3_vjp(x: Array, kernel: Array, padding: int) -> Array:
    """3x3 stride-1 convolution whose every pass runs as a forward convolution or a matmul (x: (n,h,w,c), kernel:
    (3,3,c,o), any padding >= 0). The forward is ``lax.conv``; the input gradient is again this function, on the
    output gradient with the kernel flipped and its channel axes swapped; the weight gradient is one matmul of the
    input's 3x3 patches with the output gradient. Gradients of gradients (DC/DSA matching, unrolled meta-gradients)
    recurse through the same rules, so XLA's backward-convolution kernels never run: those are the slow ones on
    XLA:CPU, ~40x slower still inside ``lax.scan`` (jax-ml/jax#12868)."""
    return _lax_conv(x, kernel, padding)


def _conv3x3_vjp_fwd(x, kernel, padding):
    return conv3x3_vjp(x, kernel, padding), (x, kernel)


def _conv3x3_vjp_bwd(padding, res, g):
    x, kernel = res
    back = 2 - padding  # the input gradient is a 'padding 2 - p' convolution of g; crop g where that is negative
    if back < 0:
        g_in, back = g[:, -back:g.shape[1] + back, -back:g.shape[2] + back], 0
    else:
        g_in = g
    dx = conv3x3_vjp(g_in, jnp.flip(kernel, (0, 1)).swapaxes(2, 3), back)
    patches = _patches3x3(x, padding).reshape(-1, kernel.shape[0] * kernel.shape[1] * kernel.shape[2])
    dk = (patches.T @ g.reshape(-1, kernel.shape[3])).reshape(kernel.shape)
    return dx, dk


conv3x3_vjp.defvjp(_conv3x3_vjp_fwd, _conv3x3_vjp_bwd)

# Winograd F(2x2, 3x3) (Lavin & Gray 2016): a 4x4 input tile d gives a 2x2 output tile A^T [(G g G^T) * (B^T d B)] A.
_WINO_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))
WINOGRAD_MIN_CHANNELS = 16  # below this many input channels the matmuls are too thin to pay: conv3x3_vjp


def _wino_bt(s0, s1, s2, s3):
    """B^T applied along one tile axis (rows of B^T: [1,0,-1,0], [0,1,1,0], [0,-1,1,0], [0,1,0,-1])."""
    return s0 - s2, s1 + s2, s2 - s1, s1 - s3


def _wino_at(m0, m1, m2, m3):
    """A^T applied along one tile axis (rows of A^T: [1,1,1,0], [0,1,-1,-1])."""
    return m0 + m1 + m2, m1 - m2 - m3


def conv3x3_winograd(x: Array, kernel: Array, padding: int) -> Array:
    """3x3 stride-1 convolution by Winograd's minimal filtering F(2x2, 3x3): 16 (tiles x c) @ (c x o) matmuls, one
    per position in the 4x4 transformed tile, where the direct convolution does 36 per 2x2 output tile, so 2.25x
    fewer multiply-adds, and tile transforms that are additions only. Every pass (input and weight gradients,
    gradients of gradients) is JAX's autodiff of those matmuls and additions: no convolution op is left. Exact in
    real arithmetic; in float32 it differs from ``lax.conv`` by rounding (~1e-6 relative, tested). x: (n,h,w,c),
    kernel: (3,3,c,o), padding >= 0; inputs with fewer than ``WINOGRAD_MIN_CHANNELS`` channels go to
    ``conv3x3_vjp``.

    The 16 positions stay 16 separate arrays from the input transform to the output transform: stacked into one
    (16, tiles, c) operand of a batched matmul, XLA:CPU wrote them once and copied them again into the stack, and the
    autodiff transpose of indexing the stacked product back out was zero-padding and summing full-size cotangents.
    Kept apart, every transform and its transpose is one elementwise pass (10-20 % less time for this layer's
    forward and gradients on CPU, the same sums: experiments/bench/results/bench_winograd.md)."""
    n, h, w, c = x.shape
    if c < WINOGRAD_MIN_CHANNELS:
        return conv3x3_vjp(x, kernel, padding)
    o = kernel.shape[-1]
    ho, wo = h + 2 * padding - 2, w + 2 * padding - 2
    th, tw = (ho + 1) // 2, (wo + 1) // 2  # 2x2 output tiles; an odd output size is padded and cropped
    xp = jnp.pad(x, ((0, 0), (padding, padding + 2 * th - ho), (padding, padding + 2 * tw - wo), (0, 0)))
    rows = _wino_bt(*[xp[:, i:i + 2 * th:2] for i in range(4)])  # input tiles start every 2 pixels
    v = [[t.reshape(n * th * tw, c) for t in _wino_bt(*[r[:, :, j:j + 2 * tw:2] for j in range(4)])] for r in rows]
    g = jnp.asarray(_WINO_G, kernel.dtype)
    u = jnp.einsum("ai,ijco,bj->abco", g, kernel, g)
    m = [[v[i][j] @ u[i, j] for j in range(4)] for i in range(4)]
    m = [_wino_at(*col) for col in zip(*m)]  # A^T along the tile rows: m[j][p], p in (0, 1)
    y = jnp.stack([jnp.stack(_wino_at(*col)) for col in zip(*m)])  # A^T along the tile columns: (2, 2, tiles, o)
    y = y.reshape(2, 2, n, th, tw, o).transpose(2, 3, 0, 4, 1, 5).reshape(n, 2 * th, 2 * tw, o)
    return y[:, :ho, :wo]


# First blocks of images with at most this many channels take the fused stem under conv_impl="fused"
STEM_MAX_CHANNELS = 3


def _stem_chain(x: Array, kernel: Array, scale: Array, padding: int, eps: float) -> tuple[Array, Array]:
    """The small tensors of the stem: the 3x3 patches centred per image, pc (q, n, ho, wo) with q = 9c in the
    kernel's (i, j, c) order, and the kernel normalised per image and output channel, v (n, q, o). The convolution
    z = P @ K + b has per-image mean mean(P) @ K + b and variance diag(K^T cov(P) K), so instance norm of z is
    pc @ (K * rstd) and z is never formed. The patch index q leads: stacking the q shifted planes is a copy of
    contiguous blocks, where concatenating them along a last axis of 9 was an element-wise scatter (~6x slower in the
    DM step on CPU)."""
    p = jnp.stack([s[..., ch] for s in _shifted3x3(x, padding) for ch in range(x.shape[-1])])
    pc = p - p.mean(axis=(2, 3), keepdims=True)
    q, n, ho, wo = pc.shape
    pf = pc.reshape(q, n, ho * wo)
    cov = jnp.einsum("knp,jnp->nkj", pf, pf) / (ho * wo)
    k = kernel.reshape(q, -1)
    var = jnp.einsum("nkj,ko,jo->no", cov, k, k)
    return pc, k[None] * (jax.lax.rsqrt(var + eps) * scale)[:, None, :]


def _stem_pre(pc: Array, v: Array, shift: Array) -> Array:
    """The normalised, affine pre-activation (n, ho, wo, o) as q broadcast multiply-adds, which XLA fuses with what
    consumes them (the ReLU and pooling; in the backward the mask and the pooling's cotangent)."""
    return shift + sum(pc[j][..., None] * v[:, None, None, j, :] for j in range(pc.shape[0]))


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def conv_instnorm_relu_avgpool(x: Array, kernel: Array, bias: Array, scale: Array, shift: Array, padding: int,
                               eps: float = 1e-5) -> Array:
    """avgpool2x2(relu(instance_norm(conv3x3(x, kernel, padding) + bias) * scale + shift)), the ConvNet's first block,
    for inputs with few channels (q = 9c patch values per pixel). Equal in real arithmetic to the four layers one
    after another (float32: ~1e-6 relative, tested to second order), but it never forms the (n, ho, wo, o) tensors
    between them (the convolution's output, the normalised one), which on XLA:CPU are memory-bound passes
    (experiments/bench/PROFILE.md):
    - forward: instance-norm statistics from each image's q x q patch covariance, then one fused pass that, for each
      pooled output, does the q multiply-adds and the ReLU at its four window positions and averages them: no
      full-resolution tensor is written;
    - backward: the ReLU mask and pooling give one (n, ho, wo, o) cotangent; two batched matmuls with the patches
      and the normalised kernel take it to the small tensors, and JAX's autodiff of those does the rest. The bias
      cancels in the norm: its gradient is exactly zero (the layer-by-layer path gives rounding noise).
    Gradients of gradients are JAX's autodiff of the backward (matmuls and elementwise ops)."""
    pc, v = _stem_chain(x, kernel, scale, padding, eps)
    h2, w2 = pc.shape[2] // 2, pc.shape[3] // 2  # odd sizes: pooling drops the last row / column
    # one pass per 2x2 window position on that position's patches, summed: the ReLU'd (n, ho, wo, o) tensor is never
    # written (the block's forward on 100 28x28 images 7.0 ms, 13.5 ms when it was: experiments/bench/results/bench_stem.md)
    windows = [pc[:, :, a:2 * h2:2, b:2 * w2:2] for a in (0, 1) for b in (0, 1)]
    return 0.25 * sum(jnp.maximum(_stem_pre(pw, v, shift), 0.0) for pw in windows)


def _stem_fwd(x, kernel, bias, scale, shift, padding, eps):
    # only the inputs are kept: the backward recomputes the small tensors and, fused into its first pass, the mask
    return conv_instnorm_relu_avgpool(x, kernel, bias, scale, shift, padding, eps), (x, kernel, bias, scale, shift)


def _stem_bwd(padding, eps, res, g):
    x, kernel, bias, scale, shift = res
    (pc, v), chain_vjp = jax.vjp(lambda x, k, s: _stem_chain(x, k, s, padding, eps), x, kernel, scale)
    q, n, ho, wo = pc.shape
    h2, w2, o = g.shape[1:]
    gu = jnp.broadcast_to(g[:, :, None, :, None, :] * 0.25, (n, h2, 2, w2, 2, o)).reshape(n, 2 * h2, 2 * w2, o)
    gu = jnp.pad(gu, ((0, 0), (0, ho - 2 * h2), (0, wo - 2 * w2), (0, 0)))  # odd sizes: pooling drops the last row
    gy = jnp.where(_stem_pre(pc, v, shift) > 0, gu, 0.0)
    gf = gy.reshape(n, ho * wo, o)
    dv = jnp.einsum("knp,npo->nko", pc.reshape(q, n, ho * wo), gf)
    dpc = jnp.einsum("npo,nko->knp", gf, v).reshape(pc.shape)
    dx, dk, ds = chain_vjp((dpc, dv))
    return dx, dk, jnp.zeros_like(bias), ds, gy.sum(axis=(0, 1, 2))


conv_instnorm_relu_avgpool.defvjp(_stem_fwd, _stem_bwd)


def fused_block(impl: str, channels: int, norm: str, act: str, pool: str) -> Callable | None:
    """The second half of the convolution hook: a kernel that computes a whole conv -> norm -> act -> pool block
    at once for this ``conv_impl`` and block, or None (then the model runs its layers one after another). Today:
    ``conv_instnorm_relu_avgpool`` under ``"fused"`` for instance norm, ReLU and average pooling on at most
    ``STEM_MAX_CHANNELS`` input channels (the ConvNet's first block on images)."""
    if (impl == "fused" and channels <= STEM_MAX_CHANNELS and norm == "instancenorm" and act == "relu"
            and pool == "avgpool"):
        return conv_instnorm_relu_avgpool
    return None

CONV3X3 = {"patches": conv3x3_patches, "vjp": conv3x3_vjp, "winograd": conv3x3_winograd, "fused": conv3x3_winograd,
           "xla": _lax_conv}


def conv3x3(x: Array, kernel: Array, padding: int, impl: str) -> Array:
    """A 3x3, stride-1 convolution of x (n, h, w, c) with kernel (3, 3, c, o) and zero padding, by ``impl``."""
    if impl not in CONV3X3:
        raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {impl!r}")
    return CONV3X3[impl](x, kernel, padding)
