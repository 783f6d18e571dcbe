"""One call each from Python for what the CLI does: ``distill_dataset`` and ``evaluate_run``.

    from jaxdd import distill_dataset, evaluate_run
    out = distill_dataset("dm", "fashion_mnist", ipc=10, iterations=200, seed=0, out_dir="runs/dm10")
    result = evaluate_run("runs/dm10", num_models=5, epochs=300)

``distill_dataset`` loads the training split, carves a class-stratified validation split from it (the test split is
never seen during distillation), fits the preprocessing (the dataset's mean/std, or ZCA), builds the method's
objective and the parameterization, runs ``jaxdd.distill.distill`` (resuming from ``out_dir`` if it holds a
checkpoint) and writes the artifact. ``evaluate_run`` trains fresh networks on the artifact and tests them on the
test split under the saved preprocessing.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxdd import __version__
from jaxdd.checkpoint import check_artifact, load_artifact, save_artifact
from jaxdd.data import apply_preprocess, fit_preprocess, load, split_train_val
from jaxdd.distill import DistillConfig, distill, make_pool
from jaxdd.evaluate import EvalResult, evaluate_random_subset, evaluate_synthetic
from jaxdd.methods import MethodContext, get_method, resolve_options
from jaxdd.synthetic import pixel_budget, pixels, tree_floats
from jaxdd.train import TrainProtocol, default_protocol
from jaxdd.types import JaxddError

_PARAMS: dict[str, Callable[..., Any]] = {}


def register_parameterization(name: str, factory: Callable[..., Any]) -> None:
    """factory(ipc=..., image_shape=..., num_classes=..., init=..., **options) -> Parameterization."""
    _PARAMS[name] = factory


register_parameterization("pixels", lambda ipc, init, **_: pixels(ipc, init))


def available_parameterizations() -> list[str]:
    return sorted(_PARAMS)


def _val_per_class(n_train: int, num_classes: int) -> int:
    """Validation images per class carved from the training split: 10 % of a class, at most 500."""
    return int(min(500, max(1, n_train // num_classes // 10)))


def prepare_data(dataset: str, *, data_dir=None, zca: bool = False, val_per_class: int | None = None,
                 seed: int = 0):
    """(train, val, preprocess, normalised train images, normalised val images) for a dataset."""
    full = load(dataset, "train", data_dir)
    vpc = _val_per_class(full.num_examples, full.num_classes) if val_per_class is None else val_per_class
    train, val = split_train_val(full, vpc, seed) if vpc > 0 else (full, None)
    pre = fit_preprocess(train.images, zca=True) if zca else fit_preprocess(train.images, full.mean, full.std)
    x_train = apply_preprocess(pre, train.images)
    x_val = apply_preprocess(pre, val.images) if val is not None else None
    return train, val, pre, x_train, x_val


def method_config(spec, iterations: int | None = None, overrides: dict | None = None, eval_every: int = 0,
                  progress: bool = True) -> DistillConfig:
    """The DistillConfig of a method: its paper defaults, then ``iterations`` and ``overrides`` on top."""
    fields = {f.name for f in dataclasses.fields(DistillConfig)}
    kw = {k: v for k, v in spec.defaults.items() if k in fields}
    if iterations is not None:
        kw["iterations"] = iterations
    kw.update(overrides or {})
    kw.setdefault("eval_every", eval_every)
    kw.setdefault("progress", progress)
    if "lrs" in kw:
        kw["lrs"] = tuple(tuple(x) for x in (kw["lrs"].items() if isinstance(kw["lrs"], dict) else kw["lrs"]))
    return DistillConfig(**kw)


# DistillConfig fields that change when or how a run is saved or logged, not what it computes
RUNTIME_FIELDS = ("checkpoint_every", "checkpoint_seconds", "log_every", "eval_every", "keep_checkpoints", "progress")


def run_config(method: str, dataset: str, ipc: int, *, seed: int, opts: dict, config: DistillConfig, model: str,
               model_kwargs: dict | None, param: str, param_options: dict | None, init: str, zca: bool,
               val_per_class: int | None) -> dict:
    """The resolved configuration a distillation run is created with (``run.json``): everything that decides the
    synthetic set's bits (not where the data live, the cadences of checkpoints, logs or validation)."""
    return {"method": method, "method_options": opts, "dataset": dataset, "zca": zca, "val_per_class": val_per_class,
            "model": model, "model_kwargs": dict(model_kwargs or {}), "param": param,
            "param_options": dict(param_options or {}), "init": init, "ipc": ipc, "seed": seed,
            **{k: v for k, v in dataclasses.asdict(config).items() if k not in RUNTIME_FIELDS}}


def start_run(out_dir, kind: str, cfg: dict, config: DistillConfig) -> None:
    """Create or check the run directory (``jaxdd.checkpoint.resume_run``): a larger ``iterations`` extends a run
    whose learning rates do not depend on it (schedule "constant"); any other change is refused."""
    from jaxdd.checkpoint import resume_run

    extendable = ("iterations",) if config.schedule == "constant" else ()
    resume_run(out_dir, kind, cfg, extendable=extendable,
               markers=("checkpoints", "synthetic.npz", "exp_000/checkpoints"))


def distill_dataset(method: str, dataset: str, ipc: int, *, out_dir: str | None = None, seed: int = 0,
                    iterations: int | None = None, model: str = "ConvNet", model_kwargs: dict | None = None,
                    param: str = "pixels", param_options: dict | None = None, init: str | None = None,
                    method_options: dict | None = None, config_overrides: dict | None = None,
                    zca: bool = False, data_dir: str | None = None, val_per_class: int | None = None,
                    eval_every: int = 0, eval_models: int = 2, eval_epochs: int = 100,
                    progress: bool = True) -> dict:
    """Distil ``dataset`` with ``method`` at a budget of ``ipc`` pixel images per class; returns a summary dict.

    Rerunning with the same ``out_dir`` resumes from its last checkpoint when the configuration is the same (a larger
    ``iterations`` extends the run; any other change raises, see ``start_run``). ``eval_every`` > 0 evaluates the set on
    the validation split (``eval_models`` networks, ``eval_epochs`` epochs) during distillation.
    """
    spec = get_method(method)
    opts = resolve_options(spec, method_options or {})
    if param not in _PARAMS:
        raise JaxddError(f"unknown parameterization {param!r}; available: {available_parameterizations()}")
    init = init or spec.defaults.get("init", "real")
    config = method_config(spec, iterations, config_overrides, eval_every, progress)
    if out_dir is not None:
        start_run(out_dir, "distill", run_config(
            method, dataset, ipc, seed=seed, opts=opts, config=config, model=model, model_kwargs=model_kwargs,
            param=param, param_options=param_options, init=init, zca=zca, val_per_class=val_per_class), config)
    train, val, pre, x_train, x_val = prepare_data(dataset, data_dir=data_dir, zca=zca,
                                                   val_per_class=val_per_class, seed=seed)
    k = train.num_classes
    shape = train.image_shape
    parameterization = _PARAMS[param](ipc=ipc, image_shape=shape, num_classes=k, init=init,
                                      **(param_options or {}))
    key = jax.random.key(seed)
    k_build, k_run, k_eval = jax.random.split(key, 3)
    pool = make_pool(x_train, train.labels, k)
    ctx = MethodContext(k, shape, parameterization.images_per_class, model, dict(model_kwargs or {}), opts,
                        dataset, pool, pre, k_build, data_dir)
    objective = spec.build(ctx)
    eval_augment = spec.defaults.get("eval_augment")

    evaluator = None
    if config.eval_every and val is not None:
        protocol = default_protocol(eval_augment, epochs=eval_epochs)
        y_val = jnp.asarray(val.labels)

        def evaluator(images, labels, step):
            res = evaluate_synthetic(jax.random.fold_in(k_eval, step), images, labels, x_val, y_val,
                                     num_classes=k, model=model, num_models=eval_models, protocol=protocol,
                                     model_kwargs=model_kwargs)
            return {"val_acc": res.mean, "val_acc_std": res.std}

    result = distill(k_run, objective, parameterization, pool, config, out_dir=out_dir, evaluator=evaluator)
    budget = pixel_budget(k, ipc, shape)
    stored = tree_floats(result.state.syn["data"])
    if stored > budget:
        raise JaxddError(f"parameterization {param} stores {stored} floats, over the pixel budget {budget}")
    meta = {
        "jaxdd_version": __version__, "method": method, "dataset": dataset, "ipc_budget": ipc,
        "images_per_class": parameterization.images_per_class, "num_images": int(result.images.shape[0]),
        "floats_stored": stored, "floats_budget": budget,
        "compression_vs_full": float(train.num_examples * math.prod(shape) / stored),
        "parameterization": {"name": parameterization.name, **parameterization.config},
        "model": model, "model_kwargs": model_kwargs or {}, "method_options": opts,
        "config": dataclasses.asdict(config), "steps_done": int(result.state.step), "seed": seed,
        "key": f"jax.random.key({seed})",
        "zca": zca, "eval_augment": eval_augment, "num_classes": k, "class_names": list(train.class_names),
        "image_shape": list(shape), "val_per_class": None if val is None else int(val.num_examples // k),
        "final_metrics": result.history[-1] if result.history else {},
    }
    if spec.artifact_metadata is not None:
        meta.update(spec.artifact_metadata(jax.device_get(result.state.syn.get("extras", {})), opts))
    if out_dir is not None:
        save_artifact(out_dir, result.images, result.labels, pre, meta, class_names=train.class_names)
    return {**meta, "images": result.images, "labels": result.labels, "history": result.history}


def evaluate_run(out_dir: str, *, num_models: int = 5, epochs: int | None = None, model: str | None = None,
                 seed: int = 0, augment: str | None | bool = True, lr: float | None = None,
                 data_dir: str | None = None, baseline: bool = False, save: bool = True) -> dict:
    """Evaluate a finished run on the dataset's test split; writes ``out_dir/eval.json`` when ``save``.

    augment=True uses the method's standard evaluation augmentation (DSA for DSA/DM/MTT); a string overrides it;
    False/None trains without augmentation. epochs defaults to 1000 with augmentation, 300 without (METHODS.md).
    lr defaults to 0.01, or the learned inner lr the artifact records (MTT). baseline=True also evaluates a random
    real subset of the same number of images per class under the same protocol.
    """
    art = load_artifact(out_dir)
    meta = art.metadata
    dataset = meta.get("dataset")
    if dataset is None:
        raise JaxddError(f"{out_dir}/synthetic.json names no dataset; cannot find its test split")
    test = load(dataset, "test", data_dir)
    check_artifact(art, test.num_classes, test.image_shape, where=f"{out_dir}/synthetic.npz")
    x_test = apply_preprocess(art.preprocess, test.images)
    strategy = meta.get("eval_augment") if augment is True else (augment or None)
    lr = lr if lr is not None else float(meta.get("eval_lr", 0.01))
    protocol = default_protocol(strategy, epochs=epochs, lr=lr)
    model = model or meta.get("model", "ConvNet")
    key = jax.random.key(seed)
    res = evaluate_synthetic(key, art.images, art.labels, x_test, test.labels, num_classes=test.num_classes,
                             model=model, num_models=num_models, protocol=protocol,
                             model_kwargs=meta.get("model_kwargs") or None)
    out = {"synthetic": res.to_dict(), "dataset": dataset, "split": "test", "seed": seed}
    if baseline:
        train = load(dataset, "train", data_dir)
        ipc = int(meta.get("images_per_class", art.images.shape[0] // test.num_classes))
        base = evaluate_random_subset(jax.random.fold_in(key, 1), apply_preprocess(art.preprocess, train.images),
                                      train.labels, x_test, test.labels, num_classes=test.num_classes, ipc=ipc,
                                      num_models=num_models, model=model, protocol=protocol)
        out["random_subset"] = base.to_dict()
    if save:
        Path(out_dir, "eval.json").write_text(json.dumps(out, indent=2))
    return out
