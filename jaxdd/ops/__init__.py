"""Numerical building blocks that know no model and no method.

``jaxdd.ops.conv``: the convolutions selected by one ``conv_impl`` setting (CPU kernels and the fused first block).
``jaxdd.ops.norms``: Euclidean norms and normalisations that are safe at zero (finite value and gradient, equal to
the PyTorch reference's there), used by every objective instead of ``jnp.linalg.norm``.
"""
from jaxdd.ops.norms import cosine_similarity, safe_global_norm, safe_norm, safe_normalize

__all__ = ["cosine_similarity", "safe_global_norm", "safe_norm", "safe_normalize"]
