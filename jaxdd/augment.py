"""Differentiable Siamese augmentation (DSA) and the DC evaluation augmentation.

Images are NHWC floating point arrays (n, h, w, c) in normalised units. Every function here is pure: the random
transform is a function of an explicit ``key``, so

* ``dsa(real, key)`` and ``dsa(syn, key)`` apply the *identical* transform to both batches (``siamese=True``), whatever
  their sizes, which is what gradient matching (DSA) and distribution matching (DM) need;
* ``dsa`` is linear/affine in ``x`` for a fixed key, hence differentiable w.r.t. ``x`` everywhere (the gradient through
  the geometric components is a gather transpose, through the colour components a scale);
* the strategy is a static Python string; the component is picked inside the graph with ``jax.lax.switch``, so under
  ``jit`` only the chosen branch runs (under a ``vmap`` over keys the switch becomes a select over all branches).

Geometry conventions (scale, rotate and the DC geometric ops):
  pixel (i, j) sits at coordinate (i, j); the transform is an affine map about the image centre
  ((h-1)/2, (w-1)/2) in *pixel* units, from output pixel to input location, followed by bilinear interpolation with
  zeros outside the image. This is ``align_corners=True`` semantics (the centres of the corner pixels are the
  extreme sample points, so the identity transform reproduces the input exactly). For square images it equals
  PyTorch's ``affine_grid``/``grid_sample`` with ``align_corners=True, padding_mode="zeros"``; for rectangular images
  a rotation is a true rotation in pixel space (no shear from normalised coordinates).

Cost (jitted, CPU, (256, 32, 32, 3)): forward 0.3-2.5 ms per component; forward+backward <= 8 ms Siamese, but
~25-40 ms for per-image (``siamese=False``) scale/rotate, whose backward is a scatter-add (cheap on accelerators).

Rounding: ``round`` below is half-up, ``floor(v + 0.5)`` (crop 0.125 -> 1 px at 8, 4 px at 28 and 32, 8 px at 64;
cutout 0.5 -> 4 px at 8, 14 at 28, 16 at 32).
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxdd.types import JaxddError, PRNGKey

__all__ = [
    "DSA_DEFAULT",
    "DSA_NO_FLIP",
    "DSA_COMPONENTS",
    "DC_COMPONENTS",
    "DSAParams",
    "DCParams",
    "parse_strategy",
    "dsa",
    "dc_augment",
    "DC_PREFIX",
    "parse_train_augment",
    "train_augment",
]

DSA_DEFAULT = "color_crop_cutout_flip_scale_rotate"
DSA_NO_FLIP = "color_crop_cutout_scale_rotate"

DSA_COMPONENTS = ("color", "crop", "cutout", "flip", "scale", "rotate")
DC_COMPONENTS = ("crop", "scale", "rotate", "noise")


class DSAParams(NamedTuple):
    """Ranges of the DSA draws (u ~ U[0, 1] throughout). A pytree: may be passed traced through ``jit``.

    scale:      sx, sy ~ U[1/scale, scale] independently (input = s * output about the centre).
    rotate:     angle ~ U[-rotate, rotate] degrees.
    crop:       integer shift per axis ~ U{-s..s}, s = round(crop * side), zero fill.
    cutout:     zero a (ch, cw) = (round(cutout*h), round(cutout*w)) rectangle, rows cy - ch//2 .. cy - ch//2 + ch - 1
                (columns alike) clipped at the border, cy ~ U{0..h-1} for odd ch and U{0..h} for even ch.
    brightness: x + (u - 0.5) * brightness.
    saturation: m + (x - m) * (u * saturation), m = per-pixel mean over channels (no-op for c == 1).
    contrast:   m + (x - m) * (u + contrast), m = per-image mean over h, w, c.
    """

    scale: float = 1.2
    rotate: float = 15.0
    crop: float = 0.125
    cutout: float = 0.5
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5


class DCParams(NamedTuple):
    """Ranges of the DC evaluation augmentation (per image one component).

    crop:   pad by ``crop`` pixels with the per-image channel mean, crop back at a uniform offset
            (= integer shift per axis in [-crop, crop], mean fill).
    scale:  zoom factor per axis ~ U[1 - scale, 1 + scale] about the centre, mean fill.
    rotate: angle ~ U[-rotate, rotate] degrees about the centre, mean fill.
    noise:  x + noise * N(0, 1).
    """

    crop: int = 4
    scale: float = 0.2
    rotate: float = 45.0
    noise: float = 0.001


# ----------------------------------------------------------------------------------------------------------------------
# Strategy parsing


def _parse(strategy: str, valid: tuple[str, ...], what: str) -> tuple[str, ...]:
    if not isinstance(strategy, str):
        raise JaxddError(f"{what} strategy must be a string such as {'_'.join(valid)!r}, got {strategy!r}.")
    s = strategy.strip().lower()
    if s in ("", "none"):
        return ()
    names = tuple(s.split("_"))
    bad = [n for n in names if n not in valid]
    if bad:
        raise JaxddError(
            f"Unknown {what} component(s) {bad} in strategy {strategy!r}. Valid components: {', '.join(valid)} "
            f"(joined with '_', e.g. {'_'.join(valid)!r}), or 'none' for the identity."
        )
    return names


def parse_strategy(strategy: str) -> tuple[str, ...]:
    """Split a DSA strategy string into its components, validating the names.

    ``"color_crop_cutout_flip_scale_rotate" -> ("color", "crop", "cutout", "flip", "scale", "rotate")``;
    ``"none"`` or ``""`` -> ``()`` (identity). Repeated names are kept (they weight the uniform draw).
    Raises ``JaxddError`` listing the valid names for an unknown component.
    """
    return _parse(strategy, DSA_COMPONENTS, "DSA")


def _check_images(x: jax.Array, fn: str) -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim != 4:
        raise JaxddError(f"{fn} expects NHWC images of shape (n, h, w, c); got shape {x.shape}.")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    return x


def _round_half_up(v):
    return jnp.floor(v + 0.5).astype(jnp.int32)


# ----------------------------------------------------------------------------------------------------------------------
# Geometric primitives (per image; vmapped over the batch with per-image or shared parameters)


def _bilinear_rows(rows: jax.Array, yin: jax.Array, xin: jax.Array, h: int, w: int, base=0) -> jax.Array:
    """Bilinear sampling with zero fill from a row table.

    rows: (m, d) table where row ``base + i*w + j`` holds pixel (i, j) of the image being sampled; yin, xin: float
    pixel locations (any shape S, broadcastable with ``base``). Returns (*S, d). Four plain row gathers (on CPU this
    beats one stacked gather and vmapped per-image gathers several-fold; the backward pass is four scatter-adds).
    """
    y0f = jnp.floor(yin)
    x0f = jnp.floor(xin)
    wy = (yin - y0f).astype(rows.dtype)
    wx = (xin - x0f).astype(rows.dtype)
    y0 = y0f.astype(jnp.int32)
    x0 = x0f.astype(jnp.int32)
    zero = jnp.zeros((), rows.dtype)
    out = None
    for dy, wty in ((0, 1 - wy), (1, wy)):
        for dx, wtx in ((0, 1 - wx), (1, wx)):
            yy = y0 + dy
            xx = x0 + dx
            valid = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            wt = jnp.where(valid, wty * wtx, zero)
            idx = base + jnp.clip(yy, 0, h - 1) * w + jnp.clip(xx, 0, w - 1)
            term = rows[idx] * wt[..., None]
            out = term if out is None else out + term
    return out


def _affine_coords(h: int, w: int, mat: jax.Array, shift: jax.Array):
    """Input locations of the output pixels: in = mat @ (out - centre) + centre + shift, with (y, x) ordering.

    mat: (..., 2, 2), shift: (..., 2) -> yin, xin of shape (..., h, w) (float32).
    """
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    yy = jnp.arange(h, dtype=jnp.float32)[:, None] - cy
    xx = jnp.arange(w, dtype=jnp.float32)[None, :] - cx
    mat = mat.astype(jnp.float32)[..., None, None]
    shift = shift.astype(jnp.float32)[..., None, None]
    yin = mat[..., 0, 0, :, :] * yy + mat[..., 0, 1, :, :] * xx + (cy + shift[..., 0, :, :])
    xin = mat[..., 1, 0, :, :] * yy + mat[..., 1, 1, :, :] * xx + (cx + shift[..., 1, :, :])
    return yin, xin


def _affine(x: jax.Array, mat: jax.Array, shift: jax.Array | None = None) -> jax.Array:
    """Affine-warp a batch (n, h, w, c), bilinear, zero fill (module conventions).

    mat: (2, 2) shared by the batch or (n, 2, 2) per image (maps output offsets from the centre to input offsets,
    (y, x) order); shift: (2,) or (n, 2) added to the input location (pixels), default 0.
    """
    n, h, w, c = x.shape
    if shift is None:
        shift = jnp.zeros(mat.shape[:-1], jnp.float32)
    if mat.ndim == 2 and shift.ndim == 1:
        # One grid for the whole batch: gather rows of the (h*w, n*c) table (contiguous, vector-friendly).
        yin, xin = _affine_coords(h, w, mat, shift)
        table = jnp.transpose(x, (1, 2, 0, 3)).reshape(h * w, n * c)
        out = _bilinear_rows(table, yin, xin, h, w)
        return jnp.transpose(out.reshape(h, w, n, c), (2, 0, 1, 3))
    mat = jnp.broadcast_to(mat, (n, 2, 2))
    shift = jnp.broadcast_to(shift, (n, 2))
    yin, xin = _affine_coords(h, w, mat, shift)  # (n, h, w)
    base = (jnp.arange(n, dtype=jnp.int32) * (h * w))[:, None, None]
    return _bilinear_rows(x.reshape(n * h * w, c), yin, xin, h, w, base)


def _shift_one(img: jax.Array, dy: jax.Array, dx: jax.Array) -> jax.Array:
    """out[i, j] = img[i - dy, j - dx], zero where that falls outside (row and column gathers, then a mask)."""
    h, w, _ = img.shape
    rows = jnp.arange(h) - dy
    cols = jnp.arange(w) - dx
    mask = (((rows >= 0) & (rows < h))[:, None] & ((cols >= 0) & (cols < w))[None, :]).astype(img.dtype)
    out = img[jnp.clip(rows, 0, h - 1)][:, jnp.clip(cols, 0, w - 1)]
    return out * mask[..., None]


def _shift(x: jax.Array, dy: jax.Array, dx: jax.Array) -> jax.Array:
    """Integer shift with zero fill; dy, dx scalars (shared) or (n,) (per image)."""
    ax = 0 if jnp.ndim(dy) == 1 else None
    return jax.vmap(_shift_one, in_axes=(0, ax, ax))(x, dy, dx)


def _rot_mat(theta: jax.Array) -> jax.Array:
    """Rotation matrices (..., 2, 2) acting on (y, x)."""
    c, s = jnp.cos(theta), jnp.sin(theta)
    return jnp.stack([jnp.stack([c, -s], -1), jnp.stack([s, c], -1)], -2)


# ----------------------------------------------------------------------------------------------------------------------
# Colour primitives (u broadcastable to (n, 1, 1, 1))


def _brightness(x, u, p: DSAParams):
    return x + (u - 0.5) * p.brightness


def _channel_mean(x):
    """Per-pixel mean over the channel axis, broadcast back to x's shape.

    Built from static slices and a concatenate: XLA:CPU reduces (and, in the backward pass, broadcasts over) a minor
    axis of size 3 about 20x slower than this; the transposes of slice/concatenate are cheap.
    """
    c = x.shape[-1]
    total = x[..., 0:1]
    for i in range(1, c):
        total = total + x[..., i : i + 1]
    return jnp.concatenate([total / c] * c, axis=-1)


def _saturation(x, u, p: DSAParams):
    m = _channel_mean(x)
    return m + (x - m) * (u * p.saturation)


def _contrast(x, u, p: DSAParams):
    m = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
    return m + (x - m) * (u + p.contrast)


# ----------------------------------------------------------------------------------------------------------------------
# DSA components: (x, key, p, n_draws) -> x_aug. n_draws is 1 (Siamese: one draw broadcast) or n (per image).


# Each component makes ONE uniform draw of shape (nd, k) (one threefry call: small graphs, fast compiles); integers
# are floor(u * m), uniform on {0..m-1} up to float32 resolution.


def _u(key, nd, k):
    return jax.random.uniform(key, (nd, k), jnp.float32)


def _uint(u, lo, hi):
    """Integers uniform on {lo, ..., hi} from u ~ U[0, 1)."""
    m = hi - lo + 1
    return lo + jnp.minimum(jnp.floor(u * m).astype(jnp.int32), m - 1)


def _dsa_color(x, key, p, nd):
    u = _u(key, nd, 3).astype(x.dtype)[:, None, None, :]  # (nd, 1, 1, 3); float32 draws whatever x's dtype
    x = _brightness(x, u[..., 0:1], p)
    x = _saturation(x, u[..., 1:2], p)
    return _contrast(x, u[..., 2:3], p)


def _dsa_crop(x, key, p, nd):
    _, h, w, _ = x.shape
    u = _u(key, nd, 2)
    sy = _round_half_up(p.crop * h)
    sx = _round_half_up(p.crop * w)
    dy = _uint(u[:, 0], -sy, sy)
    dx = _uint(u[:, 1], -sx, sx)
    if nd == 1:
        dy, dx = dy[0], dx[0]
    return _shift(x, dy, dx)


def _dsa_cutout(x, key, p, nd):
    _, h, w, _ = x.shape
    u = _u(key, nd, 2)
    ch = _round_half_up(p.cutout * h)
    cw = _round_half_up(p.cutout * w)
    # centre offsets in 0..h-1 for odd sizes and 0..h for even ones (the reference's randint(0, h + 1 - ch % 2)):
    # an even square then reaches the same (ch / 2)-wide band at the top and at the bottom edge
    cy = _uint(u[:, 0], 0, h - ch % 2)[:, None, None, None]
    cx = _uint(u[:, 1], 0, w - cw % 2)[:, None, None, None]
    top = cy - ch // 2
    left = cx - cw // 2
    rows = jnp.arange(h)[None, :, None, None]
    cols = jnp.arange(w)[None, None, :, None]
    inside = (rows >= top) & (rows < top + ch) & (cols >= left) & (cols < left + cw)
    return jnp.where(inside, jnp.zeros((), x.dtype), x)


def _dsa_flip(x, key, p, nd):
    flip = _u(key, nd, 1)[:, :, None, None] < 0.5
    return jnp.where(flip, x[:, :, ::-1, :], x)


def _dsa_scale(x, key, p, nd):
    r = p.scale
    s = 1.0 / r + (r - 1.0 / r) * _u(key, nd, 2)  # sy, sx ~ U[1/r, r]
    mat = jax.vmap(jnp.diag)(s)
    return _affine(x, mat[0] if nd == 1 else mat)


def _dsa_rotate(x, key, p, nd):
    theta = (2.0 * _u(key, nd, 1)[:, 0] - 1.0) * p.rotate * (math.pi / 180.0)
    mat = _rot_mat(theta)
    return _affine(x, mat[0] if nd == 1 else mat)


_DSA_FNS = {
    "color": _dsa_color,
    "crop": _dsa_crop,
    "cutout": _dsa_cutout,
    "flip": _dsa_flip,
    "scale": _dsa_scale,
    "rotate": _dsa_rotate,
}


@functools.partial(jax.jit, static_argnames=("strategy", "siamese"))
def dsa(
    x: jax.Array,
    key: PRNGKey,
    strategy: str = DSA_DEFAULT,
    siamese: bool = True,
    params: DSAParams = DSAParams(),
) -> jax.Array:
    """Differentiable (Siamese) augmentation, mode "S": one component of ``strategy`` drawn uniformly per call.

    Args:
      x: images (n, h, w, c), floating point (any h, w, c; rectangular is fine).
      key: PRNG key; it alone decides the component and its parameters.
      strategy: static string of components joined by "_" from color, crop, cutout, flip, scale, rotate;
        "none"/"" is the identity. "color" = brightness, then saturation, then contrast.
      siamese: True: one parameter draw broadcast to every image, so batches of any sizes augmented with the same key
        get the identical transform (use for the real and the synthetic batch of one matching step).
        False: every image gets its own parameter draw (the component is still one per call).
      params: ``DSAParams`` ranges (a pytree; may be traced).

    Returns:
      (n, h, w, c) array of ``x``'s dtype; linear/affine in ``x``, differentiable w.r.t. ``x``.
    """
    comps = parse_strategy(strategy)
    x = _check_images(x, "dsa")
    if not comps:
        return x
    params = DSAParams(*(jnp.asarray(v, jnp.float32) for v in params))
    nd = 1 if siamese else x.shape[0]
    k_choice, k_param = jax.random.split(key)
    branches = [functools.partial(_DSA_FNS[name], p=params, nd=nd) for name in comps]
    if len(branches) == 1:
        return branches[0](x, k_param).astype(x.dtype)
    branches = [lambda x_, k_, f=f: f(x_, k_).astype(x.dtype) for f in branches]
    idx = _uint(jax.random.uniform(k_choice, (), jnp.float32), 0, len(branches) - 1)
    return jax.lax.switch(idx, branches, x, k_param)


@functools.partial(jax.jit, static_argnames=("strategy",))
def dc_augment(x: jax.Array, key: PRNGKey, strategy: str, params: DCParams = DCParams()) -> jax.Array:
    """DC-augmentation used when evaluating DC-distilled sets: per image ONE component of ``strategy``.

    Components: crop (shift by an integer in [-4, 4] per axis, filled with the per-image channel mean = pad 4 with the
    mean and crop back), scale (zoom ~ U[0.8, 1.2] per axis), rotate (angle ~ U[-45, 45] deg), noise (+ 0.001 N(0, 1)).
    The geometric fills use the per-image channel mean; geometry follows the module conventions (align_corners=True,
    bilinear). Typical strategies: "crop_scale_rotate" (MNIST), "crop_noise" (ConvNetBN), "none".
    Implemented as one batched affine warp, so it is cheap and (incidentally) differentiable w.r.t. ``x``.
    """
    comps = _parse(strategy, DC_COMPONENTS, "DC-augmentation")
    x = _check_images(x, "dc_augment")
    if not comps:
        return x
    params = DCParams(jnp.asarray(params.crop, jnp.int32), *(jnp.asarray(v, jnp.float32) for v in params[1:]))
    n, h, w, c = x.shape
    k_u, k_noise = jax.random.split(key)
    u = _u(k_u, n, 6)  # choice, crop dy/dx, zoom y/x, angle
    choice = _uint(u[:, 0], 0, len(comps) - 1)

    def chosen(name):
        hits = [i for i, cn in enumerate(comps) if cn == name]
        return jnp.isin(choice, jnp.asarray(hits, jnp.int32)) if hits else jnp.zeros((n,), bool)

    out = x
    if {"crop", "scale", "rotate"} & set(comps):
        crop = jnp.asarray(params.crop, jnp.int32)
        shift = _uint(u[:, 1:3], -crop, crop).astype(jnp.float32)
        shift = jnp.where(chosen("crop")[:, None], shift, 0.0)
        zoom = 1.0 + params.scale * (2.0 * u[:, 3:5] - 1.0)
        zoom = jnp.where(chosen("scale")[:, None], zoom, 1.0)
        theta = (2.0 * u[:, 5] - 1.0) * params.rotate * (math.pi / 180.0)
        theta = jnp.where(chosen("rotate"), theta, 0.0)
        mat = _rot_mat(theta) / zoom[:, None, :]  # rotate(zoom^-1 out): columns scaled by 1/zoom
        fill = jnp.mean(x, axis=(1, 2), keepdims=True)
        out = fill + _affine(x - fill, mat, shift)
    if "noise" in comps:
        noise = jax.random.normal(k_noise, x.shape, jnp.float32).astype(x.dtype) * params.noise
        out = out + jnp.where(chosen("noise")[:, None, None, None], noise, jnp.zeros((), x.dtype))
    return out.astype(x.dtype)


# ----------------------------------------------------------------------------------------------------------------------
# Augmentation of network training (evaluation, inner loops): one string names either family

DC_PREFIX = "dc:"


def parse_train_augment(strategy: str | None) -> tuple[str, tuple[str, ...]]:
    """Validate the augmentation of a network's training, as ``jaxdd.train.TrainProtocol.augment`` holds it.

    ``None``/``""``/``"none"`` -> ``("none", ())``; a DSA strategy (``"color_crop_cutout_flip_scale_rotate"``) ->
    ``("dsa", components)``, applied non-Siamese; ``"dc:"`` + a DC-augmentation strategy (``"dc:crop_scale_rotate"``,
    ``"dc:crop_noise"``) -> ``("dc", components)``, the DC code's evaluation augmentation (``dc_augment``).
    Raises ``JaxddError`` naming the valid components."""
    if strategy is None:
        return "none", ()
    if isinstance(strategy, str) and strategy.strip().lower().startswith(DC_PREFIX):
        comps = _parse(strategy.strip()[len(DC_PREFIX):], DC_COMPONENTS, "DC-augmentation")
        return ("dc", comps) if comps else ("none", ())
    comps = parse_strategy(strategy)
    return ("dsa", comps) if comps else ("none", ())


def train_augment(x: jax.Array, key: PRNGKey, strategy: str | None) -> jax.Array:
    """Augment a training batch per image (see ``parse_train_augment``): DSA non-Siamese, or DC-augmentation."""
    kind, _ = parse_train_augment(strategy)
    if kind == "dsa":
        return dsa(x, key, strategy, siamese=False)
    if kind == "dc":
        return dc_augment(x, key, strategy.strip()[len(DC_PREFIX):])
    return x
