"""In-memory image classification datasets: ``load(name, split, data_dir)`` -> ``Dataset``.

Sources, tried in this order (the first that works wins):

1. TensorFlow Datasets, read with ``tfds.data_source(name, split=..., data_dir=..., download=False)``: random access to
   ArrayRecord files of an already prepared ``data_dir`` (the ``data_dir`` argument, else ``$TFDS_DATA_DIR``, else
   TFDS's default ``~/tensorflow_datasets``). Nothing is downloaded. Records are fetched in batches
   (``__getitems__``) and images decoded with PIL.
   TensorFlow is deliberately NOT a dependency of jaxdd: it weighs 0.5-1 GB and ``tfds.data_source`` reads prepared
   ArrayRecord datasets without it. Preparing a dataset (``tfds build``) does need TensorFlow for most TFDS builders;
   do that once on any machine and copy the ``data_dir`` over, or use ``import_idx_to_tfds`` for MNIST-format files.
2. Local raw MNIST-format IDX files (``mnist``, ``fashion_mnist``): ``train-images-idx3-ubyte``,
   ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each optionally ``.gz``.
   Directories searched: the ``data_dir`` argument itself and ``<data_dir>/<name>/``; ``$JAXDD_DATA_DIR/<name>/``
   (only the per-dataset subfolder, so that one variable can serve several datasets); and for ``fashion_mnist`` the
   Debian package path ``/usr/share/datasets/fashion-mnist`` (``apt-get install dataset-fashion-mnist``).
3. ``digits`` (scikit-learn's 8x8 handwritten digits) ships inside scikit-learn and always loads.

If nothing works, ONE ``JaxddError`` names the dataset, every location tried with the reason it failed, and how to get
the data.

Optional cache: if ``$JAXDD_CACHE_DIR`` is set, arrays decoded from TFDS (slow: one PNG decode per image) are saved
there as ``<name>-<split>-<hash>.npz`` and reused. Nothing is ever cached unless that variable is set.
"""
from __future__ import annotations

import gzip
import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

from jaxdd.types import JaxddError

DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
_TFDS_BATCH = 2048


class Dataset(NamedTuple):
    """A labelled image dataset held in host memory.

    Attributes:
      images: (n, h, w, c) float32 in [0, 1] (NOT normalised; see ``fit_preprocess``).
      labels: (n,) int32 class ids in [0, num_classes).
      class_names: one name per class.
      mean, std: per-channel conventional normalisation constants of this dataset (docs/methods.md 1.1).
      name: the registry name, e.g. "fashion_mnist".
      split: "train", "test", ... (or "val" for a split carved by ``split_train_val``).
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str
    split: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_examples(self) -> int:
        """n (``len(ds)`` is the NamedTuple's field count, not n)."""
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.images.shape[1:])  # type: ignore[return-value]


class _Spec(NamedTuple):
    tfds_name: str | None
    image_shape: tuple[int, int, int]
    num_classes: int
    class_names: tuple[str, ...] | None  # None: take them from TFDS metadata
    mean: tuple[float, ...]
    std: tuple[float, ...]
    splits: tuple[str, ...]
    idx: bool  # loadable from MNIST-format IDX files
    system_dirs: tuple[str, ...] = ()


_DIGITS10 = tuple(str(i) for i in range(10))
_FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# Normalisation constants: docs/methods.md 1.1 (the DatasetCondensation code's constants). cifar100 uses the current DC
# code's constants (MTT used the CIFAR-10 ones; pass those explicitly to fit_preprocess for MTT parity).
# digits is not in that table: its constants are the per-channel mean and (population) std of all pixels of the
# digits train split defined below (1438 images, values/16), computed once with
# `x = load("digits").images; x.mean(), x.std()` and hard-coded here.
_SPECS: dict[str, _Spec] = {
    "digits": _Spec(None, (8, 8, 1), 10, _DIGITS10, (0.3055,), (0.3761,), ("train", "test"), False),
    "mnist": _Spec("mnist", (28, 28, 1), 10, _DIGITS10, (0.1307,), (0.3081,), ("train", "test"), True),
    "fashion_mnist": _Spec(
        "fashion_mnist", (28, 28, 1), 10, _FASHION, (0.2861,), (0.3530,), ("train", "test"), True,
        (DEBIAN_FASHION_MNIST,),
    ),
    "cifar10": _Spec(
        "cifar10", (32, 32, 3), 10, _CIFAR10, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010), ("train", "test"),
        False,
    ),
    "cifar100": _Spec(
        "cifar100", (32, 32, 3), 100, None, (0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762), ("train", "test"),
        False,
    ),
    "svhn_cropped": _Spec(
        "svhn_cropped", (32, 32, 3), 10, _DIGITS10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970),
        ("train", "test", "extra"), False,
    ),
}

_HOW_TO = {
    "fashion_mnist": "`sudo apt-get install dataset-fashion-mnist` (files land in /usr/share/datasets/fashion-mnist)",
}


# Datasets added with ``jaxdd.data.custom.register_dataset``: name -> load(split) -> Dataset.
REGISTERED: dict[str, Callable[[str], "Dataset"]] = {}


def available_datasets() -> tuple[str, ...]:
    """The names ``load`` accepts (built-in, then those added with ``register_dataset``)."""
    return tuple(_SPECS) + tuple(n for n in REGISTERED if n not in _SPECS)


# ----------------------------------------------------------------------------------------------------- digits


def _load_digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits (1797 images), values/16 in [0, 1].

    Split (fixed, deterministic, stratified): for each class c = 0..9 in order, a permutation of that class's indices
    is drawn from one ``np.random.default_rng(0)``; the first ``round(0.2 * n_c)`` go to "test", the rest to "train".
    Both splits keep the original sklearn order. This gives 1438 train / 359 test images.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.asarray(bunch.images, dtype=np.float32) / 16.0
    y = np.asarray(bunch.target, dtype=np.int32)
    rng = np.random.default_rng(0)
    test = []
    for c in range(10):
        idx = np.flatnonzero(y == c)
        perm = rng.permutation(idx)
        test.append(perm[: int(round(0.2 * idx.size))])
    is_test = np.zeros(y.shape, bool)
    is_test[np.concatenate(test)] = True
    keep = is_test if split == "test" else ~is_test
    return x[keep][..., None], y[keep]


# --------------------------------------------------------------------------------------------------- IDX files

_IDX_STEMS = {"train": "train", "test": "t10k"}


def _open_maybe_gz(path: Path) -> bytes:
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        return gzip.decompress(raw)
    return raw


def _parse_idx(raw: bytes, path: Path) -> np.ndarray:
    """Parses an IDX file (big-endian header: 0, 0, dtype code, ndim, then ndim uint32 sizes)."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise JaxddError(f"{path} is not an IDX file (bad magic number {raw[:4]!r}).")
    codes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if raw[2] not in codes:
        raise JaxddError(f"{path}: unknown IDX dtype code {raw[2]:#x}.")
    ndim = raw[3]
    shape = tuple(int(s) for s in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    data = np.frombuffer(raw, codes[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise JaxddError(f"{path}: header says shape {shape} but the file holds {data.size} values (truncated?).")
    return data.reshape(shape)


def _find_idx_file(directory: Path, stem: str) -> Path | None:
    for cand in (directory / stem, directory / (stem + ".gz")):
        if cand.is_file():
            return cand
    return None


def find_idx_files(directory: str | os.PathLike, split: str) -> tuple[Path, Path] | None:
    """(images, labels) IDX paths for ``split`` in ``directory``, or None if either is missing."""
    stem = _IDX_STEMS.get(split)
    if stem is None:
        return None
    d = Path(directory)
    img = _find_idx_file(d, f"{stem}-images-idx3-ubyte")
    lab = _find_idx_file(d, f"{stem}-labels-idx1-ubyte")
    if img is None or lab is None:
        return None
    return img, lab


def read_idx_split(directory: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Reads one split of an MNIST-format IDX directory: images (n, h, w, 1) uint8 and labels (n,) int32."""
    files = find_idx_files(directory, split)
    if files is None:
        raise JaxddError(f"No {split} IDX files in {directory}.")
    img_path, lab_path = files
    images = _parse_idx(_open_maybe_gz(img_path), img_path)
    labels = _parse_idx(_open_maybe_gz(lab_path), lab_path)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise JaxddError(
            f"IDX files {img_path} {images.shape} and {lab_path} {labels.shape} do not form an image dataset "
            f"(expected (n, h, w) images and (n,) labels)."
        )
    return images.astype(np.uint8)[..., None], labels.astype(np.int32)


def _idx_dirs(name: str, spec: _Spec, data_dir: str | os.PathLike | None) -> list[Path]:
    dirs: list[Path] = []
    if data_dir is not None:
        dirs += [Path(data_dir), Path(data_dir) / name]
    env = os.environ.get("JAXDD_DATA_DIR")
    if env:
        dirs.append(Path(env) / name)
    dirs += [Path(d) for d in spec.system_dirs]
    return dirs


# -------------------------------------------------------------------------------------------------------- TFDS


def _tfds_data_dir(data_dir: str | os.PathLike | None) -> str:
    if data_dir is not None:
        return os.fspath(data_dir)
    env = os.environ.get("TFDS_DATA_DIR")
    if env:
        return env
    try:
        from tensorflow_datasets.core import constants

        return os.fspath(constants.DATA_DIR)
    except Exception:  # pragma: no cover
        return os.path.expanduser("~/tensorflow_datasets")


def _prepared_versions(data_dir: str, tfds_name: str) -> list[str]:
    root = Path(data_dir) / tfds_name
    if not root.is_dir():
        return []
    return sorted(str(p.parent) for p in root.glob("**/dataset_info.json"))


def _read_chunks(source: Any):
    """Yields the records of a TFDS data source in chunks of ``_TFDS_BATCH``, each fetched by one batched read.

    Real ArrayRecord sources read many records per ``__getitems__`` call. ``tfds.testing.mock_data`` (tfds 4.9.10)
    installs an unbound ``__getitems__`` on its mock that raises TypeError; then records are read one by one.
    """
    n = len(source)
    batched = hasattr(source, "__getitems__")
    for start in range(0, n, _TFDS_BATCH):
        keys = list(range(start, min(n, start + _TFDS_BATCH)))
        if batched:
            try:
                yield list(source.__getitems__(keys))
                continue
            except TypeError:
                if start:
                    raise
                batched = False
        yield [source[k] for k in keys]


class _NoDatasetInfoFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "has no dataset_info.json" not in record.getMessage()


def _cache_path(name: str, split: str, data_dir: str) -> Path | None:
    cache = os.environ.get("JAXDD_CACHE_DIR")
    if not cache:
        return None
    stamp = []
    for d in _prepared_versions(data_dir, name):
        info = Path(d) / "dataset_info.json"
        stamp.append(f"{info}:{info.stat().st_mtime_ns}")
    digest = hashlib.sha1("|".join([os.path.abspath(data_dir), *stamp]).encode()).hexdigest()[:12]
    return Path(cache).expanduser() / f"{name}-{split}-{digest}.npz"


def _load_tfds(spec: _Spec, split: str, data_dir: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...] | None]:
    """Reads a prepared TFDS dataset without TensorFlow. Raises on any failure (the caller records why)."""
    import tensorflow_datasets as tfds  # lazy: ~0.5 s import

    assert spec.tfds_name is not None
    cache = _cache_path(spec.tfds_name, split, data_dir)
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            names = tuple(str(s) for s in z["class_names"]) or None
            return z["images"], z["labels"], names
    quiet = _NoDatasetInfoFilter()
    absl_logger = logging.getLogger("absl")
    absl_logger.addFilter(quiet)  # TFDS warns for every unprepared dir it looks at; our error says it better
    try:
        source = tfds.data_source(spec.tfds_name, split=split, data_dir=data_dir, download=False)
    finally:
        absl_logger.removeFilter(quiet)
    label_feature = source.dataset_info.features["label"]
    names = tuple(label_feature.names) if getattr(label_feature, "names", None) else None
    image_chunks, label_chunks = [], []
    for records in _read_chunks(source):  # decoded records are dropped chunk by chunk
        image_chunks.append(np.stack([np.asarray(r["image"], dtype=np.uint8) for r in records]))
        label_chunks.append(np.asarray([int(r["label"]) for r in records], dtype=np.int32))
    if not image_chunks:
        raise RuntimeError("the split is empty")
    images, labels = np.concatenate(image_chunks), np.concatenate(label_chunks)
    if images.ndim == 3:
        images = images[..., None]
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, images=images, labels=labels, class_names=np.asarray(names or (), dtype=str))
        os.replace(tmp, cache)
    return images, labels, names


# -------------------------------------------------------------------------------------------------------- load


def _to_dataset(
    name: str, spec: _Spec, split: str, images: np.ndarray, labels: np.ndarray, names: tuple[str, ...] | None
) -> Dataset:
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / np.float32(255.0)
    images = np.ascontiguousarray(images, dtype=np.float32)
    labels = np.ascontiguousarray(labels, dtype=np.int32)
    if tuple(images.shape[1:]) != spec.image_shape:
        raise JaxddError(
            f"{name}/{split}: images have shape {tuple(images.shape[1:])}, expected {spec.image_shape}; "
            f"the source holds a different dataset."
        )
    class_names = spec.class_names or names or tuple(str(i) for i in range(spec.num_classes))
    if len(class_names) != spec.num_classes:
        class_names = tuple(str(i) for i in range(spec.num_classes))
    if labels.size and (labels.min() < 0 or labels.max() >= spec.num_classes):
        raise JaxddError(f"{name}/{split}: labels outside [0, {spec.num_classes}); the source is corrupt.")
    return Dataset(images, labels, tuple(class_names), spec.mean, spec.std, name, split)


def load(name: str, split: str = "train", data_dir: str | os.PathLike | None = None) -> Dataset:
    """Loads a whole split into memory as float32 images in [0, 1] (NHWC) and int32 labels.

    Args:
      name: one of ``available_datasets()``: digits, mnist, fashion_mnist, cifar10, cifar100, svhn_cropped.
      split: "train" or "test" ("extra" too for svhn_cropped).
      data_dir: a prepared TFDS data_dir, or a directory with MNIST-format IDX files (directly or in ``<name>/``).

    Returns:
      A ``Dataset`` with the dataset's conventional normalisation constants in ``mean``/``std``.

    Raises:
      JaxddError: unknown name, bad split, or the data was found nowhere (the message lists every location tried).
    """
    if name in REGISTERED:
        return REGISTERED[name](split)
    spec = _SPECS.get(name)
    if spec is None:
        raise JaxddError(f"Unknown dataset {name!r}. Known datasets: {', '.join(sorted(available_datasets()))}. "
                         "For your own data pass arrays (images, labels) or a Dataset, or register a loader with "
                         "jaxdd.register_dataset(name, loader).")
    if split not in spec.splits:
        raise JaxddError(
            f"Unknown split {split!r} for dataset {name!r}: use one of {', '.join(spec.splits)} "
            f"(a validation split is carved from 'train' with split_train_val)."
        )
    if name == "digits":
        x, y = _load_digits(split)
        return _to_dataset(name, spec, split, x, y, None)

    tried: list[str] = []
    if spec.tfds_name is not None:
        tdir = _tfds_data_dir(data_dir)
        where = f"TFDS data_dir {tdir}"
        try:
            x, y, names = _load_tfds(spec, split, tdir)
            return _to_dataset(name, spec, split, x, y, names)
        except ImportError as e:
            tried.append(f"{where}: tensorflow_datasets is not importable ({e})")
        except JaxddError:
            raise
        except Exception as e:  # TFDS raises many types for "not prepared"
            if not _prepared_versions(tdir, spec.tfds_name):
                reason = f"not prepared (no {Path(tdir) / spec.tfds_name}/<version>/dataset_info.json)"
            else:
                reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            tried.append(f"{where}: {reason}")
    if spec.idx:
        for d in _idx_dirs(name, spec, data_dir):
            if find_idx_files(d, split) is None:
                why = "no such directory" if not d.is_dir() else "no IDX files for this split"
                tried.append(f"IDX directory {d}: {why}")
                continue
            x, y = read_idx_split(d, split)
            return _to_dataset(name, spec, split, x, y, None)
        if not os.environ.get("JAXDD_DATA_DIR"):
            tried.append("$JAXDD_DATA_DIR/<name>/: JAXDD_DATA_DIR is not set")

    how = [
        f"`tfds build {spec.tfds_name} --file_format=array_record` on a machine with TensorFlow and internet, then "
        f"pass its data_dir (or set TFDS_DATA_DIR)",
    ]
    if spec.idx:
        how.append(
            "put the MNIST-format IDX files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
            f"t10k-...) in a directory and pass data_dir=..., or in $JAXDD_DATA_DIR/{name}/"
        )
    if name in _HOW_TO:
        how.insert(0, _HOW_TO[name])
    raise JaxddError(
        f"Dataset {name!r} (split {split!r}) was not found. Tried:\n"
        + "\n".join(f"  - {t}" for t in tried)
        + "\nTo get it:\n"
        + "\n".join(f"  - {h}" for h in how)
        + "\n(`digits` always loads offline.)"
    )
