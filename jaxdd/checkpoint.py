"""Orbax checkpoints of the whole distillation state, and the distilled-set artifact.

A run directory holds ``checkpoints/`` (orbax, the last few steps; saves are atomic: a save interrupted by kill -9
leaves a temporary directory that orbax ignores, so the previous complete checkpoint is restored), ``metrics.jsonl``
and, at the end, the artifact: ``synthetic.npz`` (``images`` (n,h,w,c) in the normalised space the models see,
``labels``, ``mean``, ``std`` and ZCA arrays where used), ``synthetic.json`` (method, config, keys, jaxdd version)
and ``synthetic.png`` (a de-normalised image grid).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxdd.data import Preprocess, invert_preprocess, preprocess_from_arrays, preprocess_to_arrays
from jaxdd.types import JaxddError, PyTree


class Checkpointer:
    """Save/restore a pytree every few steps under ``directory`` (keeps the newest ``max_to_keep``)."""

    def __init__(self, directory: str | os.PathLike, max_to_keep: int = 2):
        self.directory = Path(directory).absolute()
        self._mngr = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def save(self, step: int, state: PyTree) -> None:
        self._mngr.save(int(step), args=ocp.args.StandardSave(state))
        self._mngr.wait_until_finished()

    def restore(self, target: PyTree, step: int | None = None) -> PyTree:
        """Restore into the structure of ``target`` (a concrete or abstract state of the same shapes)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise JaxddError(f"no checkpoint found under {self.directory}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        return self._mngr.restore(step, args=ocp.args.StandardRestore(abstract))

    def close(self) -> None:
        self._mngr.close()


class Artifact(NamedTuple):
    images: np.ndarray  # (n, h, w, c) normalised
    labels: np.ndarray  # (n,) or (n, k)
    preprocess: Preprocess
    metadata: dict


ARTIFACT_NPZ = "synthetic.npz"
ARTIFACT_JSON = "synthetic.json"
ARTIFACT_PNG = "synthetic.png"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.generic,)):
        return obj.item()
    if isinstance(obj, (np.ndarray, jax.Array)):
        return np.asarray(obj).tolist()
    return obj


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
    (out / ARTIFACT_JSON).write_text(json.dumps(_jsonable(metadata), indent=2, sort_keys=True))
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
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads((out / ARTIFACT_JSON).read_text()) if (out / ARTIFACT_JSON).exists() else {}
    return Artifact(arrays["images"], arrays["labels"], preprocess_from_arrays(arrays), meta)
