"""Tests of jaxdd.augment: Siamese property, analytic component checks, gradients, jit/vmap, errors."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxdd import augment as A
from jaxdd.augment import DSA_DEFAULT, DSA_NO_FLIP, DSAParams, dc_augment, dsa, parse_strategy
from jaxdd.types import JaxddError

COMPONENTS = ("color", "crop", "cutout", "flip", "scale", "rotate")


def _images(seed, shape):
    return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


def _keys(n, seed=0):
    return [jax.random.key(seed * 1000 + i) for i in range(n)]


# ---------------------------------------------------------------------------------------------------------------------
# Strategy parsing and errors


def test_parse_strategy():
    assert parse_strategy(DSA_DEFAULT) == ("color", "crop", "cutout", "flip", "scale", "rotate")
    assert parse_strategy(DSA_NO_FLIP) == ("color", "crop", "cutout", "scale", "rotate")
    assert parse_strategy("none") == ()
    assert parse_strategy("") == ()
    with pytest.raises(JaxddError, match="Valid components: color, crop, cutout, flip, scale, rotate"):
        parse_strategy("color_crap")
    with pytest.raises(JaxddError, match="Unknown DSA component"):
        dsa(jnp.zeros((2, 8, 8, 1)), jax.random.key(0), "colour")
    with pytest.raises(JaxddError, match="Valid components: crop, scale, rotate, noise"):
        dc_augment(jnp.zeros((2, 8, 8, 1)), jax.random.key(0), "crop_flip")
    with pytest.raises(JaxddError, match="NHWC"):
        dsa(jnp.zeros((8, 8, 1)), jax.random.key(0))


def test_none_is_identity():
    x = _images(0, (3, 8, 8, 1))
    np.testing.assert_array_equal(dsa(x, jax.random.key(0), "none"), x)
    np.testing.assert_array_equal(dc_augment(x, jax.random.key(0), "none"), x)


# ---------------------------------------------------------------------------------------------------------------------
# Most checks run on one batch shape S and one set of keys, through ONE compiled function that returns every component
# (siamese and not) for every key (vmap over keys == separate calls; checked in test_jit_and_vmap). Compiling dsa is
# the dominant test cost on a shared CPU, so tests share compilations.

S = (4, 16, 12, 3)  # rectangular on purpose; crop s = round(.125*16) = 2, round(.125*12) = round(1.5) = 2 (half-up)
NKEYS = 16
VARIANTS = tuple((c, s) for c in COMPONENTS for s in (True, False)) + (("cutout_flip", False),)


@jax.jit
def _all_components(x, keys):
    def one(k):
        return {f"{c}/{s}": dsa(x, k, c, siamese=s) for c, s in VARIANTS}

    return jax.vmap(one)(keys)


_CACHE: dict = {}


def _outs(name, x):
    """{(component, siamese): (NKEYS, *S) numpy outputs} for input x (shape S), cached per name."""
    if name not in _CACHE:
        keys = jax.random.split(jax.random.key(123), NKEYS)
        res = _all_components(jnp.asarray(x, jnp.float32), keys)
        _CACHE[name] = {(c, s): np.asarray(res[f"{c}/{s}"]) for c, s in VARIANTS}
    return _CACHE[name]


def _randn():
    return np.array(_images(1, S))


@pytest.mark.parametrize("strategy", COMPONENTS)
def test_siamese_one_draw_for_the_batch_per_key_draws_differ(strategy):
    # equal images (at any position) map to equal outputs: the transform is shared by the batch
    x = _randn().copy()
    x[2] = x[0]
    outs = _outs("randn_dup", x)
    o = outs[(strategy, True)]
    np.testing.assert_allclose(o[:, 0], o[:, 2], atol=1e-6)
    # different keys give different transforms (at least one of 16 differs from the first)
    assert any(not np.allclose(o[0], o[i]) for i in range(1, NKEYS))


@pytest.mark.parametrize("strategy", COMPONENTS)
def test_non_siamese_per_image_transforms(strategy):
    x = np.broadcast_to(_randn()[:1], S).copy()
    outs = _outs("randn_same", x)
    per_image = outs[(strategy, False)]
    assert any(len({im.round(4).tobytes() for im in per_image[k]}) > 1 for k in range(NKEYS))
    shared = outs[(strategy, True)]
    assert all(len({im.round(4).tobytes() for im in shared[k]}) == 1 for k in range(NKEYS))


def test_siamese_batches_of_different_sizes():
    # the real/synthetic use: two batches of different sizes and contents, one key -> the identical transform
    real = _images(2, (4, 16, 12, 3))
    syn = real[1:3] * 1.0
    for key in _keys(12, seed=1):
        out_real = dsa(real, key)
        out_syn = dsa(syn, key)
        np.testing.assert_allclose(out_syn, out_real[1:3], atol=1e-6)
    outs = [np.asarray(dsa(real, k)) for k in _keys(4, seed=2)]
    assert any(not np.allclose(outs[0], o) for o in outs[1:])


def test_component_choice_is_one_per_batch():
    # siamese=False with cutout_flip: per key, either every image got a cutout (has zeros) or none did
    x = np.broadcast_to(_randn()[:1] + 10.0, S).copy()
    o = _outs("randn_same_pos", x)[("cutout_flip", False)]
    zeros = (o == 0).reshape(NKEYS, S[0], -1).any(-1)
    assert (zeros.all(1) | ~zeros.any(1)).all()
    assert zeros.all(1).any() and (~zeros.any(1)).any()


# ---------------------------------------------------------------------------------------------------------------------
# Analytic checks per component


def test_flip_is_mirror_or_identity():
    x = _randn()
    outs = _outs("randn", x)
    for siamese in (True, False):
        seen = set()
        for o in outs[("flip", siamese)]:
            for im, xi in zip(o, x):
                if np.array_equal(im, xi):
                    seen.add("id")
                else:
                    np.testing.assert_array_equal(im, xi[:, ::-1])
                    seen.add("flip")
        assert seen == {"id", "flip"}


def _shift_np(x, dy, dx):
    """out[..., i, j, :] = x[..., i - dy, j - dx, :], zero outside; x (..., h, w, c)."""
    h, w = x.shape[-3:-1]
    out = np.zeros_like(x)
    dst_i = slice(max(dy, 0), h + min(dy, 0))
    src_i = slice(max(-dy, 0), h + min(-dy, 0))
    dst_j = slice(max(dx, 0), w + min(dx, 0))
    src_j = slice(max(-dx, 0), w + min(-dx, 0))
    out[..., dst_i, dst_j, :] = x[..., src_i, src_j, :]
    return out


def test_crop_is_integer_shift_with_zero_fill():
    x = _randn() + 10.0  # no natural zeros
    outs = _outs("randn_pos", x)
    s = 2
    cands = {(dy, dx): _shift_np(x, dy, dx) for dy in range(-s, s + 1) for dx in range(-s, s + 1)}
    shifts = set()
    for o in outs[("crop", True)]:
        match = [d for d, ref in cands.items() if np.array_equal(o, ref)]
        assert len(match) == 1, "siamese crop is not one integer shift in [-2, 2]^2 with zero fill"
        shifts.add(match[0])
    assert len(shifts) > 3
    for o in outs[("crop", False)][:4]:
        for i in range(S[0]):
            assert sum(np.array_equal(o[i], ref[i]) for ref in cands.values()) == 1
    # the rounding used for the crop and cutout sizes: half-up (4 px at 28 and 32, 1 px at 8)
    assert [int(A._round_half_up(0.125 * n)) for n in (8, 12, 28, 32, 64)] == [1, 2, 4, 4, 8]
    assert [int(A._round_half_up(0.5 * n)) for n in (7, 8, 9, 28)] == [4, 4, 5, 14]


def test_cutout_zeros_a_rectangle():
    h, w = S[1:3]
    sh, sw = 8, 6  # round(0.5 * 16), round(0.5 * 12)
    outs = _outs("ones", np.ones(S, np.float32))
    counts = []
    for siamese in (True, False):
        for o in outs[("cutout", siamese)]:
            for im in o:
                z = im == 0
                assert (z == z[..., :1]).all()  # all channels of a pixel
                z = z[..., 0]
                rows, cols = np.nonzero(z)
                assert z.sum() > 0
                r0, r1, c0, c1 = rows.min(), rows.max(), cols.min(), cols.max()
                assert z[r0 : r1 + 1, c0 : c1 + 1].all() and z.sum() == (r1 - r0 + 1) * (c1 - c0 + 1)
                assert r1 - r0 + 1 <= sh and c1 - c0 + 1 <= sw
                if 0 < r0 and r1 < h - 1 and 0 < c0 and c1 < w - 1:  # not clipped -> exactly side^2
                    assert z.sum() == sh * sw
                counts.append(int(z.sum()))
    assert sh * sw in counts and min(counts) < sh * sw  # both unclipped and clipped cases occurred


@jax.jit
def _cutout_per_image(x, key):
    return dsa(x, key, "cutout", siamese=False)


def test_cutout_centre_offsets_follow_the_reference_range():
    """The centre offset is uniform on 0..h-1 for an odd side and on 0..h for an even one (the reference draws
    randint(0, h + 1 - side % 2)). 9 rows: side 5 (odd), 9 offsets; 12 columns: side 6 (even), 13 offsets, so the
    3-column band at the right edge (offset 12) is drawn as often as the one at the left edge (offset 0)."""
    n = 3900
    z = np.asarray(_cutout_per_image(jnp.ones((n, 9, 12, 1)), jax.random.key(0)))[..., 0] == 0
    rows, cols = z.any(axis=2), z.any(axis=1)
    r0, r1 = rows.argmax(1), 8 - rows[:, ::-1].argmax(1)
    c0, c1 = cols.argmax(1), 11 - cols[:, ::-1].argmax(1)
    assert (z.sum((1, 2)) == (r1 - r0 + 1) * (c1 - c0 + 1)).all()  # one rectangle per image
    cy = np.where(r0 > 0, r0 + 2, r1 - 2)  # rows cy-2 .. cy+2, clipped
    cx = np.where(c0 > 0, c0 + 3, c1 - 2)  # columns cx-3 .. cx+2, clipped
    assert sorted(set(cy.tolist())) == list(range(9)) and sorted(set(cx.tolist())) == list(range(13))
    for offsets, m in ((cy, 9), (cx, 13)):  # uniform: chi-square with m - 1 degrees of freedom, p ~ 1e-4 bound
        counts = np.bincount(offsets, minlength=m)
        assert ((counts - n / m) ** 2 / (n / m)).sum() < 35, counts
    edge = cx == 12
    assert (c0[edge] == 9).all() and (c1[edge] == 11).all() and (cols[cx == 0].sum(1) == 3).all()


@jax.jit
def _identity_params(x, key):
    p = DSAParams(scale=1.0, rotate=0.0)
    return [dsa(x, key, "scale", siamese=True, params=p), dsa(x, key, "rotate", siamese=False, params=p)]


def test_scale_and_rotate_identity_via_params():
    x = _images(8, S)
    for key in _keys(2, seed=7):
        for out in _identity_params(x, key):
            np.testing.assert_allclose(out, x, atol=1e-6)


def _ramp():
    return np.broadcast_to(np.arange(S[2], dtype=np.float32)[None, None, :, None], S).copy()


def test_scale_on_ramp_is_affine():
    # bilinear sampling of the ramp x[i, j] = j is exact: output = cx + sx (j - cx) wherever it samples inside.
    cx = (S[2] - 1) / 2
    outs = _outs("ramp", _ramp())
    sxs = []
    for siamese in (True, False):
        for o in outs[("scale", siamese)]:
            for im in o:
                interior = im[2:14, 2:10, 0]  # samples inside the image for any s in [1/1.2, 1.2]
                np.testing.assert_allclose(np.diff(interior, axis=0), 0.0, atol=1e-4)
                sx = np.diff(interior, axis=1).mean()
                assert 1 / 1.2 - 1e-4 <= sx <= 1.2 + 1e-4
                ref = np.broadcast_to(cx + sx * (np.arange(2, 10)[None, :] - cx), interior.shape)
                np.testing.assert_allclose(interior, ref, atol=1e-4)
                sxs.append(sx)
    assert np.ptp(sxs) > 0.05


def test_rotate_on_ramp_is_a_rotation():
    outs = _outs("ramp", _ramp())
    angles = []
    for siamese in (True, False):
        for o in outs[("rotate", siamese)]:
            for im in o:
                interior = im[4:12, 3:9, 0]  # samples inside the image for |angle| <= 15 deg
                dj = np.diff(interior, axis=1)
                di = np.diff(interior, axis=0)
                np.testing.assert_allclose(dj, dj.mean(), atol=1e-4)
                np.testing.assert_allclose(di, di.mean(), atol=1e-4)
                # unit gradient: a rotation in pixel space, no shear on this rectangular image
                np.testing.assert_allclose(math.hypot(dj.mean(), di.mean()), 1.0, atol=1e-4)
                ang = math.degrees(math.atan2(di.mean(), dj.mean()))
                assert abs(ang) <= 15.0 + 1e-3
                angles.append(ang)
    assert np.ptp(angles) > 5.0


@jax.jit
def _affine_cases(x, mats, shifts):
    h, w = x.shape[1:3]
    # independent reference for the sampler: scipy-style linear map_coordinates with constant 0 outside
    yin, xin = A._affine_coords(h, w, mats, shifts)
    ref = jax.vmap(
        lambda im, yy, xx: jnp.stack(
            [jax.scipy.ndimage.map_coordinates(im[..., ch], [yy, xx], order=1, mode="constant") for ch in range(3)], -1
        )
    )(x, yin, xin)
    return (
        A._affine(x, A._rot_mat(jnp.float32(math.pi / 2))),
        A._affine(x, jnp.eye(2), jnp.array([6.0, 0.0])),
        A._affine(x, jnp.eye(2), jnp.array([0.5, 0.0])),
        A._affine(x, mats, shifts),
        A._affine(x, mats[0], shifts[0]),
        ref,
    )


def test_affine_rot90_and_zero_fill():
    x = np.asarray(_images(9, (2, 6, 6, 3)))
    mats = jax.random.normal(jax.random.key(10), (2, 2, 2))
    shifts = jax.random.normal(jax.random.key(11), (2, 2))
    rot, gone, half, per_image, shared, ref = (np.asarray(a) for a in _affine_cases(jnp.asarray(x), mats, shifts))
    np.testing.assert_allclose(per_image, ref, atol=1e-5)  # per-image gather path
    np.testing.assert_allclose(shared[0], ref[0], atol=1e-5)  # shared-grid (Siamese) gather path
    assert any(np.allclose(rot, np.rot90(x, k, axes=(1, 2)), atol=1e-5) for k in (1, 3))
    np.testing.assert_array_equal(gone, 0.0)  # shifted by a whole image: zero fill outside
    np.testing.assert_allclose(half[:, :-1], 0.5 * (x[:, :-1] + x[:, 1:]), atol=1e-6)  # half-pixel: average
    np.testing.assert_allclose(half[:, -1], 0.5 * x[:, -1], atol=1e-6)  # the border blends with zero


def test_color_primitives_formulas():
    p = DSAParams()
    x = np.asarray(_images(10, (2, 4, 5, 3)))
    u = 0.3
    np.testing.assert_allclose(A._brightness(jnp.asarray(x), u, p), x + (u - 0.5) * 1.0, atol=1e-6)
    m = x.mean(axis=3, keepdims=True)
    np.testing.assert_allclose(A._saturation(jnp.asarray(x), u, p), m + (x - m) * (2.0 * u), atol=1e-6)
    m = x.mean(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(A._contrast(jnp.asarray(x), u, p), m + (x - m) * (u + 0.5), atol=1e-6)
    x1 = jnp.asarray(x[..., :1])
    np.testing.assert_array_equal(A._saturation(x1, u, p), x1)  # no-op on one channel


def test_color_pipeline_structure():
    # out = contrast(saturation(brightness(x))) with b in [-.5, .5], fs in [0, 2], fc in [.5, 1.5]. Per-pixel channel
    # mean g and chroma x - g transform as g_out - mean = fc (g - mean(g)), chroma_out = fs fc chroma, and the image
    # mean moves by b.
    x = _randn().astype(np.float64)
    outs = _outs("randn", x)
    g = x.mean(3, keepdims=True)
    chroma = x - g
    for siamese in (True, False):
        for o in outs[("color", siamese)]:
            for im, gi, ci in zip(o.astype(np.float64), g, chroma):
                go = im.mean(2, keepdims=True)
                co = im - go
                gc = gi - gi.mean()
                fc = np.sum((go - go.mean()) * gc) / np.sum(gc**2)
                np.testing.assert_allclose(go - go.mean(), fc * gc, atol=1e-4)
                assert 0.5 - 1e-4 <= fc <= 1.5 + 1e-4
                b = go.mean() - gi.mean()
                assert -0.5 - 1e-4 <= b <= 0.5 + 1e-4
                fsc = np.sum(co * ci) / np.sum(ci**2)
                np.testing.assert_allclose(co, fsc * ci, atol=1e-4)
                assert -1e-4 <= fsc / fc <= 2.0 + 1e-4


# ---------------------------------------------------------------------------------------------------------------------
# Differentiability


GRAD_VARIANTS = tuple((c, True) for c in COMPONENTS) + (("scale", False), ("rotate", False))  # both gather paths


@jax.jit
def _all_grads(x, wgt, keys):
    def one(k):
        return {
            f"{c}/{s}": jax.grad(lambda x_, c=c, s=s: jnp.sum(dsa(x_, k, c, siamese=s) * wgt))(x)
            for c, s in GRAD_VARIANTS
        }

    return jax.vmap(one)(keys)


def test_grad_finite_nonzero():
    x = _images(12, S)
    wgt = _images(13, S)
    grads = _all_grads(x, wgt, jax.random.split(jax.random.key(3), 3))
    for name, g in grads.items():
        g = np.asarray(g)
        assert np.isfinite(g).all(), name
        assert (np.abs(g).reshape(3, -1).sum(1) > 0).all(), name


def test_check_grads_float64():
    # dsa is linear/affine in x for a fixed key, so finite differences must match to high precision in float64.
    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.key(14), (2, 5, 6, 3), jnp.float64)
        key = jax.random.key(15)

        @jax.jit
        def f(x_):  # the smooth components (all of dsa is linear in x; these also have smooth parameter maps)
            return jnp.stack([dsa(x_, key, c, siamese=True) for c in ("color", "scale", "rotate")]) ** 2

        assert f(x).dtype == jnp.float64
        check_grads(f, (x,), order=1, modes=("fwd", "rev"), atol=1e-7, rtol=1e-7)


# ---------------------------------------------------------------------------------------------------------------------
# jit / vmap / shapes / dtypes


@jax.jit
def _default_shapes(xs, key):
    # the size-dependent components (color and flip do not look at h, w)
    return [dsa(x, key, "crop_cutout_scale_rotate", siamese=False) for x in xs]


def test_shapes():
    shapes = [(2, 8, 8, 1), (2, 28, 28, 1), (1, 64, 64, 3)]
    xs = [_images(16, shape) for shape in shapes]
    for key in _keys(2, seed=17):
        for x, out in zip(xs, _default_shapes(xs, key)):
            assert out.shape == x.shape and out.dtype == jnp.float32
            assert np.isfinite(np.asarray(out)).all()
            assert not np.allclose(out, x)


def test_jit_and_vmap():
    sets = jnp.stack([_images(18, S), _images(19, S), _images(20, S)])  # 3 synthetic sets
    keys = _keys(3, seed=1)  # the same keys as test_siamese_batches_of_different_sizes (shared compilations)
    # vmap over sets with one key: each set transformed exactly as alone
    out = jax.vmap(lambda xs: dsa(xs, keys[0]))(sets)
    for i in range(3):
        np.testing.assert_allclose(out[i], dsa(sets[i], keys[0]), atol=1e-6)
    # vmap over keys (the switch becomes a select) agrees with separate calls
    out = jax.jit(jax.vmap(lambda k: dsa(sets[0], k)))(jnp.stack(keys))
    for i in range(3):
        np.testing.assert_allclose(out[i], dsa(sets[0], keys[i]), atol=1e-5)
    # inside a jitted step with params traced: a sweep over ranges does not retrace
    step = jax.jit(lambda x_, k, p: jnp.sum(dsa(x_, k, "rotate", params=p)))
    a = step(sets[0], keys[0], DSAParams(rotate=10.0))
    b = step(sets[0], keys[0], DSAParams(rotate=0.0))
    assert step._cache_size() == 1
    np.testing.assert_allclose(b, jnp.sum(sets[0]), rtol=1e-5)
    assert not np.isclose(a, b)


def test_raw_uint32_keys():
    x = _images(21, (2, 8, 8, 3))
    a = dsa(x, jax.random.PRNGKey(3), "flip")
    np.testing.assert_array_equal(a, dsa(x, jax.random.PRNGKey(3), "flip"))


# ---------------------------------------------------------------------------------------------------------------------
# DC augmentation


@jax.jit
def _dc_cases(x, c):
    return dc_augment(x, jax.random.key(0), "crop_noise"), dc_augment(c, jax.random.key(1), "crop_scale_rotate")


def test_train_augment_is_dsa_per_image_or_dc_augmentation():
    x = _images(3, (6, 8, 8, 1))
    k = jax.random.key(4)
    np.testing.assert_array_equal(A.train_augment(x, k, "flip_crop"), dsa(x, k, "flip_crop", siamese=False))
    np.testing.assert_array_equal(A.train_augment(x, k, "dc:crop_noise"), dc_augment(x, k, "crop_noise"))
    for none in (None, "none", "dc:none", ""):
        np.testing.assert_array_equal(A.train_augment(x, k, none), x)
        assert A.parse_train_augment(none) == ("none", ())
    assert A.parse_train_augment("dc:crop_scale_rotate") == ("dc", ("crop", "scale", "rotate"))
    assert A.parse_train_augment("flip") == ("dsa", ("flip",))
    with pytest.raises(JaxddError, match="DC-augmentation component"):
        A.parse_train_augment("dc:crop_color")
    with pytest.raises(JaxddError, match="DSA component"):
        A.parse_train_augment("crop_noise")


def test_dc_augment():
    x = _images(22, (64, 10, 12, 3)) + 5.0
    xn = np.asarray(x)
    c = np.full(x.shape, 3.0, np.float32)
    c[32:] = xn[32:]
    out, out_geo = (np.asarray(o) for o in _dc_cases(x, jnp.asarray(c)))
    assert out.shape == x.shape
    diff = np.abs(out - xn).reshape(64, -1).max(1)
    noisy = (diff < 0.01) & (diff > 0)
    assert 10 < noisy.sum() < 54  # about half the images got only noise (std 0.001), the rest a crop
    # a crop is a shift in [-4, 4] with fill = the per-image channel mean
    for i in np.nonzero(~noisy)[0][:4]:
        fill = xn[i].mean(axis=(0, 1))
        refs = [_shift_np(xn[i] - fill, dy, dx) + fill for dy in range(-4, 5) for dx in range(-4, 5)]
        assert any(np.allclose(out[i], ref, atol=1e-5) for ref in refs)
    # geometric strategy: per image transforms; a constant image stays constant (mean fill)
    assert np.isfinite(out_geo).all()
    np.testing.assert_allclose(out_geo[:32], 3.0, atol=1e-5)
    assert len({o.round(4).tobytes() for o in out_geo[32:]}) == 32
