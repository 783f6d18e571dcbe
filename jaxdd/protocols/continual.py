"""Class-incremental continual learning on condensed memories (docs/methods.md section 9.1; GDumb-style).

For each seed, the classes are put in a random order (``jax.random.permutation(jax.random.key(seed), K)``) and split
into ``steps`` groups. At step s only the new classes' real training data are seen; they are condensed into a set
of the step's budget (``ipc`` pixel images per class worth of floats), made independently of earlier steps, and
added to the memory (the union of all sets so far). A fresh network with all K outputs from the start is trained
from scratch on the whole memory and tested on the test images of every class seen so far (argmax over all K
outputs). Accuracy per step is reported as mean and std over (networks x seeds).

Memory builders ("methods"):
- ``random``: a random real subset of ``ipc`` images per class.
- ``herding``: ``ipc`` images per class chosen by herding (Welling 2009) on the embeddings of a RANDOMLY
  INITIALISED ConvNet (untrained; a fresh one per step, ``herding_model``): greedily add the image that keeps the
  mean of the chosen embeddings closest to the class mean.
- any registered distillation method name (``dm``, ``dsa``, ...): pixel images, the method's defaults.
- ``<method>@<parameterization>`` (e.g. ``dm@low_rank``): the method through any registered parameterization
  (``jaxdd.register_parameterization``); ``low_rank`` gets rank ``rank`` and init ``lowrank_init`` (default the
  paper's noise), so it stores floor(ipc*h*w / (r*(h+w))) images per class. ``lowrank_<method>`` (the paper's
  name, ``lowrank_dm``) is an alias of ``<method>@low_rank``.

Labels: each step's set is distilled on a pool holding only the step's classes with labels remapped to 0..s-1
(the objective is built with ``num_classes = s``); the decoded labels are mapped back to the global class ids
before they enter the memory, so the memory and the evaluation use global labels.

Normalisation uses the dataset's conventional mean/std (fixed constants, as the reference code does).

    jaxdd continual --dataset fashion_mnist --steps 5 --ipc 10 --seeds 3 --out runs/cl_fmnist
"""
from __future__ import annotations

import dataclasses
import json
import time
import zlib
from pathlib import Path
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxdd import augment as aug
from jaxdd.types import JaxddError, PRNGKey

BASELINES = ("random", "herding")
LOW_RANK_ALIAS = "lowrank_"  # lowrank_<method> = <method>@low_rank (the name the paper's tables use)


def parse_builder(name: str) -> tuple[str, str]:
    """(method, parameterization) of a distilling memory builder: "dm" -> ("dm", "pixels"), "dm@low_rank" or its
    alias "lowrank_dm" -> ("dm", "low_rank")."""
    if "@" in name:
        method, _, param = name.partition("@")
        return method, param
    if name.startswith(LOW_RANK_ALIAS):
        return name[len(LOW_RANK_ALIAS):], "low_rank"
    return name, "pixels"
_BUILT: dict = {}


@dataclasses.dataclass(frozen=True)
class ContinualConfig:
    """The protocol's settings. ``eval_*``: how each fresh network is trained on the memory (docs/methods.md 9.1:
    1000 epochs, DSA for every memory builder; 3 networks per seed). ``iterations``/``real_per_class``/``lr_img``:
    distillation overrides (None: the method's defaults)."""

    steps: int = 5
    ipc: int = 10
    seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] = ("random", "herding", "dm", "lowrank_dm")
    rank: int = 2
    lowrank_init: str = "noise"
    iterations: int | None = None
    real_per_class: int | None = None
    lr_img: float | None = None
    method_options: dict = dataclasses.field(default_factory=dict)
    model: str = "ConvNet"
    model_kwargs: dict = dataclasses.field(default_factory=dict)
    herding_model: str | None = None  # the network whose random-init embeddings herding uses (None: ``model``)
    herding_candidates: int | None = None  # herd among at most this many random images per class (None: all)
    eval_models: int = 3
    eval_epochs: int = 1000
    eval_augment: str | None = aug.DSA_DEFAULT

    def __post_init__(self):
        if self.steps < 1 or self.ipc < 1 or not self.seeds or not self.methods:
            raise JaxddError("steps and ipc must be >= 1, and seeds and methods non-empty")


def class_order(seed: int, num_classes: int) -> np.ndarray:
    """The seed's class order: a permutation of 0..K-1 (jax.random, so it is the same on every platform)."""
    return np.asarray(jax.random.permutation(jax.random.key(seed), num_classes))


def split_steps(order: Sequence[int], steps: int) -> list[np.ndarray]:
    order = np.asarray(order)
    if len(order) % steps:
        raise JaxddError(f"{len(order)} classes cannot be split into {steps} equal steps; choose --steps dividing "
                         f"{len(order)}")
    return list(order.reshape(steps, -1))


# ----------------------------------------------------------------------------------------------------- herding


def herding_select(features: jax.Array, k: int) -> jax.Array:
    """Indices (k,) of ``k`` distinct rows of ``features`` (n, d) chosen by herding towards their mean.

    At step t the chosen row minimises || mu - (sum of the t chosen + f_i) / (t + 1) ||; chosen rows are excluded."""
    features = jnp.asarray(features, jnp.float32)
    n = features.shape[0]
    if k > n:
        raise JaxddError(f"herding asked for {k} of {n} images")
    mu = features.mean(0)

    def body(t, carry):
        total, chosen, taken = carry
        dist = jnp.sum(jnp.square(mu[None] - (total[None] + features) / (t + 1)), axis=1)
        i = jnp.argmin(jnp.where(taken, jnp.inf, dist))
        return total + features[i], chosen.at[t].set(i), taken.at[i].set(True)

    init = (jnp.zeros_like(mu), jnp.zeros((k,), jnp.int32), jnp.zeros((n,), bool))
    return jax.lax.fori_loop(0, k, body, init)[1]


def _embed_fn(module):
    from jaxdd.models import apply_model

    @jax.jit
    def embed(variables, x):
        return apply_model(module, variables, x, train=False, features=True).features["embedding"]

    return embed


def herding_subset(key: PRNGKey, images: np.ndarray, labels: np.ndarray, classes: Sequence[int], ipc: int, *,
                   model: str = "ConvNet", model_kwargs: dict | None = None, candidates: int | None = None,
                   batch: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Herding of ``ipc`` images per class (class-major, global labels) on a random ConvNet's embeddings."""
    from jaxdd.models import get_model, init_model

    module = get_model(model, max(2, len(classes)), **(model_kwargs or {}))
    k_net, k_cand = jax.random.split(key)
    variables = init_model(module, k_net, images.shape[1:])
    embed = _embed_fn(module)
    xs, ys = [], []
    for j, c in enumerate(classes):
        idx = np.flatnonzero(labels == c)
        if candidates is not None and idx.size > candidates:
            idx = np.sort(np.asarray(jax.random.choice(jax.random.fold_in(k_cand, j), idx, (candidates,),
                                                       replace=False)))
        feats = jnp.concatenate([embed(variables, jnp.asarray(images[idx[i:i + batch]]))
                                 for i in range(0, idx.size, batch)])
        pick = idx[np.asarray(herding_select(feats, ipc))]
        xs.append(images[pick])
        ys.append(np.full(ipc, c, np.int32))
    return np.concatenate(xs), np.concatenate(ys)


def random_real_subset(key: PRNGKey, images: np.ndarray, labels: np.ndarray, classes: Sequence[int], ipc: int
                       ) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for j, c in enumerate(classes):
        idx = np.flatnonzero(labels == c)
        pick = np.asarray(jax.random.choice(jax.random.fold_in(key, j), idx, (ipc,), replace=False))
        xs.append(images[pick])
        ys.append(np.full(ipc, c, np.int32))
    return np.concatenate(xs), np.concatenate(ys)


# ------------------------------------------------------------------------------------------------- distillation


def condense_classes(key: PRNGKey, method: str, images: np.ndarray, labels: np.ndarray, classes: Sequence[int],
                     config: ContinualConfig, *, dataset: str = "", preprocess=None
                     ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Distil the real images of ``classes`` only with ``method`` ("dm", "dm@low_rank", ...) at ``config.ipc``.

    Returns (images (n, h, w, c), global labels (n,), info). The pool's labels are remapped to 0..len(classes)-1."""
    import dataclasses as dc

    from jaxdd.distill import DistillConfig, distill, make_pool
    from jaxdd.methods import MethodContext, get_method, resolve_options
    from jaxdd.synthetic import make_parameterization

    base, param_name = parse_builder(method)
    spec = get_method(base)
    classes = np.asarray(classes)
    mask = np.isin(labels, classes)
    local = np.searchsorted(np.sort(classes), labels[mask])  # sorted-classes position
    remap = np.sort(classes)
    s = len(classes)
    pool = make_pool(images[mask], local, s)
    shape = tuple(int(d) for d in images.shape[1:])
    given = {k: v for k, v in config.method_options.items() if k in {o.name for o in spec.options}}
    if config.real_per_class is not None and "real_per_class" in {o.name for o in spec.options}:
        given["real_per_class"] = config.real_per_class
    opts = resolve_options(spec, given)
    options = {"rank": config.rank, "init": config.lowrank_init} if param_name == "low_rank" else {}
    param = make_parameterization(param_name, ipc=config.ipc, image_shape=shape, num_classes=s,
                                  **{"init": spec.defaults.get("init", "real"), **options})
    k_build, k_run = jax.random.split(key)
    fields = {f.name for f in dc.fields(DistillConfig)}
    kw = {k: v for k, v in spec.defaults.items() if k in fields}
    if isinstance(kw.get("lrs"), dict):
        kw["lrs"] = tuple(kw["lrs"].items())
    if config.iterations is not None:
        kw["iterations"] = config.iterations
    if config.lr_img is not None:
        kw["lr_img"] = config.lr_img
    kw.update(progress=False, eval_every=0)
    dconfig = DistillConfig(**kw)
    # One objective and parameterization per (method, step size, settings), reused by every step and seed, so the
    # driver's compiled step is reused too (same-shaped pools do not recompile). Objectives used here must therefore
    # not capture the pool they were built with (DM, DC, DSA do not).
    cache_key = (method, s, shape, len(pool.images), pool.index.table.shape, repr(opts), repr(dconfig),
                 config.rank, config.lowrank_init, config.ipc, config.model, repr(config.model_kwargs))
    if cache_key not in _BUILT:
        ctx = MethodContext(s, shape, param.images_per_class, config.model, dict(config.model_kwargs), opts,
                            dataset, pool, preprocess, k_build)
        _BUILT[cache_key] = (spec.build(ctx), param)
    objective, param = _BUILT[cache_key]
    t0 = time.perf_counter()
    try:
        res = distill(k_run, objective, param, pool, dconfig)
    except JaxddError as e:
        raise JaxddError(f"{method} at a continual step: {e}; lower --lr-img") from None
    y = np.asarray(res.labels)
    if y.ndim != 1:
        raise JaxddError(f"continual learning keeps hard labels; method {method} learned soft labels")
    info = {"images_per_class": param.images_per_class, "floats": int(param.floats(res.state.syn["data"])),
            "seconds": time.perf_counter() - t0, "final_loss": res.history[-1]["loss"] if res.history else None}
    return np.asarray(res.images), remap[y].astype(np.int32), info


def build_step_set(key: PRNGKey, method: str, images, labels, classes, config: ContinualConfig, **kw):
    if method == "random":
        x, y = random_real_subset(key, images, labels, classes, config.ipc)
        return x, y, {"images_per_class": config.ipc}
    if method == "herding":
        model = config.herding_model or config.model
        x, y = herding_subset(key, images, labels, classes, config.ipc, model=model,
                              model_kwargs=config.model_kwargs, candidates=config.herding_candidates)
        return x, y, {"images_per_class": config.ipc, "features": f"random-init {model} embedding"}
    return condense_classes(key, method, images, labels, classes, config, **kw)


def _method_key(seed: int, method: str, step: int) -> PRNGKey:
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), zlib.crc32(method.encode()) & 0x7FFFFFFF),
                              step)


# ----------------------------------------------------------------------------------------------------- protocol


def run_continual(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                  num_classes: int, config: ContinualConfig, *, out_dir: str | None = None, dataset: str = "",
                  preprocess=None, log: Callable[[str], None] | None = print) -> dict:
    """The protocol on normalised arrays. Returns {"config", "results": {method: {"per_seed": {seed: [...]}, "mean":
    [...], "std": [...]}}}. With ``out_dir``, finished (seed, method, step) cells and their sets are saved and a
    rerun resumes from them (``out_dir/continual.json``, ``out_dir/sets/``)."""
    from jaxdd.evaluate import evaluate_synthetic
    from jaxdd.train import TrainProtocol

    x_train = np.asarray(x_train, np.float32)
    y_train = np.asarray(y_train, np.int32)
    protocol = TrainProtocol(epochs=config.eval_epochs, augment=config.eval_augment or None)
    out = Path(out_dir) if out_dir else None
    cells: dict = {}
    if out is not None:
        from jaxdd.fileio import resume_run

        legacy = None
        if (out / "continual.json").is_file() and not (out / "run.json").exists():  # written by an older jaxdd
            old = json.loads((out / "continual.json").read_text())
            legacy = {"dataset": old.get("dataset"), "num_classes": old.get("num_classes"), **old.get("config", {})}
        # the saved cells and sets are only valid for the same protocol: any change is refused, not mixed in
        resume_run(out, "continual", {"dataset": dataset, "num_classes": num_classes, **dataclasses.asdict(config)},
                   markers=("continual.json", "sets"), legacy=legacy)
        (out / "sets").mkdir(parents=True, exist_ok=True)
        if (out / "continual.json").exists():
            cells = json.loads((out / "continual.json").read_text()).get("cells", {})
    record = {"config": dataclasses.asdict(config), "num_classes": num_classes, "dataset": dataset,
              "orders": {}, "cells": cells}

    def save():
        if out is not None:
            record["results"] = summarise(record["cells"], config)
            (out / "continual.json").write_text(json.dumps(record, indent=1))

    for seed in config.seeds:
        order = class_order(seed, num_classes)
        groups = split_steps(order, config.steps)
        record["orders"][str(seed)] = [int(c) for c in order]
        for method in config.methods:
            mem_x, mem_y = [], []
            for step, classes in enumerate(groups):
                name = f"{seed}/{method}/{step}"
                set_path = out / "sets" / f"seed{seed}_{method}_step{step}.npz" if out is not None else None
                if set_path is not None and set_path.exists():
                    z = np.load(set_path)
                    sx, sy, info = z["x"], z["y"], cells.get(name, {}).get("set", {})
                else:
                    sx, sy, info = build_step_set(_method_key(seed, method, step), method, x_train, y_train,
                                                  classes, config, dataset=dataset, preprocess=preprocess)
                    if set_path is not None:
                        np.savez(set_path, x=sx, y=sy)
                mem_x.append(sx)
                mem_y.append(sy)
                if name in cells and "accuracies" in cells[name]:
                    continue
                seen = np.concatenate(groups[:step + 1])
                test_mask = np.isin(y_test, seen)
                t0 = time.perf_counter()
                res = evaluate_synthetic(jax.random.fold_in(_method_key(seed, method, step), 1 << 20),
                                         np.concatenate(mem_x), np.concatenate(mem_y), x_test[test_mask],
                                         y_test[test_mask], num_classes=num_classes, model=config.model,
                                         num_models=config.eval_models, protocol=protocol,
                                         model_kwargs=config.model_kwargs or None)
                cells[name] = {"seed": seed, "method": method, "step": step, "classes": [int(c) for c in classes],
                               "memory_images": int(sum(len(m) for m in mem_x)), "set": info,
                               "accuracies": [float(a) for a in res.accuracies],
                               "eval_seconds": time.perf_counter() - t0}
                if log:
                    log(f"seed {seed} {method:>12s} step {step + 1}/{config.steps}: memory "
                        f"{cells[name]['memory_images']} images, acc {100 * res.mean:.2f} +- {100 * res.std:.2f} %")
                save()
    record["results"] = summarise(cells, config)
    save()
    return record


def summarise(cells: dict, config: ContinualConfig) -> dict:
    """Per method: accuracy per step, mean and std over all (seed, network) accuracies, and per-seed means."""
    out = {}
    for method in config.methods:
        per_seed = {}
        mean, std, n = [], [], []
        for step in range(config.steps):
            accs = []
            for seed in config.seeds:
                c = cells.get(f"{seed}/{method}/{step}")
                if c and "accuracies" in c:
                    accs += c["accuracies"]
                    per_seed.setdefault(str(seed), []).append(float(np.mean(c["accuracies"])))
            if not accs:
                break
            mean.append(float(np.mean(accs)))
            std.append(float(np.std(accs)))
            n.append(len(accs))
        out[method] = {"mean": mean, "std": std, "n": n, "per_seed": per_seed}
    return out


def plot_continual(record: dict, path, title: str = "") -> None:
    from jaxdd.plots import plot_curves

    curves = {}
    for method, r in record["results"].items():
        if r["mean"]:
            steps = list(range(1, len(r["mean"]) + 1))
            curves[method] = (steps, [100 * v for v in r["mean"]], [100 * v for v in r["std"]])
    plot_curves(curves, path, "step (classes seen = step x K/steps)", "test accuracy on seen classes (%)", title)


def continual_learning(dataset: str, config: ContinualConfig, *, out_dir: str | None = None,
                       data_dir: str | None = None, log: Callable[[str], None] | None = print) -> dict:
    """Load ``dataset`` (train and test splits, the dataset's mean/std), run the protocol, plot to out_dir."""
    from jaxdd.data import apply_preprocess, fit_preprocess, load

    train = load(dataset, "train", data_dir)
    test = load(dataset, "test", data_dir)
    pre = fit_preprocess(train.images, train.mean, train.std)
    x_train = np.asarray(apply_preprocess(pre, train.images))
    x_test = np.asarray(apply_preprocess(pre, test.images))
    record = run_continual(x_train, train.labels, x_test, test.labels, train.num_classes, config, out_dir=out_dir,
                           dataset=dataset, preprocess=pre, log=log)
    if out_dir is not None:
        plot_continual(record, Path(out_dir) / "continual.png",
                       f"{dataset}: {config.steps} steps, budget {config.ipc}/class")
    return record


def check_methods(methods: Sequence[str]) -> None:
    """Refuse an unknown memory builder before anything runs (not after the others have spent their time)."""
    from jaxdd.methods import available_methods
    from jaxdd.synthetic import available_parameterizations

    known, params = set(available_methods()), set(available_parameterizations())
    bad = [m for m in methods if m not in BASELINES and (parse_builder(m)[0] not in known or
                                                         parse_builder(m)[1] not in params)]
    if bad:
        raise JaxddError(f"unknown memory builders {bad} in --methods; use random, herding, a method "
                         f"({', '.join(sorted(known))}), <method>@<parameterization> "
                         f"({', '.join(sorted(params))}) or lowrank_<method>")
