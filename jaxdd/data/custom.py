"""Own data: numpy arrays as a ``Dataset``, and ``register_dataset`` for loaders by name.

    ds = from_arrays(x, y, class_names=("cat", "dog"))    # x (n, h, w[, c]) uint8 or float in [0, 1], y (n,) ints
    register_dataset("pets", lambda split: (x_train, y_train) if split == "train" else (x_test, y_test))
    load("pets", "test")                                 # then a name like any built-in dataset

Wherever jaxdd takes a dataset (``distill_dataset``, ``as_dataset``) it takes a name, a ``Dataset`` or a pair
``(images, labels)``. A dataset given as arrays has no name to find it again by, so runs record its shape, classes
and ``fingerprint`` (sha256 of the arrays) instead, and evaluating such a run needs the test arrays.
"""
from __future__ import annotations

import hashlib
import os
from typing import Any, Callable

import numpy as np

from jaxdd.data import datasets as _datasets
from jaxdd.data.datasets import Dataset, load
from jaxdd.types import JaxddError


def from_arrays(images, labels, *, class_names: tuple[str, ...] | list[str] | None = None,
                num_classes: int | None = None, name: str = "arrays", split: str = "train",
                mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None) -> Dataset:
    """A ``Dataset`` from images (n, h, w) or (n, h, w, c), uint8 (0..255) or float in [0, 1], and int labels (n,).

    The number of classes is ``len(class_names)``, else ``num_classes``, else ``max(labels) + 1``; class names
    default to "0", "1", ... ``mean``/``std`` (per channel, of images in [0, 1]) default to those of these images,
    which is what ``fit_preprocess`` normalises with."""
    x = np.asarray(images)
    y = np.asarray(labels)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[0] == 0:
        raise JaxddError(f"images must be an array (n, h, w) or (n, h, w, c) with n > 0, got shape {x.shape}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.shape != (x.shape[0],):
        raise JaxddError(f"{x.shape[0]} images but labels of shape {y.shape}; give one int class id per image (n,)")
    if not np.issubdtype(y.dtype, np.integer):
        if not (np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y))):
            raise JaxddError(f"labels must be int class ids, got dtype {y.dtype}")
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / np.float32(255.0)
    elif np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float32)
        if not np.all(np.isfinite(x)):
            raise JaxddError("images contain NaN or inf")
        lo, hi = float(x.min()), float(x.max())
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise JaxddError(f"float images must lie in [0, 1] (jaxdd normalises them itself), got values in "
                             f"[{lo:.4g}, {hi:.4g}]; give uint8 images or scale them, e.g. x / 255")
    else:
        raise JaxddError(f"images must be uint8 or float, got dtype {x.dtype}")
    x = np.ascontiguousarray(x, np.float32)
    y = np.ascontiguousarray(y.astype(np.int64), np.int32) if y.dtype != np.int32 else np.ascontiguousarray(y)
    if class_names is not None:
        class_names = tuple(str(c) for c in class_names)
        if num_classes is not None and num_classes != len(class_names):
            raise JaxddError(f"num_classes={num_classes} but {len(class_names)} class_names")
        num_classes = len(class_names)
    if num_classes is None:
        num_classes = int(y.max()) + 1
    if y.min() < 0 or y.max() >= num_classes:
        raise JaxddError(f"labels must lie in [0, {num_classes}), got [{int(y.min())}, {int(y.max())}]")
    if num_classes < 2:
        raise JaxddError(f"a classification dataset needs at least 2 classes, got {num_classes}")
    names = class_names or tuple(str(i) for i in range(num_classes))
    c = x.shape[-1]
    if mean is None:
        mean = tuple(float(v) for v in x.reshape(-1, c).mean(0))
    if std is None:
        std = tuple(float(max(v, 1e-6)) for v in x.reshape(-1, c).std(0))
    if len(mean) != c or len(std) != c:
        raise JaxddError(f"mean and std need one value per channel ({c}), got {mean} and {std}")
    return Dataset(x, y, names, tuple(mean), tuple(std), name, split)


def fingerprint(ds: Dataset) -> str:
    """sha256 (hex) of a dataset's float32 images and int32 labels: identifies data that has no name."""
    h = hashlib.sha256()
    for a in (np.ascontiguousarray(ds.images, np.float32), np.ascontiguousarray(ds.labels, np.int32)):
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def register_dataset(name: str, loader: Callable[[str], Any], *, class_names=None) -> None:
    """Make ``load(name, split)`` call ``loader(split)``, which returns a ``Dataset`` or a pair (images, labels)
    as ``from_arrays`` takes them (``class_names`` apply to pairs). The name then works everywhere a dataset name
    does, including ``evaluate_run`` of runs made from it (in a process that registered it too)."""
    if not isinstance(name, str) or not name or not callable(loader):
        raise JaxddError(f"register_dataset(name, loader) needs a non-empty name and a callable loader(split); "
                         f"got {name!r}, {loader!r}")
    class_names = None if class_names is None else tuple(str(c) for c in class_names)
    _datasets.REGISTERED[name] = lambda split: _load_registered(name, loader, class_names, split)


def _load_registered(name: str, loader: Callable[[str], Any], class_names, split: str) -> Dataset:
    out = loader(split)
    if isinstance(out, Dataset):
        return out._replace(name=name, split=split)
    if isinstance(out, tuple) and len(out) == 2:
        return from_arrays(*out, class_names=class_names, name=name, split=split)
    raise JaxddError(f"the loader registered for dataset {name!r} returned {type(out).__name__} for split {split!r}; "
                     "it must return a jaxdd Dataset or a pair (images, labels)")


def is_array_pair(data: Any) -> bool:
    return isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data, Dataset) and all(
        hasattr(a, "shape") for a in data)


def as_dataset(data: Any, split: str = "train", data_dir: str | os.PathLike | None = None) -> Dataset:
    """A ``Dataset`` from a name (``load(name, split, data_dir)``), a ``Dataset`` (as it is) or (images, labels)."""
    if isinstance(data, str):
        return load(data, split, data_dir)
    if isinstance(data, Dataset):
        return data
    if is_array_pair(data):
        return from_arrays(*data, split=split)
    raise JaxddError(f"a dataset must be a name (one of the built-in or register_dataset names), a jaxdd Dataset or a "
                     f"pair (images, labels) of arrays; got {type(data).__name__}")
