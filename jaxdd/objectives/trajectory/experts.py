"""Expert trajectories for trajectory matching (MTT, docs/methods.md section 5): train, store, stream.

    jaxdd experts --dataset fashion_mnist --num-experts 10 --epochs 20 --out experts/fmnist

Experts are networks trained from random initialisation on the real training split (the split ``distill_dataset``
uses: the training set minus the class-stratified validation split) with plain SGD: constant lr (0.01), no
momentum, no weight decay, batch 256, DSA non-Siamese. Their parameters are saved at initialisation and after every
epoch. ``group`` experts are trained at once (``vmap`` over experts, one jitted step).

On-disk buffer (a directory)::

    meta.json          how the experts were trained: dataset (+ its size and split), preprocessing, model,
                       protocol, seed, dtype, parameter layout (ravel order), jaxdd version
    preprocess.npz     the preprocessing arrays (mean/std, ZCA) the experts saw
    expert_00000.npy   one expert: (epochs + 1, P) flat parameters (jax.flatten_util.ravel_pytree order), float32
                       or bfloat16 bits stored as uint16 (``dtype="bfloat16"`` halves the size)
    manifest.json      the experts that are COMPLETE, with their byte sizes; written atomically after each file
    progress.npz       the group being trained: its ids and snapshots so far, rewritten after every epoch

Writes are atomic (write to a temporary name, fsync, ``os.replace``), and a file counts only once the manifest lists
it; an interrupted run leaves at most a stray temporary file and ``progress.npz``, and rerunning the same
command resumes from the last finished epoch of the interrupted group with the same keys, so the result is the same as
an uninterrupted run. ``ExpertBuffer`` refuses an incomplete buffer (unless ``allow_partial``) and checks every file's
size and header against the manifest, so a half-written buffer is never read silently.

Reading streams from disk: ``ExpertBuffer.snapshot(i, epoch)`` memory-maps the expert's file and copies one row;
``ExpertBuffer.fetch`` is the ``jax.pure_callback`` used inside the jitted MTT loss.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from jaxdd import augment as aug
from jaxdd.fileio import atomic_write, prepare_out_dir, resume_run
from jaxdd.train import batched_step, compiled, fit, make_train_step
from jaxdd.types import JaxddError, PRNGKey, PyTree, path_str

FORMAT_VERSION = 1
META = "meta.json"
MANIFEST = "manifest.json"
PREPROCESS = "preprocess.npz"
PROGRESS = "progress.npz"
OLD_PROGRESS = "progress"  # an older jaxdd's orbax progress checkpoint (its group restarts)
DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class ExpertProtocol:
    """How each expert is trained (MTT buffer.py defaults): plain SGD, constant lr, batch 256, DSA non-Siamese."""

    epochs: int = 50
    lr: float = 0.01
    batch_size: int = 256
    augment: str | None = aug.DSA_DEFAULT

    def __post_init__(self):
        if self.epochs < 1 or self.lr <= 0 or self.batch_size < 1:
            raise JaxddError(f"invalid ExpertProtocol {self}: epochs >= 1, lr > 0, batch_size >= 1 are required")
        if self.augment:
            aug.parse_strategy(self.augment)


def _atomic_write_json(path: Path, obj) -> None:
    atomic_write(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def _expert_file(directory: Path, i: int) -> Path:
    return directory / f"expert_{i:05d}.npy"


def _to_storage(traj: np.ndarray, dtype: str) -> np.ndarray:
    traj = np.asarray(traj, np.float32)
    if dtype == "float32":
        return traj
    return np.asarray(jnp.asarray(traj, jnp.bfloat16)).view(np.uint16)


def _from_storage(a: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "float32":
        return np.asarray(a, np.float32)
    return np.asarray(jnp.asarray(np.asarray(a).view(jnp.bfloat16), jnp.float32))


def param_layout(params: PyTree) -> list[dict]:
    """The ravel order of a params pytree: [{"path", "shape"}], recorded in meta.json so the layout is checkable."""
    leaves = jax.tree_util.tree_leaves_with_path(params)
    return [{"path": path_str(p), "shape": list(np.shape(v))} for p, v in leaves]


# ----------------------------------------------------------------------------------------------------------------
# Reading


class ExpertBuffer:
    """A finished (or, with ``allow_partial``, partly written) expert buffer on disk; rows are read on demand.

    ``num_experts`` counts complete experts only; ``epochs`` is the number of training epochs (each expert holds
    ``epochs + 1`` snapshots, index 0 = initialisation); ``num_params`` is P.
    """

    def __init__(self, directory: str | os.PathLike, *, allow_partial: bool = False):
        self.directory = Path(directory)
        meta_path = self.directory / META
        if not meta_path.exists():
            raise JaxddError(f"{self.directory} is not an expert buffer (no {META}); create one with "
                             f"`jaxdd experts --dataset NAME --num-experts N --epochs E --out {self.directory}`")
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("format_version") != FORMAT_VERSION:
            raise JaxddError(f"{self.directory}: buffer format {self.meta.get('format_version')} is not the "
                             f"supported {FORMAT_VERSION}; regenerate it with this jaxdd version")
        manifest = _read_manifest(self.directory)
        planned = int(self.meta["num_experts"])
        done = sorted(int(i) for i in manifest)
        if done != list(range(len(done))):
            raise JaxddError(f"{self.directory}: manifest lists experts {done}, not 0..n-1; the buffer is corrupt, "
                             "delete it and regenerate")
        if not done:
            raise JaxddError(f"{self.directory} holds no complete expert yet: rerun the same `jaxdd experts` "
                             "command to resume writing it")
        if len(done) < planned and not allow_partial:
            raise JaxddError(f"{self.directory} is incomplete ({len(done)} of {planned} experts written, probably "
                             "interrupted): rerun the same `jaxdd experts` command to resume it, or open it with "
                             "allow_partial=True to use the finished experts only")
        self.num_experts = len(done)
        self.epochs = int(self.meta["protocol"]["epochs"])
        self.num_params = int(self.meta["num_params"])
        self.dtype = self.meta["dtype"]
        self._rows_dtype = np.float32 if self.dtype == "float32" else np.uint16
        self._sizes = {int(k): int(v["bytes"]) for k, v in manifest.items()}
        self._maps: dict[int, np.ndarray] = {}

    # -- file access ------------------------------------------------------------------------------------------
    def _map(self, i: int) -> np.ndarray:
        if not 0 <= i < self.num_experts:
            raise JaxddError(f"expert {i} out of range: the buffer holds {self.num_experts} complete experts")
        if i not in self._maps:
            path = _expert_file(self.directory, i)
            if not path.exists() or path.stat().st_size != self._sizes[i]:
                raise JaxddError(f"{path} is missing or has the wrong size (manifest says {self._sizes[i]} bytes): "
                                 "the buffer is damaged; delete that file and its manifest entry and rerun "
                                 "`jaxdd experts` to rewrite it")
            arr = np.load(path, mmap_mode="r")
            want = (self.epochs + 1, self.num_params)
            if arr.shape != want or arr.dtype != self._rows_dtype:
                raise JaxddError(f"{path} holds {arr.shape} {arr.dtype}, expected {want} {self._rows_dtype}")
            self._maps[i] = arr
        return self._maps[i]

    def trajectory(self, i: int) -> np.ndarray:
        """All snapshots of expert i: (epochs + 1, P) float32."""
        return _from_storage(np.array(self._map(i)), self.dtype)

    def snapshot(self, i: int, epoch: int) -> np.ndarray:
        """Expert i's flat parameters after ``epoch`` epochs (0 = init): (P,) float32, one row read from disk."""
        if not 0 <= epoch <= self.epochs:
            raise JaxddError(f"epoch {epoch} out of range 0..{self.epochs}")
        return _from_storage(np.array(self._map(i)[epoch]), self.dtype)

    def fetch(self, expert: np.ndarray, start: np.ndarray, span: int) -> tuple[np.ndarray, np.ndarray]:
        """Host function for ``jax.pure_callback``: (theta_start, theta_{start+span}) of ``expert``.

        ``expert`` and ``start`` may carry leading batch dimensions (vmap); returns (..., P) float32 twice."""
        expert = np.asarray(expert)
        start = np.asarray(start)
        shape = np.broadcast_shapes(expert.shape, start.shape)
        e = np.broadcast_to(expert, shape).reshape(-1)
        s = np.broadcast_to(start, shape).reshape(-1)
        a = np.stack([self.snapshot(int(i), int(t)) for i, t in zip(e, s)])
        b = np.stack([self.snapshot(int(i), int(t) + span) for i, t in zip(e, s)])
        return a.reshape(*shape, -1), b.reshape(*shape, -1)

    def preprocess(self):
        from jaxdd.data import preprocess_from_arrays

        with np.load(self.directory / PREPROCESS) as z:
            return preprocess_from_arrays({k: z[k] for k in z.files})

    def nbytes(self) -> int:
        return sum(self._sizes[i] for i in range(self.num_experts))


def _read_manifest(directory: Path) -> dict:
    path = directory / MANIFEST
    if not path.exists():
        return {}
    return json.loads(path.read_text())["complete"]


# ----------------------------------------------------------------------------------------------------------------
# Writing


_NOT_COMPARED = ("num_experts", "created", "jaxdd_version")


def train_experts(key: PRNGKey, x: np.ndarray, y: np.ndarray, out_dir: str | os.PathLike, *, num_classes: int,
                  num_experts: int, protocol: ExpertProtocol = ExpertProtocol(), model: str = "ConvNet",
                  model_kwargs: dict | None = None, group: int = 1, dtype: str = "float32",
                  preprocess=None, info: dict | None = None,
                  on_epoch: Callable[[int, int], None] | None = None, progress: bool = True) -> ExpertBuffer:
    """Train ``num_experts`` experts on (x, y) and write (or resume, or extend) the buffer at ``out_dir``.

    x: (N, h, w, c) float32, already preprocessed; y: (N,) int. Expert i's randomness is
    ``fold_in(key, i)`` (init: its first split; epoch e: ``fold_in(., e)``), so results do not depend on ``group``
    (up to float rounding of vmapped arithmetic) nor on interruptions. ``info`` (e.g. the dataset's name, split and
    size) and ``preprocess`` are recorded; resuming with a different request raises instead of mixing experts.
    ``on_epoch(first_expert, epoch)`` is called after each finished epoch of a group (tests interrupt through it).
    """
    from jaxdd import __version__
    from jaxdd.data import preprocess_to_arrays
    from jaxdd.models import eval_module
    from jaxdd.models import init_model

    if dtype not in DTYPES:
        raise JaxddError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if num_experts < 1 or group < 1:
        raise JaxddError(f"num_experts and group must be >= 1, got {num_experts} and {group}")
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.int32)
    if x.ndim != 4 or y.shape != (x.shape[0],):
        raise JaxddError(f"expected images (N,h,w,c) and labels (N,), got {x.shape} and {y.shape}")
    model_kwargs = dict(model_kwargs or {})
    module = eval_module(model, num_classes, model_kwargs)  # trained as evaluation trains (conv_impl "auto")
    image_shape = tuple(int(s) for s in x.shape[1:])
    template = init_model(module, jax.random.key(0), image_shape)
    flat0, unravel = ravel_pytree(template["params"])
    meta = {
        "format_version": FORMAT_VERSION, "num_experts": int(num_experts), "model": model,
        "model_kwargs": model_kwargs, "num_classes": int(num_classes), "image_shape": list(image_shape),
        "protocol": dataclasses.asdict(protocol), "optimizer": "sgd, momentum 0, weight decay 0, constant lr",
        "dtype": dtype, "num_params": int(flat0.size), "layout": param_layout(template["params"]),
        "key": np.asarray(jax.random.key_data(key)).tolist(), "num_train": int(x.shape[0]),
        "info": info or {}, "zca": bool(preprocess is not None and preprocess.uses_zca),
        "jaxdd_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out = prepare_out_dir(out_dir)
    old = json.loads((out / META).read_text()) if (out / META).exists() else None
    request = {k: v for k, v in meta.items() if k not in _NOT_COMPARED}
    # experts are independent: more experts extend the buffer, fewer just use its first ones; anything else that
    # differs would mix experts trained differently, and is refused (the run.json of jaxdd.fileio.resume_run)
    resume_run(out, "experts", request, markers=(MANIFEST, PROGRESS, OLD_PROGRESS),
               legacy=None if old is None else {k: v for k, v in old.items() if k not in _NOT_COMPARED})
    if old is not None:
        meta["created"] = old.get("created", meta["created"])
        meta["num_experts"] = max(int(old["num_experts"]), num_experts)
        if num_experts > int(old["num_experts"]):
            print(f"jaxdd: extending the expert buffer in {out}: num_experts {old['num_experts']} -> {num_experts}",
                  file=sys.stderr, flush=True)
    _atomic_write_json(out / META, meta)
    if preprocess is not None and not (out / PREPROCESS).exists():
        buf = out / (PREPROCESS + ".tmp.npz")
        np.savez(buf, **preprocess_to_arrays(preprocess))
        os.replace(buf, out / PREPROCESS)

    manifest = {int(k): v for k, v in _read_manifest(out).items()}
    todo = [i for i in range(num_experts) if i not in manifest]
    tx = optax.sgd(protocol.lr)
    run = compiled(("experts", module, float(protocol.lr), protocol.augment),
                   lambda: batched_step(make_train_step(module, tx, protocol.augment)))
    pool_x, pool_y = jnp.asarray(x), jnp.asarray(y)
    rest = {k: v for k, v in template.items() if k != "params"}
    e_total = protocol.epochs
    ravel_many = jax.jit(jax.vmap(lambda p: ravel_pytree(p)[0]))
    unravel_many = jax.jit(jax.vmap(unravel))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo) * e_total, desc="experts", dynamic_ncols=True)

    while todo:
        ids = todo[:group]
        todo = todo[group:]
        g = len(ids)
        ekeys = jnp.stack([jax.random.fold_in(key, i) for i in ids])
        k_init = jax.vmap(lambda k: jax.random.split(k)[0])(ekeys)
        k_run = jax.vmap(lambda k: jax.random.split(k)[1])(ekeys)
        snaps, done_epochs = _read_progress(out, ids, (g, e_total + 1, flat0.size))
        if done_epochs == 0:
            fresh = jax.vmap(lambda k: init_model(module, k, image_shape)["params"])(k_init)
            snaps[:, 0] = np.asarray(ravel_many(fresh))
        params = unravel_many(jnp.asarray(snaps[:, done_epochs]))
        variables = {"params": params, **jax.tree.map(lambda a: jnp.broadcast_to(a, (g, *a.shape)), rest)}
        if bar is not None:
            bar.update(g * done_epochs)

        def snapshot(epoch, variables, opt_state, losses):
            snaps[:, epoch] = np.asarray(ravel_many(variables["params"]))
            if not np.all(np.isfinite(snaps[:, epoch])):
                raise JaxddError(f"experts {ids} diverged at epoch {epoch}: lower the expert lr ({protocol.lr})")
            if epoch < e_total:
                _write_progress(out, ids, epoch, snaps)
            if bar is not None:
                bar.update(g)
            if on_epoch is not None:
                on_epoch(ids[0], epoch)

        fit(run, variables, jax.vmap(tx.init)(params), pool_x, pool_y, k_run, epochs=range(done_epochs + 1, e_total + 1),
            batch_size=protocol.batch_size, on_epoch=snapshot)
        for j, i in enumerate(ids):
            path = _expert_file(out, i)
            buf = io.BytesIO()
            np.save(buf, _to_storage(snaps[j], dtype))
            atomic_write(path, buf.getvalue())
            manifest[i] = {"bytes": path.stat().st_size}
            _atomic_write_json(out / MANIFEST, {"complete": {str(k): v for k, v in sorted(manifest.items())}})
        _clear_progress(out)
    if bar is not None:
        bar.close()
    return ExpertBuffer(out, allow_partial=True)


def _read_progress(out: Path, ids: list[int], shape) -> tuple[np.ndarray, int]:
    """The snapshots so far of the group ``ids`` being trained, and its finished epochs (0: none saved, or saved
    for another group, which is then discarded)."""
    path = out / PROGRESS
    if path.is_file():
        try:
            with np.load(path) as z:
                if np.array_equal(z["ids"], np.asarray(ids)) and z["snaps"].shape == shape:
                    return np.array(z["snaps"]), int(z["epoch"])
        except (OSError, ValueError, KeyError):  # unreadable: start the group afresh
            pass
    _clear_progress(out)
    return np.zeros(shape, np.float32), 0


def _write_progress(out: Path, ids: list[int], epoch: int, snaps: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, ids=np.asarray(ids, np.int32), epoch=np.asarray(epoch), snaps=snaps)
    atomic_write(out / PROGRESS, buf.getvalue())


def _clear_progress(out: Path) -> None:
    shutil.rmtree(out / OLD_PROGRESS, ignore_errors=True)
    if (out / PROGRESS).exists():
        (out / PROGRESS).unlink()
