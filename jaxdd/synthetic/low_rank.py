"""The low-rank manifold plugin (Yang et al., NeurIPS 2023; docs/methods.md section 9) as a Parameterization.

Every synthetic image j and channel c is a product of two thin factors, x_j[..., c] = A_j[c] @ B_j[c]:

    params = {"A": (K*m, C, H, r), "B": (K*m, C, r, W)}     decode: einsum("nchr,ncrw->nhwc", A, B)

Nothing is shared across images, channels or classes; there is no non-linearity or scale. Labels are hard and
class-major (class 0's m images first), like pixels, only m is larger: at a budget of ``ipc`` pixel images per
class, m = floor(ipc*H*W / (r*(H+W))) low-rank images fit (``jaxdd.synthetic.budget``); for 28x28 and r = 2 that is
7 images per pixel image. Any objective works unchanged: it sees decoded images, and gradients reach the factors
through x = A B (dL/dA = G B^T, dL/dB = A^T G).

Inits:
- ``"noise"`` (THE PAPER'S): A, B i.i.d. N(0, 1) in normalised units, so every pixel has variance r.
- ``"svd"`` (a JAXDD EXTENSION, not in the paper): the rank-r truncated SVD of a real image of the class, per
  channel, split evenly (A = U_r sqrt(S_r), B = sqrt(S_r) V_r^T), i.e. the best rank-r approximation of a real image
  (Eckart-Young). ``"real"`` (what ``--init real`` and the methods' default "real" init ask for) means ``"svd"``.
  Pass ``--init noise`` to reproduce the paper.

Per-factor learning rates: the distillation optimiser partitions by path, so ``DistillConfig(lrs=(("data/A", a),
("data/B", b)))`` gives each factor its own lr (the paper uses the base method's lr_img for both).

    jaxdd distill --method dm --dataset fashion_mnist --ipc 1 --param low_rank --rank 2 --init noise --out runs/lodm
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdd.synthetic.base import Parameterization, tree_floats
from jaxdd.synthetic.budget import check_within_budget, low_rank_floats_per_image, low_rank_images_per_class
from jaxdd.synthetic.registry import register_parameterization
from jaxdd.types import JaxddError

LOW_RANK_INITS = ("noise", "svd", "real")


def decode_factors(A: jax.Array, B: jax.Array) -> jax.Array:
    """A (n, C, H, r), B (n, C, r, W) -> images (n, H, W, C): x[n, :, :, c] = A[n, c] @ B[n, c]."""
    return jnp.einsum("nchr,ncrw->nhwc", A, B)


def svd_factors(images: jax.Array, rank: int) -> tuple[jax.Array, jax.Array]:
    """Factors of the rank-``rank`` truncated SVD of each image and channel: images (n, H, W, C) -> A, B.

    decode_factors(A, B) is the best rank-``rank`` approximation of each channel (exact at rank min(H, W))."""
    x = jnp.transpose(jnp.asarray(images, jnp.float32), (0, 3, 1, 2))  # (n, C, H, W)
    u, s, vt = jnp.linalg.svd(x, full_matrices=False)  # (n,C,H,k), (n,C,k), (n,C,k,W)
    root = jnp.sqrt(s[..., :rank])
    return u[..., :rank] * root[..., None, :], root[..., :, None] * vt[..., :rank, :]


def low_rank(rank: int = 2, *, ipc: int, image_shape, init: str = "noise", num_classes: int | None = None
             ) -> Parameterization:
    """Rank-``rank`` factor images filling a budget of ``ipc`` pixel images per class of ``image_shape`` (h, w, c).

    ``init``: "noise" (the paper's N(0, 1) factors) or "svd"/"real" (jaxdd extension: truncated SVD of real images
    of the class). ``num_classes``, when given, is used to assert the whole set stays within the pixel budget."""
    h, w, c = tuple(image_shape)
    if not isinstance(rank, int) or rank < 1 or rank > min(h, w):
        raise JaxddError(f"rank must be an int in [1, min(h, w) = {min(h, w)}], got {rank!r}")
    if init not in LOW_RANK_INITS:
        raise JaxddError(f"low_rank init must be one of {LOW_RANK_INITS}, got {init!r}")
    m = low_rank_images_per_class(ipc, (h, w, c), rank)
    per_image = low_rank_floats_per_image((h, w, c), rank)
    kind = "noise" if init == "noise" else "svd"

    def _init(key, real):
        k = real.shape[0]
        if real.shape[2:] != (h, w, c):
            raise JaxddError(f"low_rank was built for images {(h, w, c)}, got real images {real.shape[2:]}")
        n = k * m
        if kind == "noise":
            ka, kb = jax.random.split(key)
            params = {"A": jax.random.normal(ka, (n, c, h, rank), jnp.float32),
                      "B": jax.random.normal(kb, (n, c, rank, w), jnp.float32)}
        else:
            if real.shape[1] < m:
                raise JaxddError(f"the svd init needs {m} real images per class, got {real.shape[1]}")
            a, b = svd_factors(real[:, :m].reshape(n, h, w, c), rank)
            params = {"A": a, "B": b}
        check_within_budget(tree_floats(params), k, ipc, (h, w, c), f"low_rank(rank={rank})")
        return params

    if num_classes is not None:
        check_within_budget(num_classes * m * per_image, num_classes, ipc, (h, w, c), f"low_rank(rank={rank})")
    config = {"rank": rank, "ipc_budget": ipc, "init": kind, "images_per_class": m, "floats_per_image": per_image,
              "paper_init": kind == "noise"}
    return Parameterization("low_rank", _init, lambda p: decode_factors(p["A"], p["B"]), m, tree_floats, config)


def _factory(ipc, image_shape, num_classes=None, init="noise", rank=2, **options):
    if options:
        raise JaxddError(f"low_rank takes only the option 'rank', got {sorted(options)}")
    return low_rank(int(rank), ipc=ipc, image_shape=tuple(image_shape), init=init, num_classes=num_classes)


register_parameterization("low_rank", _factory)
