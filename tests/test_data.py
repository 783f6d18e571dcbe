"""Tests of jaxdd.data: loading (digits, IDX, Debian Fashion-MNIST, TFDS via mock_data and a real imported data_dir),
validation splits, preprocessing pytrees, class-balanced sampling and input checks."""
from __future__ import annotations

import gzip
import os
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxdd.data import (
    ClassIndex,
    Dataset,
    apply_preprocess,
    available_datasets,
    check_images,
    check_ipc,
    class_index,
    fit_preprocess,
    import_idx_to_tfds,
    invert_preprocess,
    load,
    preprocess_from_arrays,
    preprocess_to_arrays,
    sample_per_class,
    split_train_val,
)
from jaxdd.types import JaxddError

DEBIAN_FMNIST = "/usr/share/datasets/fashion-mnist"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch):
    """Environment variables of the developer's shell must not change which source a test reads."""
    for var in ("JAXDD_DATA_DIR", "TFDS_DATA_DIR", "JAXDD_CACHE_DIR"):
        monkeypatch.delenv(var, raising=False)


def _write_idx(path, array, gz=True):
    codes = {np.dtype(np.uint8): 0x08}
    header = struct.pack(">BBBB", 0, 0, codes[array.dtype], array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(">u1").tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(raw)
    else:
        with open(path, "wb") as f:
            f.write(raw)


def _make_idx_dir(directory, n_train=40, n_test=20, seed=0, gz=True):
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, stem, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        _write_idx(directory / f"{stem}-images-idx3-ubyte", x, gz)
        _write_idx(directory / f"{stem}-labels-idx1-ubyte", y, gz)
        out[split] = (x, y)
    return out


def _as_sorted_rows(ds: Dataset):
    flat = np.concatenate([ds.images.reshape(len(ds.labels), -1), ds.labels[:, None].astype(np.float32)], axis=1)
    return flat[np.lexsort(flat.T[::-1])]


# ------------------------------------------------------------------------------------------------------ loading


def test_digits_shapes_range_and_constants():
    tr, te = load("digits", "train"), load("digits", "test")
    assert isinstance(tr, Dataset) and tr.name == "digits" and tr.split == "train" and te.split == "test"
    assert tr.images.shape == (1438, 8, 8, 1) and te.images.shape == (359, 8, 8, 1)
    assert tr.images.dtype == np.float32 and tr.labels.dtype == np.int32
    assert tr.images.min() >= 0.0 and tr.images.max() <= 1.0 and tr.images.max() == 1.0
    assert tr.num_classes == 10 and tr.image_shape == (8, 8, 1) and len(tr.class_names) == 10
    assert tr.num_examples == 1438
    counts = np.bincount(tr.labels, minlength=10)
    assert counts.min() >= 130 and counts.max() <= 150
    # The hard-coded constants are the train split's statistics (see the comment in datasets.py).
    np.testing.assert_allclose(tr.mean, [tr.images.mean()], atol=1e-3)
    np.testing.assert_allclose(tr.std, [tr.images.std()], atol=1e-3)


def test_digits_split_is_deterministic_and_disjoint():
    a, b = load("digits"), load("digits")
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    te = load("digits", "test")
    rows_tr = {r.tobytes() for r in a.images.reshape(len(a.labels), -1)}
    rows_te = [r.tobytes() for r in te.images.reshape(len(te.labels), -1)]
    # sklearn digits has a few exact duplicate images; the split is by index, so overlap must stay tiny.
    assert sum(r in rows_tr for r in rows_te) < 5


def test_unknown_name_lists_known_names():
    with pytest.raises(JaxddError) as e:
        load("imagenet-9000")
    for known in ("digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "svhn_cropped"):
        assert known in str(e.value)
        assert known in available_datasets()


def test_bad_split():
    with pytest.raises(JaxddError, match="split 'validation'.*train, test"):
        load("digits", "validation")
    with pytest.raises(JaxddError, match="Unknown split"):
        load("mnist", "extra")


def test_missing_dataset_names_every_location(tmp_path, monkeypatch):
    env_dir = tmp_path / "env"
    env_dir.mkdir()
    monkeypatch.setenv("JAXDD_DATA_DIR", str(env_dir))
    user_dir = tmp_path / "user"
    with pytest.raises(JaxddError) as e:
        load("mnist", "train", data_dir=user_dir)
    msg = str(e.value)
    assert "'mnist'" in msg
    assert f"TFDS data_dir {user_dir}" in msg
    assert f"IDX directory {user_dir}:" in msg and f"IDX directory {user_dir / 'mnist'}" in msg
    assert f"IDX directory {env_dir / 'mnist'}" in msg
    assert "tfds build mnist" in msg and "JAXDD_DATA_DIR" in msg


def test_missing_cifar_error_says_how_to_get_it(tmp_path):
    with pytest.raises(JaxddError, match=r"(?s)cifar10.*TFDS data_dir.*not prepared.*tfds build cifar10"):
        load("cifar10", "test", data_dir=tmp_path)


def test_idx_from_data_dir_and_env(tmp_path, monkeypatch):
    raw = _make_idx_dir(tmp_path / "flat", gz=False)
    ds = load("mnist", "train", data_dir=tmp_path / "flat")
    assert ds.images.shape == (40, 28, 28, 1) and ds.name == "mnist"
    np.testing.assert_allclose(ds.images[..., 0], raw["train"][0] / 255.0, atol=1e-7)
    np.testing.assert_array_equal(ds.labels, raw["train"][1])
    raw2 = _make_idx_dir(tmp_path / "env" / "fashion_mnist", seed=1)
    monkeypatch.setenv("JAXDD_DATA_DIR", str(tmp_path / "env"))
    te = load("fashion_mnist", "test")  # $JAXDD_DATA_DIR/<name>/ wins over the Debian path
    assert te.images.shape == (20, 28, 28, 1)
    np.testing.assert_array_equal(te.labels, raw2["test"][1])
    assert te.class_names[0] == "T-shirt/top"


def test_idx_truncated_file_is_a_clear_error(tmp_path):
    _make_idx_dir(tmp_path, gz=False)
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(JaxddError, match="truncated"):
        load("mnist", data_dir=tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(DEBIAN_FMNIST), reason="apt-get install dataset-fashion-mnist")
def test_fashion_mnist_from_debian_files():
    tr, te = load("fashion_mnist", "train"), load("fashion_mnist", "test")
    assert tr.images.shape == (60000, 28, 28, 1) and te.images.shape == (10000, 28, 28, 1)
    assert tr.images.dtype == np.float32 and tr.labels.dtype == np.int32
    assert set(np.unique(tr.labels)) == set(range(10)) and set(np.unique(te.labels)) == set(range(10))
    np.testing.assert_array_equal(np.bincount(tr.labels), 6000)
    assert 0.0 <= tr.images.min() and tr.images.max() <= 1.0
    np.testing.assert_allclose(tr.mean, [tr.images.mean()], atol=1e-3)  # METHODS 1.1 constants fit the data
    np.testing.assert_allclose(tr.std, [tr.images.std()], atol=1e-3)


def test_tfds_mock_data_source():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
        c10 = load("cifar10", "train")
        c100 = load("cifar100", "test")
        fm = load("fashion_mnist", "train", data_dir="/nonexistent")
    assert c10.images.shape == (12, 32, 32, 3) and c10.images.dtype == np.float32
    assert 0.0 <= c10.images.min() and c10.images.max() <= 1.0
    assert c10.labels.dtype == np.int32 and c10.labels.max() < 10
    assert c10.class_names[0] == "airplane" and c10.mean == (0.4914, 0.4822, 0.4465)
    assert c100.num_classes == 100 and c100.images.shape == (12, 32, 32, 3)
    assert fm.images.shape == (12, 28, 28, 1)  # TFDS is tried before the Debian files


def test_import_idx_to_tfds_roundtrip(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    _make_idx_dir(tmp_path / "idx", n_train=30, n_test=10)
    out = import_idx_to_tfds(tmp_path / "idx", tmp_path / "tfds", name="fashion_mnist")
    assert (out / "dataset_info.json").is_file() and list(out.glob("*.array_record-*"))
    for split in ("train", "test"):
        via_tfds = load("fashion_mnist", split, data_dir=tmp_path / "tfds")  # no IDX there: must be TFDS
        via_idx = load("fashion_mnist", split, data_dir=tmp_path / "idx")
        assert via_tfds.images.shape == via_idx.images.shape
        assert via_tfds.class_names == via_idx.class_names
        # TFDS stores examples in its key-hash order: same data, different row order.
        np.testing.assert_array_equal(_as_sorted_rows(via_tfds), _as_sorted_rows(via_idx))


def test_tfds_cache_is_opt_in_and_reused(tmp_path, monkeypatch):
    pytest.importorskip("tensorflow_datasets")
    _make_idx_dir(tmp_path / "idx", n_train=20, n_test=10)
    out = import_idx_to_tfds(tmp_path / "idx", tmp_path / "tfds", name="mnist")
    first = load("mnist", "test", data_dir=tmp_path / "tfds")
    assert not (tmp_path / "cache").exists()
    monkeypatch.setenv("JAXDD_CACHE_DIR", str(tmp_path / "cache"))
    load("mnist", "test", data_dir=tmp_path / "tfds")
    assert len(list((tmp_path / "cache").glob("mnist-test-*.npz"))) == 1
    for shard in out.glob("*.array_record-*"):
        shard.unlink()  # only the cache can serve the next load
    again = load("mnist", "test", data_dir=tmp_path / "tfds")
    np.testing.assert_array_equal(again.images, first.images)
    np.testing.assert_array_equal(again.labels, first.labels)
    assert again.class_names == first.class_names


def test_import_rejects_non_idx_dataset(tmp_path):
    with pytest.raises(JaxddError, match="MNIST-format"):
        import_idx_to_tfds(tmp_path, tmp_path / "out", name="cifar10")
    with pytest.raises(JaxddError, match="no train IDX files"):
        import_idx_to_tfds(tmp_path, tmp_path / "out", name="mnist")


# ------------------------------------------------------------------------------------------------- validation split


def test_split_train_val_stratified_deterministic():
    ds = load("digits")
    tr, va = split_train_val(ds, 5, 0)
    tr2, va2 = split_train_val(ds, 5, 0)
    np.testing.assert_array_equal(va.labels, va2.labels)
    np.testing.assert_array_equal(va.images, va2.images)
    np.testing.assert_array_equal(np.bincount(va.labels, minlength=10), 5)
    assert len(tr.labels) + len(va.labels) == len(ds.labels) and va.split == "val" and tr.split == "train"
    _, va3 = split_train_val(ds, 5, 1)
    assert not np.array_equal(va.images, va3.images)
    _, vk = split_train_val(ds, 5, jax.random.key(3))
    _, vk2 = split_train_val(ds, 5, jax.random.key(3))
    np.testing.assert_array_equal(vk.images, vk2.images)
    # train and val are disjoint and together the original set
    np.testing.assert_array_equal(
        _as_sorted_rows(ds), _as_sorted_rows(ds._replace(images=np.concatenate([tr.images, va.images]),
                                                         labels=np.concatenate([tr.labels, va.labels])))
    )


def test_split_train_val_refuses_test_and_too_many():
    with pytest.raises(JaxddError, match="test set must never"):
        split_train_val(load("digits", "test"), 2, 0)
    with pytest.raises(JaxddError, match="leaves no training images"):
        split_train_val(load("digits"), 1000, 0)


# ---------------------------------------------------------------------------------------------------- preprocessing


def test_mean_std_fit_normalises_and_inverts():
    x = load("digits").images
    p = fit_preprocess(x)
    z = np.asarray(apply_preprocess(p, x))
    np.testing.assert_allclose(z.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=(0, 1, 2)), 1.0, atol=1e-4)
    np.testing.assert_allclose(np.asarray(invert_preprocess(p, z)), x, atol=1e-5)
    q = fit_preprocess(x, mean=(0.5,), std=(0.25,))
    np.testing.assert_allclose(np.asarray(apply_preprocess(q, x)), (x - 0.5) / 0.25, atol=1e-6)
    assert not p.uses_zca and p.zca_matrix is None


def test_zca_whitens_full_rank_data_and_inverts():
    rng = np.random.default_rng(0)
    d = 4 * 4 * 2
    a = rng.normal(size=(d, d)) / np.sqrt(d)
    x = (rng.normal(size=(600, d)) @ a * 0.1 + 0.5).astype(np.float32).reshape(600, 4, 4, 2)
    p = fit_preprocess(x, zca=True, zca_reg=0.0)
    z = np.asarray(apply_preprocess(p, x), np.float64).reshape(600, d)
    np.testing.assert_allclose(np.cov(z, rowvar=False), np.eye(d), atol=2e-3)
    np.testing.assert_allclose(np.asarray(invert_preprocess(p, apply_preprocess(p, x))), x, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(p.mean), 0.0)  # mean/std normalisation skipped under ZCA
    # with the kornia/MTT regulariser the transform still inverts exactly
    q = fit_preprocess(load("digits").images, zca=True)
    xd = load("digits", "test").images
    np.testing.assert_allclose(np.asarray(invert_preprocess(q, apply_preprocess(q, xd))), xd, atol=1e-4)


def test_zca_errors():
    x = load("digits").images
    with pytest.raises(JaxddError, match="skipped when zca=True"):
        fit_preprocess(x, mean=(0.3,), std=(0.4,), zca=True)
    with pytest.raises(JaxddError, match="singular"):
        fit_preprocess(x, zca=True, zca_reg=0.0)  # digits has always-zero corner pixels
    with pytest.raises(JaxddError, match="one value per channel"):
        fit_preprocess(np.zeros((2, 4, 4, 3), np.float32) + 0.5, mean=(0.1, 0.2), std=(1.0, 1.0, 1.0))


@pytest.mark.parametrize("zca", [False, True])
def test_preprocess_pytree_roundtrip_and_jit(tmp_path, zca):
    x = load("digits").images[:300]
    p = fit_preprocess(x, zca=zca) if zca else fit_preprocess(x, mean=(0.3,), std=(0.4,))
    arrays = preprocess_to_arrays(p)
    assert set(arrays) == ({"mean", "std", "zca_matrix", "zca_inverse", "zca_mean"} if zca else {"mean", "std"})
    np.savez(tmp_path / "synthetic.npz", images=np.zeros(3), **arrays)
    with np.load(tmp_path / "synthetic.npz") as z:
        q = preprocess_from_arrays(z)
    assert jax.tree.structure(p) == jax.tree.structure(q)
    for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(q)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    jitted = jax.jit(apply_preprocess)(q, x)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(apply_preprocess(p, x)), atol=1e-5)
    back = jax.jit(invert_preprocess)(q, jitted)
    np.testing.assert_allclose(np.asarray(back), x, atol=1e-4)


def test_preprocess_from_arrays_incomplete():
    with pytest.raises(JaxddError, match="lack"):
        preprocess_from_arrays({"mean": np.zeros(1)})
    with pytest.raises(JaxddError, match="all of"):
        preprocess_from_arrays({"mean": np.zeros(1), "std": np.ones(1), "zca_matrix": np.eye(2)})


# -------------------------------------------------------------------------------------------------------- sampling


def test_class_index_table():
    labels = np.array([2, 0, 2, 1, 2, 0], np.int32)
    idx = class_index(labels, 4)
    assert isinstance(idx, ClassIndex)
    np.testing.assert_array_equal(idx.counts, [2, 1, 3, 0])
    np.testing.assert_array_equal(idx.table, [[1, 5, -1], [3, -1, -1], [0, 2, 4], [-1, -1, -1]])
    with pytest.raises(JaxddError, match=r"\[0, 2\)"):
        class_index(labels, 2)


def test_sample_per_class_jitted_valid_unique_reproducible():
    labels = load("digits").labels
    idx = class_index(labels, 10)
    key = jax.random.key(0)
    s = sample_per_class(key, idx, 20)
    assert s.shape == (10, 20) and s.dtype == jnp.int32
    s = np.asarray(s)
    np.testing.assert_array_equal(labels[s], np.repeat(np.arange(10)[:, None], 20, axis=1))
    assert all(len(set(row)) == 20 for row in s)
    np.testing.assert_array_equal(s, np.asarray(sample_per_class(key, idx, 20)))
    assert not np.array_equal(s, np.asarray(sample_per_class(jax.random.key(1), idx, 20)))
    # usable inside a user's jit, with n static
    inner = jax.jit(lambda k, i: sample_per_class(k, i, 20))
    np.testing.assert_array_equal(s, np.asarray(inner(key, idx)))
    # all of a class when n == min count: a permutation of that class
    n_min = int(np.asarray(idx.counts).min())
    full = np.asarray(sample_per_class(key, idx, n_min))
    c_min = int(np.argmin(np.asarray(idx.counts)))
    assert sorted(full[c_min]) == sorted(np.flatnonzero(labels == c_min))


@settings(max_examples=8, deadline=None)
@given(
    counts=st.lists(st.integers(1, 9), min_size=1, max_size=5),
    n=st.integers(1, 12),
    seed=st.integers(0, 2**31 - 1),
)
def test_sample_per_class_property(counts, n, seed):
    labels = np.repeat(np.arange(len(counts)), counts).astype(np.int32)
    labels = labels[np.random.default_rng(seed).permutation(labels.size)]
    s = np.asarray(sample_per_class(jax.random.key(seed), class_index(labels, len(counts)), n))
    assert s.shape == (len(counts), n) and s.min() >= 0
    for k, row in enumerate(s):
        assert (labels[row] == k).all()
        # without replacement up to the class size; beyond it, each image at most ceil(n / count) times
        assert np.bincount(row).max() == -(-n // counts[k])
        if n <= counts[k]:
            assert len(set(row)) == n


def test_check_ipc():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 7)
    check_ipc(labels, 3)
    check_ipc(class_index(labels, 3), 3)
    with pytest.raises(JaxddError, match=r"ipc=4 exceeds the smallest class: class 1 has only 3 images"):
        check_ipc(labels, 4)
    with pytest.raises(JaxddError, match="class 1 has only 3"):
        check_ipc(class_index(labels, 3), 50)
    with pytest.raises(JaxddError, match="positive int"):
        check_ipc(labels, 0)
    with pytest.raises(JaxddError, match="class 3 has only 0"):
        check_ipc(class_index(labels, 4), 1)


# ---------------------------------------------------------------------------------------------------------- checks


def test_check_images():
    x = np.zeros((2, 8, 8, 1), np.float32)
    assert check_images(x) is x
    check_images(jnp.asarray(x))
    with pytest.raises(JaxddError, match=r"4-D \(n, h, w, c\).*shape \(8, 8, 1\).*\[None\]"):
        check_images(x[0])
    with pytest.raises(JaxddError, match="syn.*floating dtype.*uint8.*/ 255"):
        check_images(x.astype(np.uint8), name="syn")
    bad = x.copy()
    bad[1, 0, 0, 0] = np.nan
    with pytest.raises(JaxddError, match="1 NaN/inf value.*image 1"):
        check_images(bad)
    with pytest.raises(JaxddError, match="1 NaN/inf value.*image 1"):
        check_images(jnp.asarray(bad))
    with pytest.raises(JaxddError, match="must be an array"):
        check_images([[1.0]])
    # under jit only shape and dtype are checked
    assert jax.jit(lambda a: check_images(a) * 2)(x).shape == x.shape
    with pytest.raises(JaxddError):
        jax.jit(lambda a: check_images(a))(x[0])


# --------------------------------------------------------------------------------------------- own data (issue 22)


def test_from_arrays_converts_validates_and_names():
    from jaxdd.data import fingerprint, from_arrays

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (30, 6, 5), dtype=np.uint8)
    y = np.repeat(np.arange(3), 10)
    ds = from_arrays(x, y, class_names=["a", "b", "c"])
    assert ds.images.shape == (30, 6, 5, 1) and ds.images.dtype == np.float32 and ds.labels.dtype == np.int32
    np.testing.assert_allclose(ds.images[..., 0], x / 255.0, rtol=1e-6)
    assert ds.class_names == ("a", "b", "c") and ds.num_classes == 3 and ds.name == "arrays"
    np.testing.assert_allclose(ds.mean, [ds.images.mean()], rtol=1e-5)
    np.testing.assert_allclose(ds.std, [ds.images.std()], rtol=1e-5)
    # the same arrays as floats in [0, 1] are the same dataset: same fingerprint; a changed label changes it
    same = from_arrays(x.astype(np.float32) / 255.0, y, num_classes=3)
    assert same.class_names == ("0", "1", "2")
    assert fingerprint(same) == fingerprint(ds)
    y2 = y.copy()
    y2[0] = 1
    assert fingerprint(from_arrays(x, y2, num_classes=3)) != fingerprint(ds)
    assert len(fingerprint(ds)) == 64


@pytest.mark.parametrize("images,labels,kw,match", [
    (np.full((4, 5, 5), 2.0, np.float32), np.array([0, 1, 0, 1]), {}, r"\[0, 1\].*x / 255"),
    (np.zeros((4, 5, 5), np.float32), np.array([0, 1, 0]), {}, "4 images but labels of shape"),
    (np.zeros((4, 5, 5), np.float32), np.array([0, 1, 0, 3]), {"class_names": "abc"}, r"labels must lie in \[0, 3\)"),
    (np.zeros((4, 5, 5), np.float32), np.array([0, 0, 0, 0]), {}, "at least 2 classes"),
    (np.zeros((4,), np.float32), np.array([0, 1, 0, 1]), {}, r"\(n, h, w\) or \(n, h, w, c\)"),
    (np.zeros((4, 5, 5), np.float32), np.array([0.5, 1, 0, 1]), {}, "int class ids"),
])
def test_from_arrays_errors(images, labels, kw, match):
    from jaxdd.data import from_arrays

    with pytest.raises(JaxddError, match=match):
        from_arrays(images, labels, **kw)


def test_register_dataset_loads_by_name_and_as_dataset(monkeypatch):
    from jaxdd.data import as_dataset, register_dataset
    from jaxdd.data import datasets

    monkeypatch.setattr(datasets, "REGISTERED", dict(datasets.REGISTERED))  # registrations stay inside this test
    rng = np.random.default_rng(1)
    splits = {s: (rng.random((12, 4, 4, 3), dtype=np.float32), np.arange(12) % 2) for s in ("train", "test")}
    register_dataset("toy_pairs", lambda split: splits[split], class_names=("cat", "dog"))
    assert "toy_pairs" in available_datasets()
    ds = load("toy_pairs", "test")
    assert (ds.name, ds.split, ds.class_names) == ("toy_pairs", "test", ("cat", "dog"))
    np.testing.assert_array_equal(ds.images, splits["test"][0])
    assert as_dataset("toy_pairs", "train").split == "train"
    assert as_dataset(ds) is ds
    assert as_dataset(splits["train"]).num_examples == 12
    register_dataset("broken", lambda split: [1, 2, 3])
    with pytest.raises(JaxddError, match="must return a jaxdd Dataset or a pair"):
        load("broken")
    with pytest.raises(JaxddError, match="name .*Dataset or a pair"):
        as_dataset(42)
    with pytest.raises(JaxddError, match="register_dataset"):
        load("no_such_dataset")
