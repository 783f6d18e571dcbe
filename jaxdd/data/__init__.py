"""jaxdd.data: datasets in memory, validation splits, preprocessing pytrees, class-balanced sampling.

    ds = jaxdd.data.load("fashion_mnist")            # Dataset: images (n,h,w,c) float32 in [0,1], labels (n,) int32
    train, val = split_train_val(ds, 100, seed)      # class-stratified, carved from the training split
    pre = fit_preprocess(train.images, ds.mean, ds.std)   # or fit_preprocess(train.images, zca=True)
    x = apply_preprocess(pre, train.images)          # the space models and synthetic sets live in
    idx = class_index(train.labels, train.num_classes)
    rows = sample_per_class(key, idx, 256)           # (K, 256) indices, jittable
    own = from_arrays(x, y, class_names=names)      # own numpy arrays; or register_dataset(name, loader)
"""
from jaxdd.data.checks import check_images
from jaxdd.data.datasets import Dataset, available_datasets, load, read_idx_split
from jaxdd.data.custom import as_dataset, fingerprint, from_arrays, register_dataset
from jaxdd.data.preprocess import (
    Preprocess,
    apply_preprocess,
    fit_preprocess,
    invert_preprocess,
    preprocess_from_arrays,
    preprocess_to_arrays,
)
from jaxdd.data.sampling import (ClassIndex, RealPool, check_ipc, class_index, make_pool, sample_per_class,
                                 sample_real, split_train_val)
from jaxdd.data.tfds_import import import_idx_to_tfds

__all__ = [
    "ClassIndex",
    "Dataset",
    "Preprocess",
    "RealPool",
    "apply_preprocess",
    "as_dataset",
    "available_datasets",
    "check_images",
    "check_ipc",
    "class_index",
    "fingerprint",
    "fit_preprocess",
    "from_arrays",
    "import_idx_to_tfds",
    "invert_preprocess",
    "load",
    "make_pool",
    "preprocess_from_arrays",
    "preprocess_to_arrays",
    "read_idx_split",
    "register_dataset",
    "sample_per_class",
    "sample_real",
    "split_train_val",
]
