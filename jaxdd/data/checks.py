"""Input checks shared by the whole library: fail early with a message that says how to fix the input."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdd.types import JaxddError


def check_images(x: Any, name: str = "images") -> Any:
    """Checks that ``x`` is a batch of images: a 4-D (n, h, w, c) floating array with finite values.

    Returns ``x`` unchanged so the call can be chained. Under ``jit`` (a tracer) only the shape and dtype are
    checked; values cannot be inspected there.

    Raises:
      JaxddError: for a non-array, a wrong rank, a non-float dtype, or NaN/inf values; the message names
        ``name``, what was expected and how to fix it.
    """
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise JaxddError(
            f"{name} must be an array of shape (n, h, w, c) float32, got {type(x).__name__}. "
            f"Convert it with np.asarray({name}, dtype=np.float32)."
        )
    shape = tuple(x.shape)
    if len(shape) != 4:
        hint = ""
        if len(shape) == 3:
            hint = (
                f" For a single image add a batch axis ({name}[None]); for grey images of shape (n, h, w) "
                f"add a channel axis ({name}[..., None])."
            )
        elif len(shape) == 2:
            hint = f" Flattened images must be reshaped to (n, h, w, c), e.g. {name}.reshape(n, h, w, c)."
        raise JaxddError(
            f"{name} must be 4-D (n, h, w, c) in NHWC layout, got shape {shape} ({len(shape)}-D).{hint}"
        )
    if not np.issubdtype(np.dtype(x.dtype), np.floating):
        raise JaxddError(
            f"{name} must have a floating dtype (float32), got {np.dtype(x.dtype)} with shape {shape}. "
            f"Integer pixels in [0, 255] should be scaled: {name}.astype(np.float32) / 255."
        )
    if isinstance(x, jax.core.Tracer):
        return x
    if isinstance(x, jax.Array) and bool(jnp.all(jnp.isfinite(x))):  # reduce where the array lives
        return x
    finite = np.isfinite(np.asarray(x))
    if not finite.all():
        bad = int(np.size(finite) - np.count_nonzero(finite))
        first = int(np.argwhere(~finite)[0][0])
        raise JaxddError(
            f"{name} contains {bad} NaN/inf value(s) (first in image {first}) of shape {shape}. "
            f"Check the preprocessing or the step size that produced them."
        )
    return x
