"""The distillation driver: ``DistillState``, the pure ``distill_step`` and ONE loop (``_drive``), which ``distill``
runs for one run and ``distill_many`` for E runs at once (the experiment axis: a leading axis of the state, the
step vmapped, seeds and float hyperparameters as a dimension). Protocols (continual learning, multi-experiment
evaluation) and the dataset-level API are built on top of it.

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
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from jaxdd import sharding as shd
from jaxdd.data import RealPool, check_ipc, make_pool, sample_per_class, sample_real  # noqa: F401  (make_pool: its old home)
from jaxdd.objectives.base import Objective, Synthetic
from jaxdd.synthetic.base import Parameterization, class_major_labels
from jaxdd.train import compiled
from jaxdd.types import Batch, JaxddError, PRNGKey, PyTree, path_str


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


def synthetic_optimizer(syn: PyTree, config: DistillConfig) -> optax.GradientTransformation:
    """optax.multi_transform with one optimiser per lr group; a leaf uses the longest matching path prefix.

    Each group's learning rate is a state hyperparameter (inject_hyperparams), so sweeps can change it without
    recompiling and the experiment axis can vmap over it."""
    table = config.lr_table()

    def group(path) -> str:
        p = path_str(path)
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


class _Runs(NamedTuple):
    """The runs one loop drives: one unstacked run (``distill``) or E stacked ones (``distill_many``)."""

    num: int
    stacked: bool
    take: Callable  # (state, i) -> run i's state
    decode: Callable  # state -> (images, labels): (n, ...) or (E, n, ...)


def _drive(runs: _Runs, state: DistillState, step_fn: Callable, pool: RealPool, keys, config: DistillConfig, *,
           name: str, out_dirs: Sequence, evaluator, callbacks: Sequence, place: Callable = lambda s: s
           ) -> tuple[DistillState, list[list[dict]], set[int]]:
    """THE distillation loop, for ``runs.num`` runs at once; returns (state, per-run histories, diverged runs).

    Per run i: checkpoints in ``out_dirs[i]/checkpoints`` (cadence: ``CheckpointClock``), metrics rows to
    ``out_dirs[i]/metrics.jsonl`` and to every callback (``callback(step, metrics)``; with several runs the metrics
    carry ``experiment: i``); a rerun restores the newest step every run can read. ``evaluator(images, labels, step)``
    (validation data only) every ``config.eval_every`` steps and at the end. Ctrl-C / SIGTERM: the current step
    finishes, a checkpoint is saved, KeyboardInterrupt is raised. A non-finite loss stops a single run with a
    ``JaxddError``; with several runs the diverged ones are reported and the others go on."""
    from jaxdd.checkpoint import Checkpointer

    num, lead = runs.num, jax.process_index() == 0
    ckpts = [Checkpointer(Path(o) / "checkpoints", max_to_keep=config.keep_checkpoints) for o in out_dirs]
    paths = [Path(o) / "metrics.jsonl" for o in out_dirs]
    histories: list[list[dict]] = [[] for _ in range(num)]
    if ckpts and all(c.latest_step() is not None for c in ckpts):
        step0, target = min(c.latest_step() for c in ckpts), runs.take(state, 0)
        check_resumed_step(step0, config, out_dirs[0] if num == 1 else Path(out_dirs[0]).parent)
        while True:  # the newest step every run can read (a corrupt step falls back per run)
            restored = [c.restore(target, step0) for c in ckpts]
            got = [int(r.step) for r in restored]
            if min(got) == max(got):
                break
            step0 = min(got)
        state = place(jax.tree.map(lambda *xs: jnp.stack(xs), *restored) if runs.stacked else restored[0])
        for i, p in enumerate(paths):
            histories[i] = _read_metrics(p, step0)
            if lead:
                p.write_text("".join(json.dumps(r) + "\n" for r in histories[i]))
    elif lead:
        for p in paths:
            if p.exists():
                p.unlink()
    loggers = [[JsonlLogger(p)] if lead else [] for p in paths] or [[] for _ in range(num)]

    def log(i: int, row: dict):
        histories[i].append(row)
        metrics = {k: v for k, v in row.items() if k != "step"}
        for fn in loggers[i]:
            fn(row["step"], metrics)
        for fn in callbacks if lead else ():
            fn(row["step"], {**metrics, "experiment": i} if runs.stacked else metrics)

    def evaluate(step: int):
        if evaluator is None:
            return
        images, labels = runs.decode(state)
        vals = {n: np.asarray(v).reshape(num) for n, v in evaluator(images, labels, step).items()}
        for i in range(num):
            log(i, {"step": step, **{n: float(v[i]) for n, v in vals.items()}})

    def save(step: int):
        for i, c in enumerate(ckpts):
            c.save(step, runs.take(state, i))

    diverged: set[int] = set()
    start = int(jax.device_get(runs.take(state, 0).step))
    t_before = float(histories[0][-1].get("time", 0.0)) if histories[0] else 0.0  # cumulative across resumes
    bar = tqdm(total=config.iterations, initial=start, disable=not (config.progress and lead),
               desc=name if num == 1 else f"{name} x{num}", dynamic_ncols=True)
    try:
        with _Interrupt() as stop:
            clock = CheckpointClock(config)
            t0 = time.perf_counter()
            for step in range(start, config.iterations):
                state, metrics = step_fn(state, pool, keys)
                done = step + 1
                if done % config.log_every == 0 or done == config.iterations or done == start + 1:
                    vals = {k: np.asarray(jax.device_get(v), np.float64).reshape(num) for k, v in metrics.items()}
                    elapsed = t_before + time.perf_counter() - t0
                    for i in range(num):
                        row = {"step": done, "time": elapsed, **{k: float(v[i]) for k, v in vals.items()}}
                        if not np.isfinite(row["loss"]) and i not in diverged:
                            if not runs.stacked:
                                bad = ", ".join(f"{k}={v}" for k, v in row.items() if not np.isfinite(v))
                                raise JaxddError(
                                    f"the {name} loss became {row['loss']} at step {done} (not finite: {bad}; the "
                                    f"metrics are checked at logged steps, every {config.log_every}); the last "
                                    f"checkpoint is kept")
                            diverged.add(i)
                            print(f"jaxdd: experiment {i} diverged at step {done} (loss {row['loss']}); the other "
                                  "experiments continue", file=sys.stderr, flush=True)
                        log(i, row)
                    bar.set_postfix(loss=f"{np.nanmean(vals['loss']):.4g}")
                if config.eval_every and done % config.eval_every == 0 and done != config.iterations:
                    evaluate(done)
                if ckpts and clock.due(done):
                    save(done)
                    clock.saved()
                bar.update(1)
                stop.check()
    except KeyboardInterrupt:
        cur = int(jax.device_get(runs.take(state, 0).step))
        for i, c in enumerate(ckpts):
            if cur > (c.latest_step() or 0):
                c.save(cur, runs.take(state, i))
        raise
    finally:
        bar.close()
        for c in ckpts:
            c.close()
    if config.eval_every and (not histories[0] or histories[0][-1].get("step") != config.iterations
                              or "val_acc" not in histories[0][-1]):
        evaluate(int(jax.device_get(runs.take(state, 0).step)))
    return state, histories, diverged


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
    ``CheckpointClock`` (by default once a minute). ``distill_many`` runs the same loop for E runs at once.
    """
    state, tx = init_state(key, objective, param, pool, config)
    k = pool.num_classes

    def decode(st):
        syn = decode_synthetic(param, st.syn, k)
        return syn.x, syn.y

    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    runs = _Runs(1, False, lambda st, i: st, decode)
    # one compiled step per (objective, parameterization, optimiser settings): a caller that reuses its objective
    # (continual learning's steps, a sweep of seeds) does not recompile. (The cached closure keeps the objective
    # alive, so its id stays unique while cached.)
    tx_key = (config.lr_table(), config.optimizer, config.momentum, config.schedule,
              config.iterations if config.schedule != "constant" else None, jax.tree.structure(state.syn))
    step_fn = compiled(("distill_step", id(objective), id(param), repr(tx_key)),
                       lambda: make_step(objective, param, tx))
    state, histories, _ = _drive(runs, state, step_fn, pool, key, config,
                                 name=objective.name, out_dirs=[] if out_dir is None else [out_dir],
                                 evaluator=evaluator, callbacks=callbacks)
    images, labels = decode(state)
    if not bool(jnp.all(jnp.isfinite(images))):
        raise JaxddError(f"the synthetic set contains NaN or inf after step {int(state.step)}")
    return DistillResult(state, images, labels, histories[0])


# --------------------------------------------------------------------------------------------------------------
# The experiment axis: E distillations as one program (seeds and float hyperparameters as a dimension)

EXP_DIR = "exp_{:03d}"


def exp_dir(out_dir, i: int) -> Path:
    return Path(out_dir) / EXP_DIR.format(i)


def _split_name(name: str) -> tuple[str, str]:
    group, _, hp = name.partition(":")
    group = {"lr_img": "data", "lr": "data"}.get(group, group)
    return group, hp or "learning_rate"


def hyperparameters(opt_state: PyTree) -> dict[str, jax.Array]:
    """The state hyperparameters of a DistillState's ``opt_state``: {"data:learning_rate": ..., ...}."""
    out = {}
    for group, node in opt_state.inner_states.items():
        while not hasattr(node, "hyperparams"):
            node = node.inner_state
        for hp, v in node.hyperparams.items():
            out[f"{group}:{hp}"] = v
    return out


def set_hyperparameters(opt_state: PyTree, values: dict[str, Any]) -> PyTree:
    """Replace state hyperparameters: keys "<group>" (its learning rate) or "<group>:<name>" (e.g.
    "data:momentum"); groups are DistillConfig's lr groups ("data", "labels", "extras/<name>"; "lr_img" = "data").
    Values must broadcast to the stored shape ((E,) for a stacked state)."""
    inner = dict(opt_state.inner_states)
    for name, value in values.items():
        group, hp = _split_name(name)
        if group not in inner:
            raise JaxddError(f"hyperparameter {name!r}: no lr group {group!r}; the groups are {sorted(inner)}")

        def replace(node):
            if hasattr(node, "hyperparams"):
                if hp not in node.hyperparams:
                    raise JaxddError(f"hyperparameter {name!r}: the {group!r} optimiser has "
                                     f"{sorted(node.hyperparams)}")
                old = node.hyperparams[hp]
                new = jnp.broadcast_to(jnp.asarray(value, old.dtype), old.shape)
                return node._replace(hyperparams={**node.hyperparams, hp: new})
            return node._replace(inner_state=replace(node.inner_state))

        inner[group] = replace(inner[group])
    return opt_state._replace(inner_states=inner)


# --------------------------------------------------------------------------------------------------------------
# The stacked state and the vmapped step


def init_states(keys: jax.Array, objective: Objective, param: Parameterization, pool: RealPool,
                config: DistillConfig, hparams: dict[str, Sequence[float]] | None = None
                ) -> tuple[DistillState, optax.GradientTransformation]:
    """The stacked step-0 states of E experiments (``init_state`` vmapped over ``keys`` (E,)) and the shared
    optimiser. ``hparams``: name -> E values (see ``set_hyperparameters``)."""
    keys = jnp.asarray(keys)
    num = keys.shape[0]
    holder: list = []
    index = pool.index  # concrete: init_state checks the class counts on the host

    def one(k, images, labels):
        state, tx = init_state(k, objective, param, RealPool(images, labels, index), config)
        holder.append(tx)
        return state

    states = jax.jit(jax.vmap(one, in_axes=(0, None, None)))(keys, pool.images, pool.labels)
    tx = holder[0]
    if hparams:
        vals = {}
        for name, v in hparams.items():
            v = np.asarray(v, np.float32).reshape(-1)
            if v.shape[0] != num:
                raise JaxddError(f"hyperparameter grid {name!r} has {v.shape[0]} values for {num} experiments; "
                                 "give one value per experiment")
            if _split_name(name)[1] == "learning_rate" and config.schedule != "constant":
                raise JaxddError(f"a learning-rate grid ({name!r}) needs schedule='constant': with "
                                 f"schedule={config.schedule!r} the lr is recomputed from the schedule every step")
            vals[name] = v
        states = states._replace(opt_state=set_hyperparameters(states.opt_state, vals))
    return states, tx


def make_multi_step(objective: Objective, param: Parameterization, tx: optax.GradientTransformation,
                    mesh=None, state_shardings: PyTree | None = None) -> Callable:
    """``jit(vmap(distill_step))``: ``(stacked state, pool, keys (E,)) -> (stacked state, metrics of (E,))``.

    With a mesh the vmapped axis is the mesh's "exp" axis (``spmd_axis_name``), the state keeps
    ``state_shardings`` and the metrics come back replicated (every process can read them)."""
    def one(state, pool, key):
        return distill_step(objective, param, tx, state, pool, key)

    if mesh is None:
        return jax.jit(jax.vmap(one, in_axes=(0, None, 0)))
    stepped = jax.vmap(one, in_axes=(0, None, 0), spmd_axis_name=shd.EXP)
    return jax.jit(stepped, out_shardings=(state_shardings, shd.replicated(mesh)))


def decode_many(param: Parameterization, states: DistillState, num_classes: int, mesh=None):
    """Decoded synthetic sets of every experiment: images (E, n, h, w, c), labels (E, n) or (E, n, K); with a
    mesh they come back replicated, so every process can read them."""
    def dec(syn):
        out = jax.vmap(lambda s: decode_synthetic(param, s, num_classes))(syn)
        return out.x, out.y

    return jax.jit(dec, out_shardings=None if mesh is None else shd.replicated(mesh))(states.syn)


class MultiResult(NamedTuple):
    state: DistillState  # stacked: every leaf (E, ...)
    images: np.ndarray  # (E, n, h, w, c)
    labels: np.ndarray  # (E, n) or (E, n, K)
    histories: list[list[dict]]  # per experiment, as DistillResult.history
    diverged: list[int]  # experiments whose loss became non-finite (their sets are not usable)


def _take_fn(mesh):
    def take(states, i):
        return jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, i, keepdims=False), states)

    return jax.jit(take, out_shardings=None if mesh is None else shd.replicated(mesh))


def _stack(trees: list[PyTree]) -> PyTree:
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def distill_many(keys: jax.Array, objective: Objective, param: Parameterization, pool: RealPool,
                 config: DistillConfig, *, hparams: dict[str, Sequence[float]] | None = None, mesh=None,
                 syn_sharding: str = "replicated", split_pool: bool = False, out_dir=None,
                 evaluator: Callable[[jax.Array, jax.Array, int], dict] | None = None,
                 callbacks: Sequence[Callable[[int, dict], None]] = ()) -> MultiResult:
    """Run E = len(keys) distillations in one program for ``config.iterations`` steps, with ``distill``'s loop.

    The state is a ``DistillState`` with a leading experiment axis (E, ...) and the step is
    ``jit(vmap(distill_step))``; experiment i gives the same synthetic set as ``distill(keys[i], ...)`` (to float
    tolerance: the batched program may reduce in another order). keys: (E,) PRNG keys, experiment i's run key.
    hparams: per-experiment float hyperparameters (``set_hyperparameters``: each lr group's learning rate, momentum,
    adam's b1/b2/eps are arrays in ``opt_state``, so a grid does not recompile). mesh: a
    ``jaxdd.sharding.make_mesh`` mesh (E divisible by its "exp" axis); ``syn_sharding``/``split_pool`` as in
    ``shard_objective``/``shard_pool``. out_dir: experiment i's checkpoints (its unstacked state, so it can be
    resumed alone with ``distill(keys[i], ..., out_dir=out_dir/exp_00i)``) and metrics under ``out_dir/exp_00i``; a
    rerun resumes from the newest step every experiment has. evaluator(images (E,...), labels, step) -> dict of (E,)
    arrays, called every ``config.eval_every`` steps and at the end (validation data only).
    """
    keys = jnp.asarray(keys)
    if keys.ndim != 1 or not jnp.issubdtype(keys.dtype, jax.dtypes.prng_key):
        raise JaxddError("keys must be a 1-D array of jax.random.key keys, e.g. "
                         "jax.random.split(jax.random.key(0), num_experiments)")
    num = int(keys.shape[0])
    states, tx = init_states(keys, objective, param, pool, config, hparams)
    k = pool.num_classes
    run_obj, run_pool, shardings, place = objective, pool, None, lambda s: s
    if mesh is not None:
        if num % shd.axis_size(mesh, shd.EXP):
            raise JaxddError(f"{num} experiments do not split over the mesh's exp axis of "
                             f"{shd.axis_size(mesh, shd.EXP)}; make_mesh(num_exp={num}) picks a fitting one")
        run_obj = shd.shard_objective(objective, mesh, syn=syn_sharding)
        run_pool = shd.shard_pool(pool, mesh, split=split_pool)
        shardings = shd.state_sharding(states, mesh)
        place = lambda s: shd.put(s, shardings)  # noqa: E731
        states = place(states)
        keys = shd.put(keys, shd.leading_sharding(keys, mesh))
    out_dirs = []
    if out_dir is not None:
        for i in range(num):
            exp_dir(out_dir, i).mkdir(parents=True, exist_ok=True)
            out_dirs.append(exp_dir(out_dir, i))
    runs = _Runs(num, True, _take_fn(mesh), lambda st: decode_many(param, st, k, mesh))
    states, histories, diverged = _drive(runs, states, make_multi_step(run_obj, param, tx, mesh, shardings),
                                         run_pool, keys, config, name=objective.name, out_dirs=out_dirs,
                                         evaluator=evaluator, callbacks=callbacks, place=place)
    images, labels = decode_many(param, states, k, mesh)
    images, labels = np.asarray(jax.device_get(images)), np.asarray(jax.device_get(labels))
    for i in range(num):
        if not np.all(np.isfinite(images[i])):
            diverged.add(i)
    return MultiResult(states, images, labels, histories, sorted(diverged))
