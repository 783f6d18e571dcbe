"""The dataset-level entry points: one call each from Python for what the CLI does (``distill_dataset``,
``evaluate_run``, ``distill_many_dataset``, ``evaluate_many_runs``, ``make_experts``, ``train_teacher``,
``relabel_evaluate_run``). The top layer of the library: only the public names (``jaxdd/__init__``) and the CLI import it.

    from jaxdd import distill_dataset, evaluate_run
    out = distill_dataset("dm", "fashion_mnist", ipc=10, iterations=200, seed=0, out_dir="runs/dm10")
    result = evaluate_run("runs/dm10")                        # 5 networks, the method's epochs and augmentation
    result = evaluate_run("runs/dm10", paper_protocol=True)   # the paper's protocol: 20 networks

``distill_dataset`` loads the training split, carves a class-stratified validation split from it (the test split is
never seen during distillation), fits the preprocessing (the dataset's mean/std, or ZCA), builds the method's
objective and the parameterization, runs ``jaxdd.distill.distill`` (resuming from ``out_dir`` if it holds a
checkpoint) and writes the artifact. ``evaluate_run`` trains fresh networks on the artifact and tests them on the
test split under the saved preprocessing.

Own data and models: ``dataset`` may be a name (built in or added with ``jaxdd.register_dataset``), a
``jaxdd.Dataset`` or a pair of arrays ``(images, labels)``; ``model`` a registered name or any flax module satisfying
``jaxdd.models.MODEL_CONTRACT``. A run made from arrays records their shape, classes and sha256 instead of a name, so
``evaluate_run(out_dir, test=(x_test, y_test))`` takes the test arrays; a run made with an own module needs
``evaluate_run(out_dir, model=module)``.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxdd import __version__
from jaxdd import sharding as shd
from jaxdd.augment import DSA_DEFAULT
from jaxdd.checkpoint import Checkpointer, check_artifact, load_artifact, load_teacher, save_artifact, save_teacher
from jaxdd.data import (apply_preprocess, as_dataset, fingerprint, fit_preprocess, load, preprocess_to_arrays,
                        split_train_val)
from jaxdd.data.custom import from_arrays, is_array_pair
from jaxdd.distill import EXP_DIR, DistillConfig, distill, distill_many, exp_dir, make_pool
from jaxdd.evaluate import (DEFAULT_EVAL_MODELS, EvalResult, evaluate_random_subset, evaluate_synthetic,  # noqa: F401
                            paper_eval_models, standard_eval_augment)
from jaxdd.fileio import resume_run
from jaxdd.methods import MethodContext, get_method, resolve_options
from jaxdd.models import check_model, eval_module, get_model, init_model, model_name
from jaxdd.objectives.recover import RelabelProtocol, check_teacher, diversity, relabel_evaluate
from jaxdd.objectives.recover.teacher import TeacherConfig, _optimizer, fit_teacher, teacher_accuracy
from jaxdd.objectives.trajectory.experts import ExpertBuffer, ExpertProtocol, train_experts
from jaxdd.protocols.multi import evaluate_many
from jaxdd.synthetic import (PARAMETERIZATIONS, available_parameterizations, pixel_budget,  # noqa: F401
                             make_parameterization, register_parameterization, tree_floats)
from jaxdd.train import TrainProtocol, default_protocol  # noqa: F401
from jaxdd.types import JaxddError

_PARAMS = PARAMETERIZATIONS  # the parameterization registry (jaxdd.synthetic.registry), by its old name

# Methods whose experts / teacher files record the model by name (a module must be registered to be used there).
_NEEDS_MODEL_NAME = ("mtt", "sre2l", "dwa")


def _val_per_class(n_train: int, num_classes: int) -> int:
    """Validation images per class carved from the training split: 10 % of a class, at most 500."""
    return int(min(500, max(1, n_train // num_classes // 10)))


def prepare_data(dataset, *, data_dir=None, zca: bool = False, val_per_class: int | None = None,
                 seed: int = 0):
    """(train, val, preprocess, normalised train images, normalised val images) for a dataset: a name, a
    ``Dataset`` or (images, labels) (see ``jaxdd.data.as_dataset``)."""
    full = as_dataset(dataset, "train", data_dir)
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
    elif "iterations" not in (overrides or {}):
        print(f"jaxdd: iterations not given: {spec.name} runs its paper's {kw['iterations']} (pass iterations= / "
              "--iterations for fewer)", file=sys.stderr)
    kw.update(overrides or {})
    kw.setdefault("eval_every", eval_every)
    kw.setdefault("progress", progress)
    if "lrs" in kw:
        kw["lrs"] = tuple(tuple(x) for x in (kw["lrs"].items() if isinstance(kw["lrs"], dict) else kw["lrs"]))
    return DistillConfig(**kw)


# DistillConfig fields that change when or how a run is saved or logged, not what it computes
RUNTIME_FIELDS = ("checkpoint_every", "checkpoint_seconds", "log_every", "eval_every", "keep_checkpoints", "progress")


def run_config(method: str, dataset, ipc: int, *, seed: int, opts: dict, config: DistillConfig, model: str,
               model_kwargs: dict | None, param: str, param_options: dict | None, init: str, zca: bool,
               val_per_class: int | None) -> dict:
    """The resolved configuration a distillation run is created with (``run.json``): everything that decides the
    synthetic set's bits (not where the data live, the cadences of checkpoints, logs or validation). ``dataset``: a
    name, or for arrays ``{"name", "sha256"}``; ``model``: a name (a module's class name)."""
    return {"method": method, "method_options": opts, "dataset": dataset, "zca": zca, "val_per_class": val_per_class,
            "model": model, "model_kwargs": dict(model_kwargs or {}), "param": param,
            "param_options": dict(param_options or {}), "init": init, "ipc": ipc, "seed": seed,
            **{k: v for k, v in dataclasses.asdict(config).items() if k not in RUNTIME_FIELDS}}


def start_run(out_dir, kind: str, cfg: dict, config: DistillConfig) -> None:
    """Create or check the run directory (``jaxdd.fileio.resume_run``): a larger ``iterations`` extends a run
    whose learning rates do not depend on it (schedule "constant"); any other change is refused."""

    extendable = ("iterations",) if config.schedule == "constant" else ()
    resume_run(out_dir, kind, cfg, extendable=extendable,
               markers=("checkpoints", "synthetic.npz", "exp_000/checkpoints"))


class _Prepared(NamedTuple):
    """Everything a distillation run needs, resolved and checked once for ``distill_dataset`` and
    ``distill_many_dataset`` (so every check applies to both)."""

    spec: Any
    opts: dict
    config: DistillConfig
    data_name: str  # the dataset's name (arrays: the name they were given)
    named: bool  # dataset given by name (else arrays or a Dataset object)
    full: Any  # the whole training split (jaxdd.Dataset)
    train: Any
    val: Any
    pre: Any
    x_val: Any
    parameterization: Any
    pool: Any
    objective: Any
    eval_augment: str | None
    keys: tuple  # (k_build, k_run, k_eval) of jax.random.key(seed)


def _prepare(kind: str, method: str, dataset, ipc: int, *, out_dir, seed: int, iterations, model, model_kwargs,
             param: str, param_options, init, method_options, config_overrides, zca: bool, data_dir, val_per_class,
             eval_every: int, progress: bool, extra_run_config: dict | None = None) -> _Prepared:
    """Resolve the method, options, configuration and parameterization; create or check the run directory
    (``start_run``); load and split the data; check the model and the float budget; build the objective."""
    spec = get_method(method)
    opts = resolve_options(spec, method_options or {})
    if param not in _PARAMS:
        raise JaxddError(f"unknown parameterization {param!r}; available: {available_parameterizations()}")
    init = init or spec.defaults.get("init", "real")
    config = method_config(spec, iterations, config_overrides, eval_every, progress)
    named = isinstance(dataset, str)
    full = as_dataset(dataset, "train", data_dir)
    if out_dir is not None and jax.process_index() == 0:
        data_id = dataset if named else {"name": full.name, "sha256": fingerprint(full)}
        start_run(out_dir, kind, {**run_config(
            method, data_id, ipc, seed=seed, opts=opts, config=config, model=model_name(model),
            model_kwargs=model_kwargs, param=param, param_options=param_options, init=init, zca=zca,
            val_per_class=val_per_class), **(extra_run_config or {})}, config)
    train, val, pre, x_train, x_val = prepare_data(full, data_dir=data_dir, zca=zca,
                                                   val_per_class=val_per_class, seed=seed)
    k, shape = train.num_classes, train.image_shape
    if not isinstance(model, str):
        if spec.name.split("+")[0] in _NEEDS_MODEL_NAME:
            raise JaxddError(f"method {method!r} saves the model by name with its experts or teacher; register your "
                             f"module first: jaxdd.register_model('{model_name(model)}', lambda num_classes, **kw: "
                             f"{model_name(model)}(num_classes=num_classes, **kw)), then pass "
                             f"model='{model_name(model)}'")
        check_model(get_model(model, k, **(model_kwargs or {})), shape, k)
    parameterization = make_parameterization(param, ipc=ipc, image_shape=shape, num_classes=k, init=init,
                                             **(param_options or {}))
    keys = jax.random.split(jax.random.key(seed), 3)
    real = jax.ShapeDtypeStruct((k, parameterization.images_per_class, *shape), jnp.float32)
    stored = tree_floats(jax.eval_shape(parameterization.init, keys[0], real))
    if stored > pixel_budget(k, ipc, shape):
        raise JaxddError(f"parameterization {param} {parameterization.config} stores {stored} floats, over the "
                         f"budget of {ipc} pixel images per class ({pixel_budget(k, ipc, shape)} floats); lower its "
                         "rank or images per class")
    pool = make_pool(x_train, train.labels, k)
    data_name = dataset if named else full.name
    ctx = MethodContext(k, shape, parameterization.images_per_class, model, dict(model_kwargs or {}), opts,
                        data_name, pool, pre, keys[0], data_dir)
    # the paper's evaluation augmentation for this method, dataset and network (DC: DC-augmentation on MNIST or a
    # ConvNetBN); the validation evaluation uses it, and the artifact records it for ``evaluate_run``
    eval_augment = standard_eval_augment(method, data_name, model_name(model))
    return _Prepared(spec, opts, config, data_name, named, full, train, val, pre, x_val, parameterization, pool,
                     spec.build(ctx), eval_augment, tuple(keys))


def _metadata(p: _Prepared, method: str, ipc: int, syn_data, steps_done: int, model, model_kwargs, zca: bool
              ) -> dict:
    """The artifact metadata a run's sets share (``synthetic.json``)."""
    k, shape = p.train.num_classes, p.train.image_shape
    stored = tree_floats(syn_data)
    meta = {
        "jaxdd_version": __version__, "method": method, "dataset": p.data_name if p.named else None,
        "ipc_budget": ipc, "images_per_class": p.parameterization.images_per_class,
        "num_images": k * p.parameterization.images_per_class, "floats_stored": stored,
        "floats_budget": pixel_budget(k, ipc, shape),
        "compression_vs_full": float(p.train.num_examples * math.prod(shape) / stored),
        "parameterization": {"name": p.parameterization.name, **p.parameterization.config},
        "model": model_name(model), "model_kwargs": model_kwargs or {}, "method_options": p.opts,
        "config": dataclasses.asdict(p.config), "steps_done": steps_done, "zca": zca, "eval_augment": p.eval_augment,
        "num_classes": k, "class_names": list(p.train.class_names), "image_shape": list(shape),
        "val_per_class": None if p.val is None else int(p.val.num_examples // k),
    }
    if not p.named:  # arrays or a Dataset object: no name to load them again by
        meta["data"] = {"name": p.full.name, "num_examples": p.full.num_examples, "sha256": fingerprint(p.full)}
    if not isinstance(model, str):
        meta["model_module"] = True  # an own flax module: evaluate_run needs it again (model=...)
    return meta


def distill_dataset(method: str, dataset, ipc: int, *, out_dir: str | None = None, seed: int = 0,
                    iterations: int | None = None, model="ConvNet", model_kwargs: dict | None = None,
                    param: str = "pixels", param_options: dict | None = None, init: str | None = None,
                    method_options: dict | None = None, config_overrides: dict | None = None,
                    zca: bool = False, data_dir: str | None = None, val_per_class: int | None = None,
                    eval_every: int = 0, eval_models: int = 2, eval_epochs: int = 100,
                    progress: bool = True, callbacks=()) -> dict:
    """Distil ``dataset`` with ``method`` at a budget of ``ipc`` pixel images per class; returns a summary dict
    (the artifact's metadata plus ``images``, ``labels``, ``history`` and ``preprocess``).

    ``dataset``: a name, a ``jaxdd.Dataset`` or arrays ``(images, labels)`` (uint8, or float in [0, 1]; see
    ``jaxdd.from_arrays``). ``model``: a registered name or a flax module satisfying the model contract.
    Rerunning with the same ``out_dir`` resumes from its last checkpoint when the configuration is the same (a larger
    ``iterations`` extends the run; any other change raises, see ``start_run``). ``eval_every`` > 0 evaluates the set
    on the validation split (``eval_models`` networks, ``eval_epochs`` epochs) during distillation. ``callbacks``:
    callables ``(step, metrics)`` called with every logged row (see ``jaxdd.distill.distill``).
    """
    p = _prepare("distill", method, dataset, ipc, out_dir=out_dir, seed=seed, iterations=iterations, model=model,
                 model_kwargs=model_kwargs, param=param, param_options=param_options, init=init,
                 method_options=method_options, config_overrides=config_overrides, zca=zca, data_dir=data_dir,
                 val_per_class=val_per_class, eval_every=eval_every, progress=progress)
    _, k_run, k_eval = p.keys
    k = p.train.num_classes
    evaluator = None
    if p.config.eval_every and p.val is not None:
        protocol = default_protocol(p.eval_augment, epochs=eval_epochs)
        y_val = jnp.asarray(p.val.labels)

        def evaluator(images, labels, step):
            res = evaluate_synthetic(jax.random.fold_in(k_eval, step), images, labels, p.x_val, y_val,
                                     num_classes=k, model=model, num_models=eval_models, protocol=protocol,
                                     model_kwargs=model_kwargs)
            return {"val_acc": res.mean, "val_acc_std": res.std}

    result = distill(k_run, p.objective, p.parameterization, p.pool, p.config, out_dir=out_dir, evaluator=evaluator,
                     callbacks=callbacks)
    meta = {**_metadata(p, method, ipc, result.state.syn["data"], int(result.state.step), model, model_kwargs, zca),
            "seed": seed, "key": f"jax.random.key({seed})",
            "final_metrics": result.history[-1] if result.history else {}}
    if p.spec.artifact_metadata is not None:
        meta.update(p.spec.artifact_metadata(jax.device_get(result.state.syn.get("extras", {})), p.opts))
    if out_dir is not None:
        save_artifact(out_dir, result.images, result.labels, p.pre, meta, class_names=p.train.class_names)
    return {**meta, "images": result.images, "labels": result.labels, "history": result.history, "preprocess": p.pre}


def evaluate_run(out_dir: str, *, num_models: int | None = None, epochs: int | None = None, model=None,
                 seed: int = 0, augment: str | None | bool = True, lr: float | None = None,
                 data_dir: str | None = None, baseline: bool = False, save: bool = True,
                 paper_protocol: bool = False, test=None, train=None) -> dict:
    """Evaluate a finished run on the dataset's test split; writes ``out_dir/eval.json`` when ``save``.

    num_models: networks trained (default ``DEFAULT_EVAL_MODELS`` = 5; with ``paper_protocol`` the paper's count,
    20, MTT 5). On GPU/TPU they train together (vmapped); on CPU one after the other (time linear in the count).
    augment=True uses the method's paper rule (``jaxdd.evaluate.standard_eval_augment``): DSA for DSA/DM/MTT; for
    DC, DC-augmentation on MNIST or on a ConvNetBN evaluation network, none otherwise. A string overrides it (a DSA
    strategy, or ``"dc:"`` + a DC-augmentation strategy); False/None trains without augmentation. epochs defaults
    to 1000 with augmentation, 300 without. lr defaults to 0.01, or the learned inner lr the artifact records (MTT).
    paper_protocol=True: the paper's number of networks, epochs, augmentation and lr; it refuses ``num_models``,
    ``epochs``, ``augment`` and ``lr`` (the evaluation network ``model`` may still be chosen). baseline=True also
    evaluates a random real subset of the same number of images per class under the same protocol.
    eval.json records the protocol (``synthetic.protocol``) and ``evaluation``: whether it was the paper's, the
    paper's network count, and where the augmentation came from.

    test / train: the test split (and for ``baseline`` the training split) as arrays ``(images, labels)`` in the
    units given to ``distill_dataset`` (or ``Dataset`` objects); required for a run distilled from arrays, optional
    (they replace the named dataset's splits) otherwise. model: a registered name or a flax module (required again
    for a run distilled with an own module); default: the run's model.
    """
    art = load_artifact(out_dir)
    meta = art.metadata
    dataset = meta.get("dataset")
    k_meta = meta.get("num_classes")

    def split_of(given, split):
        if given is None:
            if dataset is None:
                what = f"arrays (sha256 {meta['data']['sha256'][:12]}...)" if "data" in meta else "no named dataset"
                raise JaxddError(f"{out_dir} was distilled from {what}, so its {split} split cannot be loaded by name; "
                                 f"pass it: evaluate_run({str(out_dir)!r}, {split}=(x_{split}, y_{split})) with images "
                                 "in the units given to distill_dataset (uint8 or [0, 1])")
            return load(dataset, split, data_dir)
        if is_array_pair(given):
            return from_arrays(*given, num_classes=k_meta, split=split)
        return as_dataset(given, split, data_dir)

    if model is None and meta.get("model_module"):
        raise JaxddError(f"{out_dir} was distilled with your own flax module {meta.get('model')}; pass it again: "
                         f"evaluate_run({str(out_dir)!r}, model={meta.get('model')}(...))")
    method = meta.get("method")
    paper_models = paper_eval_models(method)
    if paper_protocol:
        given = {k: v for k, v in (("num_models", num_models), ("epochs", epochs), ("lr", lr)) if v is not None}
        if augment is not True:
            given["augment"] = augment
        if given:
            raise JaxddError(f"the paper protocol fixes the number of networks, the epochs, the augmentation and the "
                             f"lr; drop {', '.join(f'{k}={v!r}' for k, v in given.items())} or the paper protocol")
    if num_models is None:
        num_models = paper_models if paper_protocol else DEFAULT_EVAL_MODELS
    model = model if model is not None else meta.get("model", "ConvNet")
    paper_lr = float(meta.get("eval_lr", 0.01))
    paper = default_protocol(standard_eval_augment(method, dataset, model_name(model), meta.get("eval_augment")),
                             lr=paper_lr)
    if augment is True:
        strategy, augment_from = paper.augment, f"the paper's rule for {method} on {dataset} with {model_name(model)}"
    else:
        strategy, augment_from = augment or None, "given"
    protocol = default_protocol(strategy, epochs=epochs, lr=paper_lr if lr is None else lr)
    test_given = test is not None
    test = split_of(test, "test")
    check_artifact(art, test.num_classes, test.image_shape, where=f"{out_dir}/synthetic.npz")
    x_test = apply_preprocess(art.preprocess, test.images)
    key = jax.random.key(seed)
    res = evaluate_synthetic(key, art.images, art.labels, x_test, test.labels, num_classes=test.num_classes,
                             model=model, num_models=num_models, protocol=protocol,
                             model_kwargs=meta.get("model_kwargs") or None)
    evaluation = {"paper_protocol": protocol == paper and num_models == paper_models, "num_models": num_models,
                  "paper_num_models": paper_models, "epochs": protocol.epochs, "augment": protocol.augment,
                  "augment_from": augment_from}
    out = {"synthetic": res.to_dict(), "dataset": dataset, "split": "test", "seed": seed, "evaluation": evaluation}
    if test_given:
        out["test_sha256"] = fingerprint(test)
    if baseline:
        train = split_of(train, "train")
        ipc = int(meta.get("images_per_class", art.images.shape[0] // test.num_classes))
        base = evaluate_random_subset(jax.random.fold_in(key, 1), apply_preprocess(art.preprocess, train.images),
                                      train.labels, x_test, test.labels, num_classes=test.num_classes, ipc=ipc,
                                      num_models=num_models, model=model, protocol=protocol)
        out["random_subset"] = base.to_dict()
    if save:
        Path(out_dir, "eval.json").write_text(json.dumps(out, indent=2))
    return out


def relabel_evaluate_run(run_dir: str, teacher_dir: str, *, num_models: int = 3, model: str | None = None,
                         protocol=None, seed: int = 0, data_dir: str | None = None,
                         save: bool = True) -> dict:
    """Soft-label evaluation of a finished run (``jaxdd distill`` output) with a teacher; also the set's diversity
    under the teacher. ``protocol``: a ``jaxdd.objectives.recover.RelabelProtocol`` (default: DWA's CIFAR relabel
    recipe). Writes ``run_dir/relabel_eval.json`` when ``save``."""

    protocol = RelabelProtocol() if protocol is None else protocol

    art = load_artifact(run_dir)
    meta = art.metadata
    teacher = load_teacher(teacher_dir)
    k = int(teacher.meta["num_classes"])
    check_teacher(teacher, k, art.images.shape[1:], art.preprocess)
    test = load(meta.get("dataset") or teacher.meta["dataset"], "test", data_dir)
    x_test = apply_preprocess(art.preprocess, test.images)
    model = model or meta.get("model", "ConvNet")
    res = relabel_evaluate(jax.random.key(seed), art.images, teacher, x_test, test.labels, model=model,
                           model_kwargs=meta.get("model_kwargs") or None, num_models=num_models, protocol=protocol)
    out = {"soft_label": res, "teacher": str(teacher_dir), "teacher_test_accuracy": teacher.meta.get("test_accuracy"),
           "seed": seed}
    if int(meta.get("images_per_class", 1)) >= 2:
        out["diversity"] = diversity(teacher.module, teacher.variables, art.images, art.labels, k)
    if save:
        Path(run_dir, "relabel_eval.json").write_text(json.dumps(out, indent=2))
    return out


def train_teacher(dataset: str, model: str, out_dir, *, config: TeacherConfig = TeacherConfig(),
                  model_kwargs: dict | None = None, seed: int = 0, data_dir: str | None = None,
                  val_per_class: int | None = None, progress: bool = True) -> dict:
    """Train (or resume) a teacher on ``dataset``'s training split; writes ``out_dir``; returns its metadata."""

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


def make_experts(dataset: str, out_dir: str, *, num_experts: int, epochs: int, seed: int = 0, lr: float = 0.01,
                 batch_size: int = 256, augment: str | None = DSA_DEFAULT, model: str = "ConvNet",
                 model_kwargs: dict | None = None, zca: bool = False, group: int = 1, dtype: str = "float32",
                 max_per_class: int | None = None, data_dir: str | None = None, val_per_class: int | None = None,
                 progress: bool = True) -> ExpertBuffer:
    """Load ``dataset``'s training split as ``distill_dataset`` does (validation split carved out with split seed 0,
    the same preprocessing) and train experts on it. ``max_per_class`` keeps only the first that many images of each
    class (a smaller CPU budget; recorded in the metadata)."""

    train, _, pre, x_train, _ = prepare_data(dataset, data_dir=data_dir, zca=zca, val_per_class=val_per_class,
                                             seed=0)
    x = np.asarray(x_train, np.float32)
    y = np.asarray(train.labels, np.int32)
    if max_per_class is not None:
        keep = np.concatenate([np.flatnonzero(y == c)[:max_per_class] for c in range(train.num_classes)])
        keep.sort()
        x, y = x[keep], y[keep]
    info = {"dataset": dataset, "split": "train minus validation (split seed 0)",
            "num_examples_train_split": int(train.num_examples), "max_per_class": max_per_class,
            "val_per_class": val_per_class, "seed": seed}
    protocol = ExpertProtocol(epochs=epochs, lr=lr, batch_size=batch_size, augment=augment or None)
    return train_experts(jax.random.key(seed), x, y, out_dir, num_classes=train.num_classes,
                         num_experts=num_experts, protocol=protocol, model=model, model_kwargs=model_kwargs,
                         group=group, dtype=dtype, preprocess=pre, info=info, progress=progress)


# --------------------------------------------------------------------------------------------------------------
# Many experiments at once (what `jaxdd distill-many` / `jaxdd evaluate-many` run): the driver's experiment axis


def distill_many_dataset(method: str, dataset, ipc: int, *, num_exp: int, out_dir: str | None = None,
                         seed: int = 0, hparams: dict[str, Sequence[float]] | None = None,
                         iterations: int | None = None, model="ConvNet", model_kwargs: dict | None = None,
                         param: str = "pixels", param_options: dict | None = None, init: str | None = None,
                         method_options: dict | None = None, config_overrides: dict | None = None,
                         zca: bool = False, data_dir: str | None = None, val_per_class: int | None = None,
                         mesh_exp: int | None = None, mesh_data: int | None = None, use_mesh: bool = True,
                         syn_sharding: str = "replicated", split_pool: bool = False, eval_every: int = 0,
                         eval_models: int = 2, eval_epochs: int = 100, progress: bool = True) -> dict:
    """``distill_dataset`` for ``num_exp`` experiments in one program; returns a summary dict.

    Data split, preprocessing and the method are built from ``seed``; experiment i's run key is the one
    ``distill_dataset(seed=seed + i)`` uses, so experiment 0 equals ``distill_dataset(seed=seed)``. Each experiment
    writes ``out_dir/exp_00i/`` (checkpoints, metrics.jsonl, synthetic.npz/.json/.png); ``out_dir/experiments.json``
    lists them. The mesh spans every device (``make_mesh``; ``use_mesh=False``: no mesh, default placement)."""
    if num_exp < 1:
        raise JaxddError(f"num_exp must be >= 1, got {num_exp}")
    grid = {n: [float(v) for v in np.asarray(vals, np.float32).reshape(-1)] for n, vals in (hparams or {}).items()}
    p = _prepare("distill-many", method, dataset, ipc, out_dir=out_dir, seed=seed, iterations=iterations,
                 model=model, model_kwargs=model_kwargs, param=param, param_options=param_options, init=init,
                 method_options=method_options, config_overrides=config_overrides, zca=zca, data_dir=data_dir,
                 val_per_class=val_per_class, eval_every=eval_every, progress=progress,
                 extra_run_config={"num_exp": num_exp, "hparams": grid})
    k_eval = p.keys[2]
    k = p.train.num_classes
    keys = jnp.stack([jax.random.split(jax.random.key(seed + i), 3)[1] for i in range(num_exp)])
    mesh = shd.make_mesh(num_exp, exp=mesh_exp, data=mesh_data) if use_mesh else None
    evaluator = None
    if p.config.eval_every and p.val is not None:
        protocol = default_protocol(p.eval_augment, epochs=eval_epochs)

        def evaluator(images, labels, step):
            ek = jnp.stack([jax.random.fold_in(k_eval, step)] * num_exp)
            accs = evaluate_many(ek, images, labels, p.x_val, p.val.labels, num_classes=k, model=model,
                                 num_models=eval_models, protocol=protocol, model_kwargs=model_kwargs, mesh=mesh)
            return {"val_acc": accs.mean(1), "val_acc_std": accs.std(1)}

    t0 = time.perf_counter()
    result = distill_many(keys, p.objective, p.parameterization, p.pool, p.config, hparams=hparams, mesh=mesh,
                          syn_sharding=syn_sharding, split_pool=split_pool, out_dir=out_dir, evaluator=evaluator)
    seconds = time.perf_counter() - t0
    base = _metadata(p, method, ipc, jax.tree.map(lambda a: a[0], result.state.syn["data"]),
                     int(jax.device_get(result.state.step[0])), model, model_kwargs, zca)
    experiments = []
    for i in range(num_exp):
        meta = {**base, "seed": seed + i, "data_seed": seed,
                "key": f"jax.random.split(jax.random.key({seed + i}), 3)[1]", "experiment": i,
                "num_experiments": num_exp, "hparams": {n: v[i] for n, v in grid.items()},
                "diverged": i in result.diverged,
                "final_metrics": result.histories[i][-1] if result.histories[i] else {}}
        if p.spec.artifact_metadata is not None:
            meta.update(p.spec.artifact_metadata(
                jax.tree.map(lambda a: np.asarray(a)[i], jax.device_get(result.state.syn.get("extras", {}))), p.opts))
        if out_dir is not None and jax.process_index() == 0 and i not in result.diverged:
            save_artifact(exp_dir(out_dir, i), result.images[i], result.labels[i], p.pre, meta,
                          class_names=p.train.class_names)
        experiments.append(meta)
    summary = {"num_experiments": num_exp, "seconds": seconds, "mesh": shd.describe(mesh), "hparams": grid,
               "diverged": result.diverged,
               "experiments": [{"dir": EXP_DIR.format(i), "seed": m["seed"], "hparams": m["hparams"],
                                "final_metrics": m["final_metrics"]} for i, m in enumerate(experiments)]}
    if out_dir is not None and jax.process_index() == 0:
        Path(out_dir, "experiments.json").write_text(json.dumps({**base, **summary}, indent=2, default=float))
    return {**base, **summary, "images": result.images, "labels": result.labels, "histories": result.histories}


def evaluate_many_runs(out_dir: str, *, num_models: int = 5, epochs: int | None = None, model: str | None = None,
                       seed: int = 0, augment: str | None | bool = True, lr: float | None = None,
                       data_dir: str | None = None, use_mesh: bool = True, save: bool = True) -> dict:
    """``evaluate_run`` for every finished experiment of a ``distill-many`` directory at once:
    the E x ``num_models`` networks train together. Experiment i's result equals ``evaluate_run(out_dir/exp_00i,
    seed=seed, ...)`` (same keys); writes each experiment's ``eval.json`` and ``out_dir/eval_many.json``."""
    dirs = sorted(p for p in Path(out_dir).glob("exp_*") if (p / "synthetic.npz").exists())
    if not dirs:
        raise JaxddError(f"{out_dir} holds no finished experiments (exp_*/synthetic.npz); run `jaxdd distill-many "
                         f"... --out {out_dir}` first")
    arts = [load_artifact(d) for d in dirs]
    meta = arts[0].metadata
    dataset = meta.get("dataset")
    if dataset is None:
        raise JaxddError(f"{dirs[0]}/synthetic.json names no dataset; cannot find its test split")
    test = load(dataset, "test", data_dir)
    for d, a in zip(dirs, arts):
        check_artifact(a, test.num_classes, test.image_shape, where=f"{d}/synthetic.npz")
    x_test = apply_preprocess(arts[0].preprocess, test.images)
    strategy = meta.get("eval_augment") if augment is True else (augment or None)
    lrs = {float(a.metadata.get("eval_lr", 0.01)) if lr is None else lr for a in arts}
    if len(lrs) != 1:
        raise JaxddError(f"the experiments record different evaluation lrs {sorted(lrs)}; pass lr= to use one")
    protocol = default_protocol(strategy, epochs=epochs, lr=lrs.pop())
    model = model or meta.get("model", "ConvNet")
    images = np.stack([a.images for a in arts])
    labels = np.stack([a.labels for a in arts])
    keys = jnp.stack([jax.random.key(seed)] * len(arts))
    mesh = shd.make_mesh(len(arts) * num_models) if use_mesh else None
    t0 = time.perf_counter()
    accs = evaluate_many(keys, images, labels, x_test, test.labels, num_classes=test.num_classes, model=model,
                         num_models=num_models, protocol=protocol, model_kwargs=meta.get("model_kwargs") or None,
                         mesh=mesh)
    seconds = time.perf_counter() - t0
    rows = []
    for d, a, acc in zip(dirs, arts, accs):
        res = {"mean": float(acc.mean()), "std": float(acc.std()), "accuracies": [float(v) for v in acc],
               "model": model, "protocol": dataclasses.asdict(protocol)}
        out = {"synthetic": res, "dataset": dataset, "split": "test", "seed": seed}
        if save and jax.process_index() == 0:
            (d / "eval.json").write_text(json.dumps(out, indent=2))
        rows.append({"dir": d.name, "hparams": a.metadata.get("hparams", {}), **res})
    summary = {"experiments": rows, "mean_of_means": float(accs.mean(1).mean()),
               "std_of_means": float(accs.mean(1).std()), "seconds": seconds, "networks": int(accs.size)}
    if save and jax.process_index() == 0:
        Path(out_dir, "eval_many.json").write_text(json.dumps(summary, indent=2))
    return summary
