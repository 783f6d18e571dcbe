"""Orbax checkpoints of the whole distillation state, the distilled-set artifact, and SRe2L/DWA teacher directories.

A run directory holds ``run.json`` (the resolved configuration the run was created with: see
``jaxdd.fileio.resume_run``),
``checkpoints/`` (orbax, the last few steps; saves are atomic: a save interrupted by kill -9 leaves a temporary
directory that orbax ignores, so the previous complete checkpoint is restored; each step also records a SHA-256 of
its arrays, and a step that cannot be read back or does not match it is moved to ``checkpoints.corrupt/`` and the
previous one is used), ``metrics.jsonl`` and, at the end, the artifact: ``synthetic.npz`` (``images`` (n,h,w,c) in
the normalised space the models see, ``labels``, ``mean``, ``std`` and ZCA arrays where used), ``synthetic.json``
(method, config, keys, jaxdd version) and ``synthetic.png`` (a de-normalised image grid).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import zipfile
from pathlib import Path
from typing import NamedTuple, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxdd.data import Preprocess, invert_preprocess, preprocess_from_arrays, preprocess_to_arrays
from jaxdd.fileio import _first_line, _jsonable, atomic_write
from jaxdd.types import JaxddError, PyTree

DIGEST = "jaxdd_digest.json"


def _host_leaves(state: PyTree) -> list[np.ndarray]:
    def host(a):
        if isinstance(a, jax.Array) and jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            a = jax.random.key_data(a)
        return np.asarray(jax.device_get(a))

    return [host(a) for a in jax.tree.leaves(state)]


def state_digest(state: PyTree) -> dict:
    """The leaves' shapes/dtypes and a SHA-256 of their bytes (tree-flatten order): what a checkpoint must hold."""
    leaves = _host_leaves(state)
    h = hashlib.sha256()
    for a in leaves:
        h.update(a.tobytes())
    return {"leaves": [[list(a.shape), str(a.dtype)] for a in leaves], "sha256": h.hexdigest()}


def _addressable(state: PyTree) -> bool:
    return all(getattr(a, "is_fully_addressable", True) for a in jax.tree.leaves(state))


class _quiet_failed_reads:
    """A failed orbax read leaves tensorstore callbacks that later hit a closed asyncio loop and print
    "RuntimeError: Event loop is closed" tracebacks through sys.unraisablehook: swallow exactly those (the failure
    itself is reported as one warning line)."""

    def __enter__(self):
        self._hook = sys.unraisablehook

        def hook(u):
            if isinstance(u.exc_value, RuntimeError) and "Event loop is closed" in str(u.exc_value):
                return
            self._hook(u)

        sys.unraisablehook = hook

    def __exit__(self, *exc):
        import gc

        gc.collect()  # run the pending finalisers while the filter is on
        sys.unraisablehook = self._hook
        return False


class Checkpointer:
    """Save/restore a pytree every few steps under ``directory`` (keeps the newest ``max_to_keep``).

    ``restore`` tries the newest step first; a step that cannot be read (truncated or corrupted files) or whose
    arrays do not match the SHA-256 recorded at save time is moved to ``<directory>.corrupt/<step>`` with a one-line
    warning on stderr, and the next older step is tried. A checkpoint whose array shapes differ from the target's
    is another run's state, not corruption: that raises a ``JaxddError`` and nothing is moved."""

    def __init__(self, directory: str | os.PathLike, max_to_keep: int = 2):
        self.directory = Path(directory).absolute()
        self.max_to_keep = max_to_keep
        self._mngr = self._open()

    def _open(self):
        return ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=self.max_to_keep, create=True))

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(int(s) for s in self._mngr.all_steps())

    def save(self, step: int, state: PyTree) -> None:
        self._mngr.save(int(step), args=ocp.args.StandardSave(state))
        self._mngr.wait_until_finished()
        step_dir = self.directory / str(int(step))
        if step_dir.is_dir() and _addressable(state) and jax.process_index() == 0:
            # (a state spread over several hosts goes unverified: no process sees all of its bytes)
            tmp = step_dir / (DIGEST + ".tmp")
            tmp.write_text(json.dumps(state_digest(state)))
            os.replace(tmp, step_dir / DIGEST)

    def _quarantine(self, step: int, reason: str, fallback: int | None) -> None:
        dest = Path(str(self.directory) + ".corrupt") / str(step)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            shutil.rmtree(dest)
        shutil.move(str(self.directory / str(step)), dest)
        self._mngr.close()
        self._mngr = self._open()
        then = f"falling back to step {fallback}" if fallback is not None else "no older checkpoint"
        print(f"jaxdd: warning: checkpoint step {step} in {self.directory} is unreadable ({reason}); moved to "
              f"{dest}; {then}", file=sys.stderr, flush=True)

    def restore(self, target: PyTree, step: int | None = None) -> PyTree:
        """Restore into the structure of ``target`` (a concrete or abstract state of the same shapes): the newest
        readable step (at most ``step`` when given; see the class docstring)."""
        steps = self.all_steps()
        if not steps:
            raise JaxddError(f"no checkpoint found under {self.directory}")
        candidates = [s for s in reversed(steps) if step is None or s <= int(step)]
        if not candidates:
            raise JaxddError(f"no checkpoint of step <= {step} under {self.directory} (it holds steps {steps})")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        want = [list(jax.eval_shape(jax.random.key_data, a).shape)
                if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key) else list(a.shape)
                for a in jax.tree.leaves(abstract)]
        tried = []
        for i, s in enumerate(candidates):
            nxt = candidates[i + 1] if i + 1 < len(candidates) else None
            digest = None
            try:
                digest = json.loads((self.directory / str(s) / DIGEST).read_text())
                shapes = [list(leaf[0]) for leaf in digest["leaves"]]
            except FileNotFoundError:
                pass  # saved by an older jaxdd, or killed between the save and the digest: unverified
            except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
                self._quarantine(s, f"digest file unreadable: {_first_line(e)}", nxt)
                tried.append(s)
                continue
            if digest is not None and shapes != want:
                raise JaxddError(
                    f"the checkpoint at {self.directory / str(s)} holds arrays of other shapes than this run's state: "
                    "it belongs to another configuration; use another output directory")
            try:
                with _quiet_failed_reads():
                    out = self._mngr.restore(s, args=ocp.args.StandardRestore(abstract))
                if digest is not None and _addressable(out):
                    got = state_digest(out)
                    # (a leaf restored in another dtype than it was saved in cannot be compared: left unverified)
                    if got["leaves"] == digest["leaves"] and got["sha256"] != digest["sha256"]:
                        raise ValueError("its arrays do not match the SHA-256 recorded when it was saved")
            except Exception as e:  # tensorstore raises ValueError, OSError or a bare Exception
                self._quarantine(s, _first_line(e), nxt)
                tried.append(s)
                continue
            return out
        raise JaxddError(f"no readable checkpoint left under {self.directory}: steps {tried} were corrupt (moved to "
                         f"{self.directory}.corrupt); delete the run directory's checkpoints to start afresh")

    def close(self) -> None:
        self._mngr.close()


# --------------------------------------------------------------------------------------------------------------
# The distilled-set artifact


class Artifact(NamedTuple):
    images: np.ndarray  # (n, h, w, c) normalised
    labels: np.ndarray  # (n,) or (n, k)
    preprocess: Preprocess
    metadata: dict


ARTIFACT_NPZ = "synthetic.npz"
ARTIFACT_JSON = "synthetic.json"
ARTIFACT_PNG = "synthetic.png"


def save_artifact(out_dir: str | os.PathLike, images, labels, preprocess: Preprocess, metadata: dict,
                  class_names: tuple[str, ...] | None = None) -> Path:
    """Write synthetic.npz / .json / .png into ``out_dir``; returns the npz path."""
    from jaxdd.plots import save_image_grid

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images = np.asarray(images, np.float32)
    labels = np.asarray(labels)
    arrays = {"images": images, "labels": labels, **preprocess_to_arrays(preprocess)}
    tmp = out / (ARTIFACT_NPZ + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, out / ARTIFACT_NPZ)
    atomic_write(out / ARTIFACT_JSON, json.dumps(_jsonable(metadata), indent=2, sort_keys=True))
    hard = labels if labels.ndim == 1 else labels.argmax(-1)
    save_image_grid(np.asarray(invert_preprocess(preprocess, images)), hard, out / ARTIFACT_PNG,
                    class_names=class_names)
    return out / ARTIFACT_NPZ


def load_artifact(out_dir: str | os.PathLike) -> Artifact:
    out = Path(out_dir)
    path = out / ARTIFACT_NPZ
    if not path.exists():
        raise JaxddError(f"{path} not found: {out} is not a finished jaxdd run (run `jaxdd distill ... --out {out}` "
                         "to finish or resume it)")
    try:
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as e:
        raise JaxddError(f"{path} is truncated or corrupt ({_first_line(e)}): rerun the `jaxdd distill` command "
                         f"that made it (same --out) to write it again") from None
    missing = {"images", "labels"} - set(arrays)
    if missing:
        raise JaxddError(f"{path} lacks {sorted(missing)}: it is not a jaxdd synthetic set")
    try:
        meta = json.loads((out / ARTIFACT_JSON).read_text()) if (out / ARTIFACT_JSON).exists() else {}
    except ValueError as e:
        raise JaxddError(f"{out / ARTIFACT_JSON} is truncated or corrupt ({_first_line(e)}): rerun the `jaxdd "
                         "distill` command that made it to write it again") from None
    return Artifact(arrays["images"], arrays["labels"], preprocess_from_arrays(arrays), meta)


def check_artifact(art: Artifact, num_classes: int, image_shape: Sequence[int] | None = None,
                   where: str = "the synthetic set") -> None:
    """Refuse a synthetic set that cannot belong to a dataset of ``num_classes`` classes and ``image_shape``:
    images (n, h, w, c) finite, labels (n,) integer class ids in [0, K) or (n, K) finite label vectors."""
    x, y = np.asarray(art.images), np.asarray(art.labels)
    if x.ndim != 4 or (image_shape is not None and tuple(x.shape[1:]) != tuple(image_shape)):
        raise JaxddError(f"{where} holds images of shape {x.shape}; the dataset's images are "
                         f"{tuple(image_shape) if image_shape is not None else '(h, w, c)'} (n first)")
    if not np.all(np.isfinite(x)):
        raise JaxddError(f"{where} holds NaN or inf pixels")
    n = x.shape[0]
    if y.ndim == 1:
        if y.shape[0] != n or not np.issubdtype(y.dtype, np.integer):
            raise JaxddError(f"{where}: {n} images but labels of shape {y.shape} and dtype {y.dtype}; need one "
                             "integer class id per image")
        bad = (y < 0) | (y >= num_classes)
        if bad.any():
            raise JaxddError(f"{where} has labels outside the {num_classes} classes of the dataset (0..."
                             f"{num_classes - 1}): {sorted(set(y[bad].tolist()))[:10]}")
    elif y.ndim == 2:
        if y.shape != (n, num_classes) or not np.all(np.isfinite(y)):
            raise JaxddError(f"{where}: label vectors of shape {y.shape}; need ({n}, {num_classes}) finite values")
    else:
        raise JaxddError(f"{where}: labels of shape {y.shape}; need (n,) class ids or (n, K) label vectors")


# --------------------------------------------------------------------------------------------------------------
# SRe2L/DWA teachers: final/ (orbax, the trained variables) and teacher.json

TEACHER_JSON = "teacher.json"


def save_teacher(out_dir, model: str, model_kwargs: dict, variables: PyTree, meta: dict) -> Path:
    """Write ``final/`` (orbax) and ``teacher.json`` for a trained teacher; returns the directory."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if (out / "final").exists():
        shutil.rmtree(out / "final")
    ck = Checkpointer(out / "final", max_to_keep=1)
    ck.save(int(meta.get("epochs_done", 0)), variables)
    ck.close()
    meta = {**meta, "model": model, "model_kwargs": dict(model_kwargs)}
    (out / TEACHER_JSON).write_text(json.dumps(_jsonable(meta), indent=2, sort_keys=True))
    return out


def load_teacher(path):
    """Load a teacher written by ``train_teacher``/``save_teacher`` (or ``jaxdd teacher``)."""
    from jaxdd.models import get_model, init_model
    from jaxdd.objectives.recover.teacher import Teacher

    out = Path(path)
    if not (out / TEACHER_JSON).exists() or not (out / "final").exists():
        raise JaxddError(f"{out} holds no finished teacher (need {TEACHER_JSON} and final/): train one with "
                         f"`jaxdd teacher --dataset NAME --model ConvNetBN --out {out}` (rerun it to resume)")
    meta = json.loads((out / TEACHER_JSON).read_text())
    module = get_model(meta["model"], int(meta["num_classes"]), **(meta.get("model_kwargs") or {}))
    target = jax.eval_shape(lambda: init_model(module, jax.random.key(0), tuple(meta["image_shape"])))
    ck = Checkpointer(out / "final", max_to_keep=1)
    variables = ck.restore(target)
    ck.close()
    return Teacher(module, variables, meta)
