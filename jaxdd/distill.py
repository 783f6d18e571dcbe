"""The distillation driver: ``DistillState``, the pure ``distill_step`` and the ``distill`` loop.

``distill_step`` differentiates ``objective.loss(Synthetic(param.decode(syn["data"]), labels, extras), real,
obj_state, key)`` with respect to the synthetic pytree only, applies an optax transformation with per-leaf learning
rates (``optax.multi_transform`` over the pytree paths: ``data`` (pixels or factors, e.g. ``data/A``), ``labels``,
``extras/<name>``), then calls ``objective.update``. It is one jitted program: the real batch is sampled on device
from a ``RealPool`` (the whole normalised training split with a class index).

Randomness: the step key is ``fold_in(key, step)``; consumers get named splits of it. So a run that is interrupted
and resumed from a checkpoint replays exactly the same keys and ends with the same bits as an uninterrupted run.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from jaxdd.data import ClassIndex, check_images, check_ipc, class_index, sample_per_class
from jaxdd.objectives.base import Objective, Synthetic
from jaxdd.synthetic.base import Parameterization, class_major_labels
from jaxdd.types import Batch, JaxddError, PRNGKey, PyTree


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


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """Driver settings. Learning rates are per pytree path prefix: ``lrs`` adds/overrides entries such as
    ``(("labels", 0.01), ("extras/syn_lr", 1e-5), ("data/A", 0.5))``; ``lr_img`` is the lr of ``data``."""

    iterations: int = 1000
    lr_img: float = 1.0
    momentum: float = 0.5
    learn_labels: bool = False
    lrs: tuple[tuple[str, float], ...] = ()
    optimizer: str = "sgd"  # "sgd" (momentum) or "adam"
    schedule: str = "constant"  # "constant" or "cosine" (every lr decays as 0.5 (1 + cos(pi t / iterations)))
    log_every: int = 10
    checkpoint_every: int | None = None  # a checkpoint every this many steps; None: by wall time
    checkpoint_seconds: float = 60.0  # with checkpoint_every None: a checkpoint once this much time has passed
    eval_every: int = 0
    keep_checkpoints: int = 2
    progress: bool = True

    def __post_init__(self):
        if self.iterations < 0:
            raise JaxddError(f"iterations must be >= 0, got {self.iterations}")
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise JaxddError(f"checkpoint_every (--checkpoint-every) must be >= 1 step, got {self.checkpoint_every}; "
                             "leave it out to checkpoint by wall time (checkpoint_seconds)")
        if not self.checkpoint_seconds > 0:
            raise JaxddError(f"checkpoint_seconds (--checkpoint-seconds) must be > 0, got {self.checkpoint_seconds}")
        if self.log_every < 1 or self.eval_every < 0 or self.keep_checkpoints < 1:
            raise JaxddError(f"log_every and keep_checkpoints must be >= 1 and eval_every >= 0 (0: off); got "
                             f"{self.log_every}, {self.keep_checkpoints}, {self.eval_every}")
        if self.optimizer not in ("sgd", "adam"):
            raise JaxddError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if self.schedule not in ("constant", "cosine"):
            raise JaxddError(f"schedule must be 'constant' or 'cosine', got {self.schedule!r}")

    def lr_table(self) -> dict[str, float]:
        return {"data": self.lr_img, "labels": self.lr_img, "extras": self.lr_img, **dict(self.lrs)}


class DistillState(NamedTuple):
    step: jax.Array  # () int32: number of completed steps
    syn: PyTree  # {"data": parameterization pytree, "labels"?: (n, K) learned labels, "extras": {...}}
    opt_state: PyTree
    obj_state: PyTree


def _path_str(path) -> str:
    return "/".join(str(getattr(p, "key", getattr(p, "idx", p))) for p in path)


def synthetic_optimizer(syn: PyTree, config: DistillConfig) -> optax.GradientTransformation:
    """optax.multi_transform with one optimiser per lr group; a leaf uses the longest matching path prefix.

    Each group's learning rate is a state hyperparameter (inject_hyperparams), so sweeps can change it without
    recompiling and the experiment axis can vmap over it."""
    table = config.lr_table()

    def group(path) -> str:
        p = _path_str(path)
        best = max((k for k in table if p == k or p.startswith(k + "/")), key=len, default=None)
        if best is None:
            raise JaxddError(f"no learning rate for synthetic leaf {p!r}; give one in DistillConfig.lrs")
        return best

    labels = jax.tree_util.tree_map_with_path(lambda path, _: group(path), syn)
    used = set(jax.tree.leaves(labels))

    def make(lr):
        if config.schedule == "cosine":
            lr = optax.cosine_decay_schedule(lr, max(config.iterations, 1))
        if config.optimizer == "adam":
            return optax.inject_hyperparams(optax.adam)(learning_rate=lr, b1=0.5, b2=0.9)
        return optax.inject_hyperparams(optax.sgd)(learning_rate=lr, momentum=config.momentum or None)

    return optax.multi_transform({g: make(table[g]) for g in used}, labels)


def decode_synthetic(param: Parameterization, syn: PyTree, num_classes: int) -> Synthetic:
    x = param.decode(syn["data"])
    y = syn["labels"] if "labels" in syn else class_major_labels(num_classes, param.images_per_class)
    return Synthetic(x, y, syn.get("extras", {}))


def init_state(key: PRNGKey, objective: Objective, param: Parameterization, pool: RealPool,
               config: DistillConfig) -> tuple[DistillState, optax.GradientTransformation]:
    """The step-0 state (synthetic set initialised from real images of each class or noise) and its optimiser."""
    k_real, k_param, k_obj = jax.random.split(jax.random.fold_in(key, -1 & 0x7FFFFFFF), 3)
    check_ipc(pool.index, param.images_per_class)
    real_init = pool.images[sample_per_class(k_real, pool.index, param.images_per_class)]  # (K, m, h, w, c)
    syn = {"data": param.init(k_param, real_init)}
    if config.learn_labels:
        k = pool.num_classes
        syn["labels"] = jax.nn.one_hot(class_major_labels(k, param.images_per_class), k)
    syn["extras"] = {k: jnp.asarray(v) for k, v in objective.learnables.items()}
    tx = synthetic_optimizer(syn, config)
    obj_state = (objective.init_with_real(k_obj, real_init) if objective.init_with_real is not None
                 else objective.init(k_obj))
    state = DistillState(jnp.zeros((), jnp.int32), syn, tx.init(syn), obj_state)
    return state, tx


def distill_step(objective: Objective, param: Parameterization, tx: optax.GradientTransformation,
                 state: DistillState, pool: RealPool, key: PRNGKey) -> tuple[DistillState, dict]:
    """One pure distillation step (jit it with objective/param/tx static, e.g. via ``make_step``)."""
    k = pool.num_classes
    step_key = jax.random.fold_in(key, state.step)
    k_real, k_loss, k_upd = jax.random.split(step_key, 3)
    real = sample_real(pool, k_real, objective.real_per_class) if objective.real_per_class else Batch(
        pool.images[:0], pool.labels[:0])

    def loss_fn(syn):
        return objective.loss(decode_synthetic(param, syn, k), real, state.obj_state, k_loss)

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.syn)
    updates, opt_state = tx.update(grads, state.opt_state, state.syn)
    syn = optax.apply_updates(state.syn, updates)
    if objective.project is not None:
        syn = {**syn, "data": objective.project(syn["data"])}
    obj_state = objective.update(state.obj_state, decode_synthetic(param, syn, k), real, k_upd)
    metrics = {"loss": loss, "grad_norm": optax.global_norm(grads), **aux}
    return DistillState(state.step + 1, syn, opt_state, obj_state), metrics


def make_step(objective: Objective, param: Parameterization, tx: optax.GradientTransformation) -> Callable:
    """``jit``-compiled ``(state, pool, key) -> (state, metrics)``; traced once per shapes."""
    return jax.jit(lambda state, pool, key: distill_step(objective, param, tx, state, pool, key))


# --------------------------------------------------------------------------------------------------------------
# The driver


class DistillResult(NamedTuple):
    state: DistillState
    images: jax.Array  # decoded synthetic images (n, h, w, c)
    labels: jax.Array  # (n,) hard or (n, K) learned
    history: list[dict]


def _read_metrics(path: Path, upto: int) -> list[dict]:
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("step", 0) <= upto]


class _Interrupt:
    """Ctrl-C (SIGINT) and SIGTERM become a clean stop: the first one only sets ``requested``; the loop checks it
    after each step, saves a checkpoint and raises KeyboardInterrupt (the CLI exits 130). A second signal raises at
    once (the last saved checkpoint is kept)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self):
        self.requested = None
        self._old = {}
        try:
            for sig in self.SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not in the main thread: leave the handlers alone
            for sig, h in self._old.items():
                signal.signal(sig, h)
            self._old = {}
        return self

    def _handle(self, signum, frame):
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signum
        print(f"\njaxdd: {signal.Signals(signum).name} received: stopping after this step with a checkpoint "
              "(send it again to stop at once)", file=sys.stderr, flush=True)

    def check(self) -> None:
        """Raise KeyboardInterrupt if a stop was requested (call where the state is consistent)."""
        if self.requested is not None:
            raise KeyboardInterrupt

    def __exit__(self, *exc):
        for sig, h in self._old.items():
            signal.signal(sig, h)
        return False


class JsonlLogger:
    """The default logging callback: ``(step, metrics)`` appended as one JSON object ``{"step": ..., **metrics}``
    per line to ``path`` (``distill`` writes ``out_dir/metrics.jsonl`` with it)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __call__(self, step: int, metrics: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")


class CheckpointClock:
    """When to save: every ``config.checkpoint_every`` steps, or (None) once ``config.checkpoint_seconds`` of wall
    time have passed since the last save; always at the last step. Only WHEN a checkpoint is written depends on
    time: a resumed run replays the same keys, so the result's bits do not."""

    def __init__(self, config: DistillConfig):
        self.config = config
        self.last = time.monotonic()

    def due(self, done: int) -> bool:
        c = self.config
        if done == c.iterations:
            return True
        if c.checkpoint_every is not None:
            return done % c.checkpoint_every == 0
        return time.monotonic() - self.last >= c.checkpoint_seconds

    def saved(self) -> None:
        self.last = time.monotonic()


def check_resumed_step(step: int, config: DistillConfig, where) -> None:
    if step > config.iterations:
        raise JaxddError(f"the checkpoint in {where} is at step {step}, past iterations={config.iterations}: a run "
                         "cannot be shortened; use the original iterations or another output directory")


def distill(key: PRNGKey, objective: Objective, param: Parameterization, pool: RealPool, config: DistillConfig,
            *, out_dir: str | os.PathLike | None = None,
            evaluator: Callable[[jax.Array, jax.Array, int], dict] | None = None,
            callbacks: Sequence[Callable[[int, dict], None]] = ()) -> DistillResult:
    """Run ``config.iterations`` distillation steps; resume from ``out_dir/checkpoints`` if a checkpoint exists.

    evaluator(images, labels, step) -> dict of metrics (e.g. validation accuracy) is called every
    ``config.eval_every`` steps and at the end; it must not use the test split. Every logged row goes to each of
    ``callbacks`` as ``callback(step, metrics)`` (metrics: a dict of Python floats, e.g. ``loss``, ``grad_norm``,
    cumulative ``time``, ``val_acc``), which is how TensorBoard, clu or wandb writers hook in; with ``out_dir`` the
    rows also go to ``out_dir/metrics.jsonl`` (``JsonlLogger``, one JSON object per logged step). Ctrl-C or SIGTERM
    finishes the current step, saves a checkpoint and raises KeyboardInterrupt. Checkpoints follow
    ``CheckpointClock`` (by default once a minute).
    """
    from jaxdd.checkpoint import Checkpointer

    state, tx = init_state(key, objective, param, pool, config)
    step_fn = make_step(objective, param, tx)
    ckpt = metrics_path = None
    history: list[dict] = []
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        ckpt = Checkpointer(out / "checkpoints", max_to_keep=config.keep_checkpoints)
        metrics_path = out / "metrics.jsonl"
        if ckpt.latest_step() is not None:
            state = ckpt.restore(state)
            check_resumed_step(int(state.step), config, out)
            history = _read_metrics(metrics_path, int(state.step))
            metrics_path.write_text("".join(json.dumps(r) + "\n" for r in history))
        elif metrics_path.exists():
            metrics_path.unlink()

    loggers = ([JsonlLogger(metrics_path)] if metrics_path is not None else []) + list(callbacks)

    def log(row: dict):
        history.append(row)
        for fn in loggers:
            fn(row["step"], {k: v for k, v in row.items() if k != "step"})

    def evaluate(step: int):
        if evaluator is None:
            return
        syn = decode_synthetic(param, state.syn, pool.num_classes)
        row = {"step": step, **{k: float(v) for k, v in evaluator(syn.x, syn.y, step).items()}}
        log(row)

    start = int(state.step)
    t_before = float(history[-1].get("time", 0.0)) if history else 0.0  # "time" is cumulative across resumes
    bar = tqdm(total=config.iterations, initial=start, disable=not config.progress, desc=objective.name,
               dynamic_ncols=True)
    try:
        with _Interrupt() as stop:
            clock = CheckpointClock(config)
            t0 = time.perf_counter()
            for step in range(start, config.iterations):
                state, metrics = step_fn(state, pool, key)
                done = step + 1
                if done % config.log_every == 0 or done == config.iterations or done == start + 1:
                    vals = {k: float(v) for k, v in metrics.items()}
                    if not np.isfinite(vals["loss"]):
                        bad = ", ".join(f"{k}={v}" for k, v in vals.items() if not np.isfinite(v))
                        raise JaxddError(
                            f"the {objective.name} loss became {vals['loss']} at step {done} (not finite: {bad}; "
                            f"the metrics are checked at logged steps, every {config.log_every}); the last "
                            f"checkpoint is kept")
                    log({"step": done, "time": t_before + time.perf_counter() - t0, **vals})
                    bar.set_postfix(loss=f"{vals['loss']:.4g}")
                if config.eval_every and done % config.eval_every == 0 and done != config.iterations:
                    evaluate(done)
                if ckpt is not None and clock.due(done):
                    ckpt.save(done, state)
                    clock.saved()
                bar.update(1)
                stop.check()
    except KeyboardInterrupt:
        if ckpt is not None and int(state.step) > (ckpt.latest_step() or 0):
            ckpt.save(int(state.step), state)
        raise
    finally:
        bar.close()
    if config.eval_every and (not history or history[-1].get("step") != config.iterations or
                              "val_acc" not in history[-1]):
        evaluate(int(state.step))
    syn = decode_synthetic(param, state.syn, pool.num_classes)
    if not bool(jnp.all(jnp.isfinite(syn.x))):
        raise JaxddError(f"the synthetic set contains NaN or inf after step {int(state.step)}")
    return DistillResult(state, syn.x, syn.y, history)
