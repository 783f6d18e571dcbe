"""Memory budgets shared by all parameterizations (docs/methods.md section 9, "Budget").

A budget is given as ``ipc`` full-pixel images per class: ``ipc * C * H * W`` float32 numbers per class. A
parameterization whose stored image costs ``f`` floats holds ``floor(ipc * C * H * W / f)`` images per class. For the
low-rank plugin one image costs ``C * r * (H + W)`` floats (factors A: (H, r) and B: (r, W) per channel), so

    m = floor(ipc * H * W / (r * (H + W)))          (C cancels exactly)

This is the exact rule the plugin's README states; the official code floors before multiplying by IPC
(``IPC * floor(H*W / (r*(H+W)))``), which stores fewer images at IPC > 1. Only image floats count: labels, learned
learning rates and other extras are not charged (as in the paper). Everything is float32.

    28x28: r=2 -> 7 / 70 / 350 images per class at IPC 1 / 10 / 50; r=4 -> 3 / 35 / 175; r=8 -> 1 / 17 / 87.
"""
from __future__ import annotations

import math

from jaxdd.types import JaxddError


def _check_shape(image_shape) -> tuple[int, int, int]:
    if len(image_shape) != 3 or not all(isinstance(d, int) and d >= 1 for d in image_shape):
        raise JaxddError(f"image_shape must be (h, w, c) positive ints, got {image_shape!r}")
    return tuple(image_shape)


def pixel_floats_per_class(ipc: int, image_shape) -> int:
    """Floats that ``ipc`` full-pixel images of one class take: ipc * h * w * c."""
    return ipc * math.prod(_check_shape(image_shape))


def images_that_fit(ipc: int, image_shape, floats_per_image: int) -> int:
    """Images of ``floats_per_image`` floats each that fit one class's pixel budget of ``ipc`` images (floored)."""
    if not isinstance(ipc, int) or ipc < 1:
        raise JaxddError(f"the budget (images per class) must be a positive int, got {ipc!r}")
    if floats_per_image < 1:
        raise JaxddError(f"floats_per_image must be >= 1, got {floats_per_image}")
    return pixel_floats_per_class(ipc, image_shape) // floats_per_image


def low_rank_floats_per_image(image_shape, rank: int) -> int:
    """Floats one rank-``rank`` image stores: c * rank * (h + w)."""
    h, w, c = _check_shape(image_shape)
    return c * rank * (h + w)


def low_rank_images_per_class(ipc: int, image_shape, rank: int) -> int:
    """m = floor(ipc*h*w / (rank*(h+w))): rank-``rank`` images per class at a budget of ``ipc`` pixel images.

    Raises a JaxddError if not even one image fits (rank too high for the budget)."""
    h, w, c = _check_shape(image_shape)
    if not isinstance(rank, int) or rank < 1:
        raise JaxddError(f"rank must be a positive int, got {rank!r}")
    m = images_that_fit(ipc, image_shape, low_rank_floats_per_image(image_shape, rank))
    if m < 1:
        raise JaxddError(f"a rank-{rank} image of shape {image_shape} costs {c * rank * (h + w)} floats, more than "
                         f"the budget of {ipc} pixel image(s) per class ({ipc * h * w * c} floats): lower --rank or "
                         f"raise --ipc")
    assert m * low_rank_floats_per_image(image_shape, rank) <= pixel_floats_per_class(ipc, image_shape)
    return m


def check_within_budget(floats_stored: int, num_classes: int, ipc: int, image_shape, what: str = "the synthetic set"
                        ) -> None:
    """Raise a JaxddError if ``floats_stored`` exceeds the pixel budget of ``ipc`` images for ``num_classes``."""
    budget = num_classes * pixel_floats_per_class(ipc, image_shape)
    if floats_stored > budget:
        raise JaxddError(f"{what} stores {floats_stored} floats, over the pixel budget of {budget} "
                         f"({num_classes} classes x {ipc} images x {image_shape})")


def budget_report(floats_stored: int, images_per_class: int, num_classes: int, ipc: int, image_shape,
                  full_dataset_images: int) -> dict:
    """The budget numbers artifacts record: images stored, floats stored/budget, compression against the full set."""
    check_within_budget(floats_stored, num_classes, ipc, image_shape)
    full = full_dataset_images * math.prod(image_shape)
    return {"ipc_budget": ipc, "images_per_class": images_per_class, "num_images": images_per_class * num_classes,
            "floats_stored": floats_stored, "floats_budget": num_classes * pixel_floats_per_class(ipc, image_shape),
            "compression_vs_full": full / floats_stored}
