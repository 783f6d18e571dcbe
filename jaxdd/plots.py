"""Figures: image grids of synthetic sets and simple curves.

No global state is touched: importing this module imports nothing from matplotlib, and figures are built as
``matplotlib.figure.Figure`` objects with an Agg canvas, never through ``pyplot``, so saving an artifact in a notebook
leaves the notebook's backend and its open figures alone. ``show_synthetic`` returns its figure: a notebook displays
it as the cell's value (or call ``fig.savefig(path)``).
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np


def _figure(figsize: tuple[float, float], dpi: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


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


def _grid_figure(images01, labels, class_names=None, max_per_class: int = 20, title: str | None = None,
                 min_size: int = 600):
    """The figure of a grid, one row per class, each row labelled with its class name (or id)."""
    images01 = np.asarray(images01, np.float32)
    labels = np.asarray(labels)
    if labels.ndim == 2:  # soft labels: their argmax
        labels = labels.argmax(-1)
    if images01.ndim == 3:
        images01 = images01[..., None]
    if images01.ndim != 4 or labels.shape != (images01.shape[0],) or images01.shape[0] == 0:
        from jaxdd.types import JaxddError

        raise JaxddError(f"expected images (n, h, w, c) and labels (n,) or (n, K) with n > 0, got {images01.shape} "
                         f"and {labels.shape}")
    keep = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        keep[np.flatnonzero(labels == c)[:max_per_class]] = True
    images01, labels = images01[keep], labels[keep]
    pad = 1
    grid = image_grid(images01, labels, pad)
    if grid.shape[-1] == 1:
        grid = grid[..., 0]
    classes = np.unique(labels)
    h = images01.shape[1]
    names = [str(class_names[int(c)]) if class_names is not None and int(c) < len(class_names) else str(int(c))
             for c in classes]
    gh, gw = grid.shape[:2]
    scale = max(1.0, min_size / max(gh, gw))
    label_w = 0.1 * max(len(s) for s in names) + 0.25  # inches for the row labels
    width = max(gw * scale / 100 + label_w, 0.08 * len(title) + 0.4 if title else 0.0)  # the title fits too
    fig = _figure((width, gh * scale / 100 + (0.4 if title else 0.1)), 100)
    ax = fig.add_axes([label_w / fig.get_figwidth(), 0.02, 1 - label_w / fig.get_figwidth() - 0.01,
                       0.96 - (0.4 / fig.get_figheight() if title else 0)])
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest",
              aspect="equal")
    ax.set_xticks([])
    ax.set_yticks([pad + i * (h + pad) + h / 2 - 0.5 for i in range(len(classes))], names)
    ax.tick_params(axis="y", length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 0.08 / fig.get_figheight(), va="top")
    return fig


def show_synthetic(images: Any, labels: Any = None, class_names=None, preprocess=None, *, max_per_class: int = 10,
                   title: str | None = None):
    """A ``matplotlib.figure.Figure`` of a synthetic set, one row per class labelled with its class name.

    images: (n, h, w, c) images, with ``preprocess`` the normalised images a run produces (they are de-normalised
    with it), without it images in [0, 1]; labels (n,) or soft (n, K). Or pass a loaded ``Artifact``
    (``jaxdd.load_artifact(run_dir)``) or the dict ``distill_dataset`` returns as ``images`` alone: its images, labels, preprocessing and
    class names are used. At most ``max_per_class`` images of a class are shown. Nothing is drawn through pyplot:
    display the returned figure (a notebook shows it as a cell's value) or ``fig.savefig("grid.png")``.
    """
    from jaxdd.types import JaxddError

    if isinstance(images, (str, os.PathLike)):
        raise JaxddError(f"show_synthetic takes images, an Artifact or distill_dataset's result; for a run directory "
                         f"pass jaxdd.load_artifact({str(images)!r})")
    if hasattr(images, "metadata") and hasattr(images, "preprocess"):  # an Artifact
        art = images
        images, labels = art.images, art.labels if labels is None else labels
        preprocess = art.preprocess if preprocess is None else preprocess
        class_names = class_names or art.metadata.get("class_names")
    elif isinstance(images, dict):
        out = images
        if "images" not in out or "labels" not in out:
            raise JaxddError("show_synthetic(dict) takes the dict distill_dataset returns (images, labels, ...)")
        images, labels = out["images"], out["labels"] if labels is None else labels
        preprocess = out.get("preprocess") if preprocess is None else preprocess
        class_names = class_names or out.get("class_names")
    if labels is None:
        raise JaxddError("show_synthetic needs labels with images (or an Artifact or the dict "
                         "distill_dataset returns)")
    images = np.asarray(images, np.float32)
    if preprocess is not None:
        from jaxdd.data import invert_preprocess

        images = np.asarray(invert_preprocess(preprocess, images))
    return _grid_figure(images, labels, class_names, max_per_class, title, min_size=400)


def save_image_grid(images01: np.ndarray, labels: np.ndarray, path: str | os.PathLike, class_names=None,
                    max_per_class: int = 20) -> None:
    """Save a PNG grid of the (de-normalised) images, one row per class named by ``class_names`` (at most
    ``max_per_class`` shown)."""
    fig = _grid_figure(images01, labels, class_names, max_per_class)
    fig.savefig(path)


def plot_curves(curves: dict[str, tuple[list, list, list | None]], path: str | os.PathLike, xlabel: str,
                ylabel: str, title: str = "") -> None:
    """curves: name -> (x, y mean, y std or None). Saves a line plot with error bands."""
    fig = _figure((6, 4), 120)
    ax = fig.add_subplot()
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
