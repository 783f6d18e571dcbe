"""Figures: image grids of synthetic sets and simple curves."""
from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def image_grid(images01: np.ndarray, labels: np.ndarray, pad: int = 1) -> np.ndarray:
    """Tile (n, h, w, c) images in [0, 1] into one array, one row per class: (rows*(h+pad), cols*(w+pad), c)."""
    images01 = np.clip(np.asarray(images01, np.float32), 0.0, 1.0)
    labels = np.asarray(labels)
    classes = np.unique(labels)
    rows = [images01[labels == c] for c in classes]
    cols = max(len(r) for r in rows)
    n, h, w, c = images01.shape
    grid = np.ones((len(rows) * (h + pad) + pad, cols * (w + pad) + pad, c), np.float32)
    for i, r in enumerate(rows):
        for j, img in enumerate(r):
            y0, x0 = pad + i * (h + pad), pad + j * (w + pad)
            grid[y0:y0 + h, x0:x0 + w] = img
    return grid


def save_image_grid(images01: np.ndarray, labels: np.ndarray, path: str | os.PathLike, class_names=None,
                    max_per_class: int = 20) -> None:
    """Save a PNG grid of the (de-normalised) images, one row per class (at most ``max_per_class`` shown)."""
    labels = np.asarray(labels)
    keep = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        keep[np.flatnonzero(labels == c)[:max_per_class]] = True
    grid = image_grid(images01[keep], labels[keep])
    if grid.shape[-1] == 1:
        grid = grid[..., 0]
    h, w = grid.shape[:2]
    scale = max(1.0, 600 / max(h, w))
    fig = plt.figure(figsize=(w * scale / 100, h * scale / 100), dpi=100)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    fig.savefig(path)
    plt.close(fig)


def plot_curves(curves: dict[str, tuple[list, list, list | None]], path: str | os.PathLike, xlabel: str,
                ylabel: str, title: str = "") -> None:
    """curves: name -> (x, y mean, y std or None). Saves a line plot with error bands."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name, (x, y, s) in curves.items():
        ax.plot(x, y, marker="o", label=name)
        if s is not None:
            ax.fill_between(x, np.asarray(y) - np.asarray(s), np.asarray(y) + np.asarray(s), alpha=0.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
