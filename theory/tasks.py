"""Multi-index regression tasks y = g(U x) + noise with Gaussian inputs (reconstructed: theory/README.md).

A task stores the projection ``U`` of shape (r, d) with orthonormal rows (U U^T = I_r) and the link parameters. Every
link is normalised so that E f* = 0 and E f*^2 = 1 under x ~ N(0, I_d), which makes test MSEs comparable across tasks
(the trivial predictor 0 has MSE 1 + noise^2).

Links (``kind``):
  quad      g(z) = (z^T A z - tr A) / sqrt(2 ||A||_F^2), spec(A) = linspace(1, kappa, r) in a random basis (p = 2).
            E[Hess g] = 2 A / sqrt(2 ||A||_F^2): rank r, condition number kappa.
  cubic     sum_k c_k He_2(z_k) + r^(-1/2) sum_k He_3(z_k), normalised; c_k = linspace(1, kappa, r) (p = 3, H != 0).
  relu_sum  sum_k c_k ReLU(z_k), centred and scaled; c_k = linspace(1, kappa, r) (non-polynomial, H > 0, and a
            linear part E[grad g] = c / 2 != 0 inside span(U)).
  he3       He_3(z_1) / sqrt(6): information exponent 3, H = 0. Negative control: one step recovers nothing.
  staircase (z_1 + z_1 z_2) / sqrt(2): a second control (needs r >= 2).
  none      "no structure": quad with r = d, so g depends on every coordinate.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

KINDS = ("quad", "cubic", "relu_sum", "he3", "staircase", "none")


@dataclasses.dataclass(frozen=True)
class MIMTask:
    """A multi-index task. U: (r, d) orthonormal rows; A: (r, r) symmetric link matrix (quad/none) or unused;
    c: (r,) per-direction weights (cubic, relu_sum). ``kind`` and ``noise`` are static (pytree metadata), so a task
    can be passed through ``jit`` and ``vmap`` (vmapped tasks carry a leading seed axis on U, A, c)."""

    U: jax.Array
    A: jax.Array
    c: jax.Array
    kind: str = dataclasses.field(metadata=dict(static=True), default="quad")
    noise: float = dataclasses.field(metadata=dict(static=True), default=0.0)

    @property
    def d(self) -> int:
        return self.U.shape[-1]

    @property
    def r(self) -> int:
        return self.U.shape[-2]


jax.tree_util.register_dataclass(MIMTask, data_fields=["U", "A", "c"], meta_fields=["kind", "noise"])


def _orthonormal(key, n: int, m: int) -> jax.Array:
    """(n, m) with orthonormal rows (n <= m), Haar-distributed via QR of a Gaussian with sign fix."""
    g = jax.random.normal(key, (m, n))
    q, rr = jnp.linalg.qr(g)
    q = q * jnp.sign(jnp.diagonal(rr))[None, :]
    return q.T


def make_mim_task(key, d: int, r: int, kind: str = "quad", kappa: float = 2.0, noise: float = 0.0) -> MIMTask:
    """Draw a multi-index task.

    Args:
      key: PRNG key (draws U and the link basis).
      d: input dimension. r: intrinsic dimension (ignored for ``none``, which uses r = d; ``he3`` keeps U of shape
        (r, d) but only its first row matters).
      kind: one of KINDS. kappa: condition number of E[Hess g] (quad, cubic's He_2 part, relu_sum weights).
      noise: label noise standard deviation.
    Returns:
      MIMTask with U (r, d), A (r, r), c (r,).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown task kind {kind!r}; choose one of {KINDS}")
    if kind == "none":
        r = d
    if kind == "staircase" and r < 2:
        raise ValueError("staircase needs r >= 2")
    if r > d:
        raise ValueError(f"need r <= d, got r={r}, d={d}")
    ku, ka = jax.random.split(key)
    U = _orthonormal(ku, r, d)
    spec = jnp.linspace(1.0, kappa, r) if r > 1 else jnp.ones((1,))
    Q = _orthonormal(ka, r, r)
    A = (Q.T * spec[None, :]) @ Q
    return MIMTask(U=U, A=A, c=spec, kind=kind, noise=float(noise))


def link(task: MIMTask, z: jax.Array) -> jax.Array:
    """g(z) for z of shape (n, r) -> (n,). Normalised to mean 0 and variance 1 under z ~ N(0, I_r)."""
    kind = task.kind
    if kind in ("quad", "none"):
        A = task.A
        quad = jnp.einsum("ni,ij,nj->n", z, A, z)
        return (quad - jnp.trace(A)) / jnp.sqrt(2.0 * jnp.sum(A * A))
    if kind == "cubic":
        c = task.c
        r = z.shape[-1]
        he2 = z**2 - 1.0
        he3 = z**3 - 3.0 * z
        val = he2 @ c + jnp.sum(he3, axis=-1) / math.sqrt(r)
        return val / jnp.sqrt(2.0 * jnp.sum(c * c) + 6.0)
    if kind == "relu_sum":
        c = task.c
        mean = jnp.sum(c) / math.sqrt(2.0 * math.pi)
        var = jnp.sum(c * c) * (0.5 - 1.0 / (2.0 * math.pi))
        return (jax.nn.relu(z) @ c - mean) / jnp.sqrt(var)
    if kind == "he3":
        z1 = z[:, 0]
        return (z1**3 - 3.0 * z1) / math.sqrt(6.0)
    if kind == "staircase":
        return (z[:, 0] + z[:, 0] * z[:, 1]) / math.sqrt(2.0)
    raise ValueError(kind)


def target(task: MIMTask, x: jax.Array) -> jax.Array:
    """Noiseless f*(x) = g(U x). x: (n, d) -> (n,)."""
    return link(task, x @ task.U.T)


def sample(task: MIMTask, key, n: int) -> tuple[jax.Array, jax.Array]:
    """Draw n labelled points: X (n, d) ~ N(0, I), y (n,) = f*(X) + noise N(0, 1)."""
    kx, ke = jax.random.split(key)
    X = jax.random.normal(kx, (n, task.d), dtype=task.U.dtype)
    y = target(task, X)
    if task.noise > 0:
        y = y + task.noise * jax.random.normal(ke, (n,), dtype=y.dtype)
    return X, y


def expected_hessian(task: MIMTask) -> jax.Array:
    """H = E_x[Hess f*(x)] = U^T E_z[Hess g(z)] U, shape (d, d). Closed form for every link."""
    kind, U, r = task.kind, task.U, task.r
    if kind in ("quad", "none"):
        Hg = 2.0 * task.A / jnp.sqrt(2.0 * jnp.sum(task.A * task.A))
    elif kind == "cubic":
        Hg = jnp.diag(2.0 * task.c) / jnp.sqrt(2.0 * jnp.sum(task.c**2) + 6.0)
    elif kind == "relu_sum":
        var = jnp.sum(task.c**2) * (0.5 - 1.0 / (2.0 * math.pi))
        Hg = jnp.diag(task.c / math.sqrt(2.0 * math.pi)) / jnp.sqrt(var)
    elif kind == "staircase":
        Hg = jnp.zeros((r, r)).at[0, 1].set(1.0).at[1, 0].set(1.0) / math.sqrt(2.0)
    else:  # he3
        Hg = jnp.zeros((r, r))
    return U.T @ Hg @ U


def expected_gradient(task: MIMTask) -> jax.Array:
    """E_x[grad f*(x)] = U^T E[grad g], shape (d,). Nonzero only for relu_sum and staircase."""
    kind, U, r = task.kind, task.U, task.r
    if kind == "relu_sum":
        var = jnp.sum(task.c**2) * (0.5 - 1.0 / (2.0 * math.pi))
        eg = 0.5 * task.c / jnp.sqrt(var)
    elif kind == "staircase":
        eg = jnp.zeros((r,)).at[0].set(1.0 / math.sqrt(2.0))
    else:
        eg = jnp.zeros((r,))
    return U.T @ eg
