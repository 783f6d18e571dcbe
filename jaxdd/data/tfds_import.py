"""Import MNIST-format IDX files (e.g. Debian's dataset-fashion-mnist) into a TFDS ``data_dir``, without TensorFlow.

After ``import_idx_to_tfds("/usr/share/datasets/fashion-mnist", "~/tensorflow_datasets")``,
``tfds.data_source("fashion_mnist", data_dir=...)`` and ``jaxdd.data.load("fashion_mnist", data_dir=...)`` read the
same images and labels as the IDX files.

How: a small ``GeneratorBasedBuilder`` under the dataset's TFDS name and version (so TFDS's registered builder finds the
files) writes ArrayRecord shards plus ``dataset_info.json``. TFDS encodes images with ``tf.image.encode_png``, which
needs TensorFlow, so images are handed over already PNG-encoded by PIL. Examples are keyed by their index in the IDX
file, as TFDS's own mnist/fashion_mnist builders do, so TFDS's key-hash shuffle puts them in the same order as a
``tfds build``; that order differs from the IDX file order, so compare the two sources as sets, not row by row.
Importing the 70,000 Fashion-MNIST images takes about 30 s (PNG encoding is per image); reading them back through
TFDS takes ~15-20 s (per-record decoding), so set ``$JAXDD_CACHE_DIR`` to make repeated loads fast.
"""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

from jaxdd.data.datasets import _SPECS, find_idx_files, read_idx_split
from jaxdd.types import JaxddError


def import_idx_to_tfds(
    idx_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    name: str = "fashion_mnist",
    max_examples: int | None = None,
) -> Path:
    """Writes the train/test IDX files of ``idx_dir`` as the prepared TFDS dataset ``name`` under ``data_dir``.

    Args:
      idx_dir: directory holding train-/t10k- images/labels IDX files (optionally gzipped).
      data_dir: the TFDS data_dir to write into (created if needed).
      name: "fashion_mnist" or "mnist" (the TFDS name the data will be served under).
      max_examples: if set, only the first ``max_examples`` of each split are written (for quick tests).

    Returns:
      The dataset directory ``<data_dir>/<name>/<version>``.
    """
    spec = _SPECS.get(name)
    if spec is None or not spec.idx:
        known = sorted(k for k, s in _SPECS.items() if s.idx)
        raise JaxddError(f"import_idx_to_tfds imports MNIST-format datasets only ({', '.join(known)}), got {name!r}.")
    for split in ("train", "test"):
        if find_idx_files(idx_dir, split) is None:
            raise JaxddError(
                f"import_idx_to_tfds: no {split} IDX files in {idx_dir} (expected "
                f"{'train' if split == 'train' else 't10k'}-images-idx3-ubyte[.gz] and ...-labels-idx1-ubyte[.gz])."
            )
    try:
        import PIL.Image
        import tensorflow_datasets as tfds
    except ImportError as e:  # pragma: no cover
        raise JaxddError(f"import_idx_to_tfds needs tensorflow-datasets and pillow: {e}") from e

    version = str(tfds.builder_cls(spec.tfds_name).VERSION)
    h, w, c = spec.image_shape
    names = list(spec.class_names) if spec.class_names else None
    source = os.fspath(idx_dir)

    def _examples(split):
        images, labels = read_idx_split(source, split)
        if images.shape[1:] != (h, w, c):
            raise JaxddError(f"{source}: {split} images have shape {images.shape[1:]}, expected {(h, w, c)} for {name}.")
        n = len(labels) if max_examples is None else min(len(labels), int(max_examples))
        for i in range(n):
            buf = io.BytesIO()
            PIL.Image.fromarray(images[i, :, :, 0]).save(buf, format="png")
            yield i, {"image": buf.getvalue(), "label": int(labels[i])}

    class _IdxBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        name = spec.tfds_name
        VERSION = tfds.core.Version(version)

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                description=f"{name} imported by jaxdd from MNIST-format IDX files in {source}.",
                features=tfds.features.FeaturesDict(
                    {
                        "image": tfds.features.Image(shape=(h, w, c)),
                        "label": tfds.features.ClassLabel(names=names)
                        if names
                        else tfds.features.ClassLabel(num_classes=spec.num_classes),
                    }
                ),
                supervised_keys=("image", "label"),
            )

        def _split_generators(self, dl_manager):
            del dl_manager
            return {"train": self._generate_examples("train"), "test": self._generate_examples("test")}

        def _generate_examples(self, split):
            return _examples(split)

    out = Path(data_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    builder = _IdxBuilder(data_dir=os.fspath(out), file_format="array_record")
    with tempfile.TemporaryDirectory(prefix="jaxdd-import-") as tmp:  # keeps an empty downloads/ out of data_dir
        builder.download_and_prepare(
            download_dir=tmp, download_config=tfds.download.DownloadConfig(try_download_gcs=False)
        )
    return Path(builder.data_dir)
