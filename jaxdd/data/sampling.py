"""Class-stratified validation splits, class-balanced sampling that ``jit`` can use, and the ``RealPool`` (the
normalised training split on device with its class index) that distillation samples real batches from."""
from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdd.data.checks import check_images
from jaxdd.data.datasets import Dataset
from jaxdd.types import Batch, JaxddError, PRNGKey


class ClassIndex(NamedTuple):
    """Per-class dataset indices. table: (K, max_n) int32, row k holds the indices of class k in its first
    counts[k] entries and -1 after them; counts: (K,) int32."""

    table: jax.Array
    counts: jax.Array


def class_index(labels, num_classes: int) -> ClassIndex:
    """Builds the ``ClassIndex`` of hard labels (n,) with values in [0, num_classes). Indices keep dataset order."""
    y = np.asarray(labels)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise JaxddError(f"labels must be (n,) integer class ids, got shape {y.shape} dtype {y.dtype}.")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise JaxddError(f"labels must lie in [0, {num_classes}), got min {y.min()} max {y.max()}.")
    counts = np.bincount(y, minlength=num_classes).astype(np.int32)
    table = np.full((num_classes, max(int(counts.max(initial=0)), 1)), -1, np.int32)
    order = np.argsort(y, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    for k in range(num_classes):
        table[k, : counts[k]] = order[starts[k] : starts[k] + counts[k]]
    return ClassIndex(jnp.asarray(table), jnp.asarray(counts))


@partial(jax.jit, static_argnums=2)
def sample_per_class(key: PRNGKey, index: ClassIndex, n: int) -> jax.Array:
    """Draws ``n`` dataset indices per class: (K, n) int32, row k all of class k.

    Without replacement within a class when n <= counts[k]; for n > counts[k] the class's random order is cycled
    (each image drawn ceil(n / counts[k]) times at most). An empty class yields -1 (guard with ``check_ipc``).
    Jitted with ``n`` static; the same key gives the same indices.
    """
    k, max_n = index.table.shape
    u = jax.random.uniform(key, (k, max_n))
    valid = jnp.arange(max_n)[None, :] < index.counts[:, None]
    order = jnp.argsort(jnp.where(valid, u, jnp.inf), axis=1)
    pos = jnp.arange(n)[None, :] % jnp.maximum(index.counts, 1)[:, None]
    cols = jnp.take_along_axis(order, pos, axis=1)
    return jnp.take_along_axis(index.table, cols, axis=1)


def check_ipc(index_or_labels, ipc: int) -> None:
    """Raises ``JaxddError`` unless 1 <= ipc <= the smallest class count (the message names that class)."""
    if not isinstance(ipc, (int, np.integer)) or isinstance(ipc, bool) or ipc < 1:
        raise JaxddError(f"ipc (images per class) must be a positive int, got {ipc!r}.")
    if isinstance(index_or_labels, ClassIndex):
        counts = np.asarray(index_or_labels.counts)
    else:
        y = np.asarray(index_or_labels)
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or (y.size and y.min() < 0):
            raise JaxddError(f"check_ipc needs a ClassIndex or (n,) labels >= 0, got shape {y.shape} {y.dtype}.")
        counts = np.bincount(y)
    if counts.size == 0:
        raise JaxddError("check_ipc: the dataset is empty.")
    smallest = int(np.argmin(counts))
    if ipc > counts[smallest]:
        raise JaxddError(
            f"ipc={ipc} exceeds the smallest class: class {smallest} has only {int(counts[smallest])} images. "
            f"Use ipc <= {int(counts[smallest])} or a larger dataset."
        )


def _numpy_rng(key_or_seed) -> np.random.Generator:
    if isinstance(key_or_seed, (int, np.integer)) and not isinstance(key_or_seed, bool):
        return np.random.default_rng(int(key_or_seed))
    arr = key_or_seed
    if hasattr(arr, "dtype") and jnp.issubdtype(arr.dtype, jax.dtypes.prng_key):
        arr = jax.random.key_data(arr)
    try:
        words = np.asarray(arr).astype(np.uint32).ravel().tolist()
    except Exception as e:  # pragma: no cover
        raise JaxddError(f"key_or_seed must be an int seed or a jax.random key, got {type(key_or_seed)}.") from e
    return np.random.default_rng(words)


def split_train_val(ds: Dataset, val_per_class: int, key_or_seed) -> tuple[Dataset, Dataset]:
    """Carves a class-stratified validation set of ``val_per_class`` images per class from a TRAINING ``Dataset``.

    Deterministic in ``key_or_seed`` (an int seed or a jax.random key). Both parts keep dataset order. The test split
    is never touched: use it only for final reporting, never for selection.

    Returns:
      (train, val): ``val.split == "val"``; ``train.split`` keeps the input's split name.
    """
    if ds.split not in ("train",):
        raise JaxddError(
            f"split_train_val carves the validation set from the training split, got split {ds.split!r}; "
            f"the test set must never be used for selection."
        )
    if not isinstance(val_per_class, (int, np.integer)) or val_per_class < 0:
        raise JaxddError(f"val_per_class must be an int >= 0, got {val_per_class!r}.")
    y = np.asarray(ds.labels)
    counts = np.bincount(y, minlength=ds.num_classes)
    short = np.flatnonzero(counts <= val_per_class)
    if short.size:
        c = int(short[0])
        raise JaxddError(
            f"val_per_class={val_per_class} leaves no training images in class {c} ({int(counts[c])} images); "
            f"use val_per_class < {int(counts.min())}."
        )
    rng = _numpy_rng(key_or_seed)
    is_val = np.zeros(y.shape, bool)
    for c in range(ds.num_classes):
        idx = np.flatnonzero(y == c)
        is_val[rng.permutation(idx)[:val_per_class]] = True
    train = ds._replace(images=ds.images[~is_val], labels=ds.labels[~is_val])
    val = ds._replace(images=ds.images[is_val], labels=ds.labels[is_val], split="val")
    return train, val


class RealPool(NamedTuple):
    """The real training data the objective samples from, on device: images (N,h,w,c) normalised, labels (N,)."""

    images: jax.Array
    labels: jax.Array
    index: ClassIndex

    @property
    def num_classes(self) -> int:
        return self.index.table.shape[0]


def make_pool(images, labels, num_classes: int) -> RealPool:
    images = check_images(images, "real training images")
    labels = np.asarray(labels, np.int32)
    if labels.shape != (images.shape[0],):
        raise JaxddError(f"{images.shape[0]} real images but labels of shape {labels.shape}; give one int label each")
    return RealPool(jnp.asarray(images, jnp.float32), jnp.asarray(labels), class_index(labels, num_classes))


def sample_real(pool: RealPool, key: PRNGKey, per_class: int) -> Batch:
    """A class-major real batch of ``per_class`` images of every class: (K*per_class, h, w, c)."""
    idx = sample_per_class(key, pool.index, per_class).reshape(-1)
    return Batch(pool.images[idx], pool.labels[idx])
