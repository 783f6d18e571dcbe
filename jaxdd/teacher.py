"""Squeeze (SRe2L/DWA, docs/methods.md 11.1 step 1): train a batch-norm teacher on the real training split and save it.

    jaxdd teacher --dataset fashion_mnist --model ConvNetBN --epochs 5 --out runs/teacher_fmnist
    jaxdd distill --method dwa --teacher runs/teacher_fmnist --dataset fashion_mnist --ipc 10 --out runs/dwa10

From Python::

    from jaxdd.teacher import TeacherConfig, train_teacher, load_teacher
    info = train_teacher("fashion_mnist", "ConvNetBN", "runs/teacher", config=TeacherConfig(epochs=5))
    teacher = load_teacher("runs/teacher")        # Teacher(module, variables, meta)

Training follows the SRe2L CIFAR recipe scaled down: SGD (PyTorch-style weight decay 5e-4, momentum 0.9), cosine
learning rate from ``lr`` (0.1) to 0 over all steps, batch 128, random shift (+-4 px, zero fill) and horizontal flip,
each applied to every image independently; the last partial batch of an epoch is dropped (static shapes). The data
are the training split minus the class-stratified validation split of ``jaxdd.pipeline.prepare_data`` (the same
carving and normalisation ``jaxdd distill`` uses with the same seed), so the teacher never sees the test split; its
validation and test accuracies are recorded, not used for selection.

A teacher directory holds ``teacher.json`` (model name and overrides, classes, image shape, dataset, normalisation
constants, config, accuracies), ``checkpoints/`` (orbax, the whole training state after every epoch: rerunning the
same command resumes) and ``final/`` (orbax, the trained variables ``{"params", "batch_stats"}``).
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdd.models import apply_model, get_model, has_batch_stats, init_model
from jaxdd.train import accuracy, cross_entropy, predict_many
from jaxdd.types import JaxddError, PRNGKey, PyTree

TEACHER_JSON = "teacher.json"


@dataclasses.dataclass(frozen=True)
class TeacherConfig:
    epochs: int = 5
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    shift: int = 4  # random shift of every image by up to this many pixels per axis (zero fill); 0 = off
    flip: bool = True  # horizontal flip with probability 0.5 per image

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.shift < 0:
            raise JaxddError(f"invalid TeacherConfig {self}: epochs >= 1, batch_size >= 1, lr > 0, shift >= 0")


class Teacher(NamedTuple):
    module: nn.Module
    variables: PyTree  # {"params", "batch_stats"}
    meta: dict


def shift_flip(x: jax.Array, key: PRNGKey, shift: int, flip: bool) -> jax.Array:
    """Per-image random shift in [-shift, shift] px per axis (zero fill) and horizontal flip (p = 0.5)."""
    n, h, w, _ = x.shape
    k1, k2, k3 = jax.random.split(key, 3)
    if shift:
        dy = jax.random.randint(k1, (n,), -shift, shift + 1)
        dx = jax.random.randint(k2, (n,), -shift, shift + 1)
        pad = jnp.pad(x, ((0, 0), (shift, shift), (shift, shift), (0, 0)))
        x = jax.vmap(lambda img, a, b: jax.lax.dynamic_slice(img, (shift - a, shift - b, 0), (h, w, x.shape[-1])))(
            pad, dy, dx)
    if flip:
        f = jax.random.bernoulli(k3, 0.5, (n, 1, 1, 1))
        x = jnp.where(f, x[:, :, ::-1, :], x)
    return x


def _optimizer(config: TeacherConfig, total_steps: int) -> optax.GradientTransformation:
    sched = optax.cosine_decay_schedule(config.lr, max(total_steps, 1))
    return optax.chain(optax.add_decayed_weights(config.weight_decay),
                       optax.sgd(sched, momentum=config.momentum or None))


def fit_teacher(key: PRNGKey, module: nn.Module, x: jax.Array, y: jax.Array, config: TeacherConfig, *,
                state: dict | None = None, on_epoch: Callable[[int, dict], None] | None = None) -> dict:
    """Train ``module`` on (x, y) (normalised images, int labels); returns the training state
    ``{"variables", "opt_state", "epoch"}``. ``state`` resumes a saved one; ``on_epoch(epoch, state)`` is called
    after every epoch (checkpointing, progress). Epoch e shuffles with ``fold_in(key, e)``; deterministic."""
    x = jnp.asarray(x, jnp.float32)
    y = jnp.asarray(y, jnp.int32)
    n = x.shape[0]
    bs = min(config.batch_size, n)
    steps = n // bs
    tx = _optimizer(config, steps * config.epochs)
    k_init, k_run = jax.random.split(key)
    if state is None:
        variables = jax.jit(lambda k: init_model(module, k, x.shape[1:]))(k_init)
        if not has_batch_stats(variables):
            raise JaxddError(f"{type(module).__name__} has no batch norm; SRe2L/DWA teachers need one "
                             "(use ConvNetBN, ResNet8BN or ResNet18BN)")
        state = {"variables": variables, "opt_state": tx.init(variables["params"]), "epoch": jnp.zeros((), jnp.int32)}

    @jax.jit
    def epoch_perm(epoch):
        ek = jax.random.fold_in(k_run, epoch)
        return ek, jax.random.permutation(ek, n)

    @jax.jit
    def step(variables, opt_state, perm, s, ek):
        idx = jax.lax.dynamic_slice(perm, (s * bs,), (bs,))
        xb = shift_flip(x[idx], jax.random.fold_in(ek, s + 1), config.shift, config.flip)
        yb = y[idx]

        def loss_fn(params):
            out = apply_model(module, {**variables, "params": params}, xb, train=True)
            return cross_entropy(out.logits, yb), out.variables

        (loss, new_vars), g = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
        upd, opt_state = tx.update(g, opt_state, variables["params"])
        return {**new_vars, "params": optax.apply_updates(variables["params"], upd)}, opt_state, loss

    variables, opt_state = state["variables"], state["opt_state"]
    for epoch in range(int(state["epoch"]), config.epochs):
        ek, perm = epoch_perm(epoch)
        losses = []
        for s in range(steps):
            variables, opt_state, loss = step(variables, opt_state, perm, s, ek)
            losses.append(loss)
        state = {"variables": variables, "opt_state": opt_state, "epoch": jnp.asarray(epoch + 1, jnp.int32),
                 "loss": float(np.mean([float(v) for v in losses]))}
        if on_epoch is not None:
            on_epoch(epoch + 1, state)
        state.pop("loss")
    return state


def teacher_accuracy(module: nn.Module, variables: PyTree, x, y) -> float:
    logits = predict_many(module, jax.tree.map(lambda a: a[None], variables), jnp.asarray(x))[0]
    return float(accuracy(logits, jnp.asarray(y)))


def save_teacher(out_dir, model: str, model_kwargs: dict, variables: PyTree, meta: dict) -> Path:
    """Write ``final/`` (orbax) and ``teacher.json`` for a trained teacher; returns the directory."""
    from jaxdd.checkpoint import Checkpointer, _jsonable

    import shutil

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


def load_teacher(path) -> Teacher:
    """Load a teacher written by ``train_teacher``/``save_teacher`` (or ``jaxdd teacher``)."""
    from jaxdd.checkpoint import Checkpointer

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


def train_teacher(dataset: str, model: str, out_dir, *, config: TeacherConfig = TeacherConfig(),
                  model_kwargs: dict | None = None, seed: int = 0, data_dir: str | None = None,
                  val_per_class: int | None = None, progress: bool = True) -> dict:
    """Train (or resume) a teacher on ``dataset``'s training split; writes ``out_dir``; returns its metadata."""
    from jaxdd.checkpoint import Checkpointer, resume_run
    from jaxdd.data import apply_preprocess, load, preprocess_to_arrays
    from jaxdd.models import eval_module
    from jaxdd.pipeline import prepare_data

    model_kwargs = dict(model_kwargs or {})
    # every setting decides the teacher's bits (the cosine lr spans all epochs, so more epochs is another run)
    resume_run(out_dir, "teacher", {"dataset": dataset, "model": model, "model_kwargs": model_kwargs, "seed": seed,
                                    "val_per_class": val_per_class, **dataclasses.asdict(config)},
               markers=("checkpoints", "final"))
    train, val, pre, x_train, x_val = prepare_data(dataset, data_dir=data_dir, val_per_class=val_per_class,
                                                   seed=seed)
    k = train.num_classes
    module = eval_module(model, k, model_kwargs)  # trained as evaluation trains (conv_impl "auto"); same parameters
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    key = jax.random.key(seed)
    ckpt = Checkpointer(out / "checkpoints", max_to_keep=1)
    state = None
    bs = min(config.batch_size, train.num_examples)
    tx = _optimizer(config, (train.num_examples // bs) * config.epochs)
    if ckpt.latest_step() is not None:
        def target_fn():
            variables = init_model(module, key, train.image_shape)
            return {"variables": variables, "opt_state": tx.init(variables["params"]),
                    "epoch": jnp.zeros((), jnp.int32)}

        target = jax.eval_shape(target_fn)
        state = ckpt.restore(target)
    history: list[dict] = []
    hist_path = out / "history.jsonl"
    if state is None and hist_path.exists():
        hist_path.unlink()
    t0 = time.perf_counter()

    def on_epoch(epoch, st):
        ckpt.save(epoch, {k_: v for k_, v in st.items() if k_ != "loss"})
        row = {"epoch": epoch, "loss": st["loss"], "seconds": time.perf_counter() - t0}
        with hist_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if progress:
            print(f"teacher epoch {epoch}/{config.epochs}: loss {st['loss']:.4f} ({row['seconds']:.0f} s)",
                  flush=True)

    state = fit_teacher(key, module, x_train, train.labels, config, state=state, on_epoch=on_epoch)
    ckpt.close()
    variables = state["variables"]
    test = load(dataset, "test", data_dir)
    meta = {
        "dataset": dataset, "num_classes": k, "image_shape": list(train.image_shape), "seed": seed,
        "config": dataclasses.asdict(config), "epochs_done": int(state["epoch"]),
        "preprocess": {n: np.asarray(v).tolist() for n, v in preprocess_to_arrays(pre).items()},
        "zca": bool(pre.uses_zca), "num_train": int(train.num_examples),
        "val_accuracy": None if x_val is None else teacher_accuracy(module, variables, x_val, val.labels),
        "test_accuracy": teacher_accuracy(module, variables, apply_preprocess(pre, test.images), test.labels),
        "seconds": time.perf_counter() - t0,
    }
    save_teacher(out, model, model_kwargs, variables, meta)
    return {**meta, "model": model, "model_kwargs": model_kwargs}
