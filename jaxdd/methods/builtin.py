"""The built-in methods: each name's builder (``MethodContext`` -> Objective), its ``--flags`` (defaults read from
the objective constructors) and the paper's driver settings. This is the application's wiring of the objectives of
``jaxdd.objectives``: loading an expert buffer or a teacher from a directory happens here, so the objectives
themselves receive what they need as arguments and never touch the file system, the driver or evaluation.

Section numbers refer to docs/methods.md.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxdd import augment as aug
from jaxdd.checkpoint import load_teacher, save_teacher
from jaxdd.data import preprocess_to_arrays, sample_per_class
from jaxdd.methods.registry import MethodSpec, Option, register_deriver, register_method
from jaxdd.methods.registry import constructor_option as opt
from jaxdd.models import CONV_IMPLS, get_model
from jaxdd.objectives.distribution import dm
from jaxdd.objectives.gradient import DISTANCES, dc, dsa, gradient_matching, paper_loops
from jaxdd.objectives.kernel import KERNELS, kip
from jaxdd.objectives.mutual_info import (DEFAULT_BANK_SIZE, DEFAULT_HEAD_DIM, DEFAULT_HEAD_LR, DEFAULT_REAL_PER_CLASS,
                                          DEFAULT_TEMPERATURE, DEFAULT_WEIGHT, NEGATIVES, with_mutual_info)
from jaxdd.objectives.performance import bptt
from jaxdd.objectives.recover import check_teacher, dwa, sre2l, valid_range
from jaxdd.objectives.recover.teacher import TeacherConfig, fit_teacher
from jaxdd.objectives.trajectory import LR_PARAMS, MEMORY, lr_value, mtt, student_module
from jaxdd.objectives.trajectory.experts import ExpertBuffer, ExpertProtocol, train_experts
from jaxdd.train import MEMORY_STRATEGIES
from jaxdd.types import JaxddError


def _conv_impl_option(constructor, name="conv_impl", empty: str | None = "the model's", what="") -> Option:
    """The one declaration of the ``conv_impl`` setting (``jaxdd.ops.conv``) for every method that trains or
    differentiates a network: its choices and meaning; the default is the constructor's. ``empty``: what '' means
    (None: '' is not a choice)."""
    choices = (("",) if empty else ()) + ("auto",) + CONV_IMPLS
    blank = f"'' = {empty}; " if empty else ""
    return opt(constructor, name, str, f"convolution implementation{what} ({blank}auto = fused on CPU, xla on "
               "accelerators; fused, winograd, vjp and patches are fast on XLA:CPU, also inside scan and vmap; see "
               "jaxdd.ops.conv)", choices)


# --------------------------------------------------------------------------------------------------------------
# DM (docs/methods.md 4)


def _build_dm(ctx):
    o = ctx.options
    return dm(get_model(ctx.model, ctx.num_classes, **ctx.model_kwargs), ctx.num_classes, strategy=o["dsa"] or None,
              real_per_class=o["real_per_class"], class_batch=o["class_batch"], conv_impl=o["conv_impl"])


register_method(MethodSpec(
    name="dm",
    build=_build_dm,
    defaults={"lr_img": 1.0, "momentum": 0.5, "iterations": 20000, "init": "real",
              "eval_augment": aug.DSA_DEFAULT},
    options=(opt(dm, "dsa", str, "DSA strategy for matching ('' or none disables)", param="strategy"),
             opt(dm, "real_per_class", int, "real images per class per iteration"),
             opt(dm, "class_batch", int, "classes per real-side forward (0 = all; -1 = 1 on CPU, all on "
                 "accelerators; batch-norm models always all)"),
             _conv_impl_option(dm)),
    help="distribution matching (Zhao & Bilen, WACV 2023)",
    tiny=lambda ctx, tmp: {"real_per_class": 4},
))


# --------------------------------------------------------------------------------------------------------------
# DC and DSA (docs/methods.md 2, 3)


def _build_gradient(ctx, with_dsa: bool):
    o = ctx.options
    if o["outer_loop"] <= 0 or o["inner_loop"] < 0:
        paper_loops(ctx.ipc)  # refuse an IPC without paper loops now, with the flags to pass, not at trace time
    module = get_model(ctx.model, ctx.num_classes, **ctx.model_kwargs)
    kw = {n: o[n] for n in ("outer_loop", "inner_loop", "distance", "real_per_class", "net_lr", "class_batch",
                            "conv_impl", "inner_conv_impl")}
    if with_dsa:
        if not o["dsa"]:
            raise JaxddError("method 'dsa' needs a DSA strategy (--dsa); use method 'dc' for no augmentation")
        return dsa(module, ctx.num_classes, ctx.image_shape, strategy=o["dsa"], **kw)
    return dc(module, ctx.num_classes, ctx.image_shape, **kw)


def _gradient_tiny(ctx, tmp):
    return {"outer_loop": 2, "inner_loop": 1, "real_per_class": 4}


def _gradient_options(with_dsa: bool):
    gm = gradient_matching
    opts = (
        opt(gm, "outer_loop", int, "matching rounds per fresh network (0: the paper's value for the IPC)"),
        opt(gm, "inner_loop", int, "epochs of network training on S between rounds (-1: the paper's value)"),
        opt(gm, "distance", str, "gradient distance: ours (layer-wise rows), mse, cos", DISTANCES),
        opt(gm, "real_per_class", int, "real images per class per step"),
        opt(gm, "net_lr", float, "learning rate of the network's inner training (SGD, no momentum)"),
        _conv_impl_option(gm),
        _conv_impl_option(gm, "inner_conv_impl", "as --conv-impl", " of the inner-trained twin only"),
        opt(gm, "class_batch", int, "classes batched together for the real gradients (0: all; -1: 1 on CPU, "
            "all on accelerators)"),
    )
    if with_dsa:
        opts = opts + (opt(dsa, "dsa", str, "DSA strategy for matching and inner training", param="strategy"),)
    return opts


register_method(MethodSpec(
    name="dc", build=lambda ctx: _build_gradient(ctx, False),
    defaults={"lr_img": 0.1, "momentum": 0.5, "iterations": 1000, "init": "noise", "eval_augment": None,
              "eval_dc_augment": True},
    options=_gradient_options(False),
    help="gradient matching (Zhao, Mopuri & Bilen, ICLR 2021); one step = one outer-loop round",
    tiny=_gradient_tiny,
))
register_method(MethodSpec(
    name="dsa", build=lambda ctx: _build_gradient(ctx, True),
    defaults={"lr_img": 0.1, "momentum": 0.5, "iterations": 1000, "init": "real",
              "eval_augment": aug.DSA_DEFAULT},
    options=_gradient_options(True),
    help="gradient matching with differentiable Siamese augmentation (Zhao & Bilen, ICML 2021)",
    tiny=_gradient_tiny,
))


# --------------------------------------------------------------------------------------------------------------
# KIP (docs/methods.md 7)


def _build_kip(ctx):
    o = ctx.options
    kw = dict(ctx.model_kwargs)
    if o["kernel_width"]:
        kw["width"] = o["kernel_width"]
    module = get_model(ctx.model, ctx.num_classes, **kw)
    return kip(module, ctx.num_classes, ctx.image_shape, kernel=o["kernel"], reg=o["reg"],
               real_per_class=o["real_per_class"], fresh=o["fresh_kernel"] != 0)


register_method(MethodSpec(
    name="kip",
    build=_build_kip,
    defaults={"optimizer": "adam", "lr_img": 0.04, "iterations": 1000, "init": "real", "eval_augment": None},
    options=(
        opt(kip, "kernel", str, "empirical kernel of the finite network: ntk or nngp", KERNELS),
        Option("kernel_width", int, 0, "width of the kernel network (0: the model's own width)"),
        opt(kip, "reg", float, "ridge lambda, relative to tr(K_ss)/n_s"),
        opt(kip, "real_per_class", int, "target images per class per step"),
        Option("fresh_kernel", int, 1, "1: a new random kernel network every step; 0: one fixed draw"),
    ),
    help="kernel inducing points (Nguyen et al., 2021) with an empirical finite-network NTK/NNGP",
    tiny=lambda ctx, tmp: {"real_per_class": 4},
))


# --------------------------------------------------------------------------------------------------------------
# BPTT (docs/methods.md 6)


def _build_bptt(ctx):
    o = ctx.options
    return bptt(get_model(ctx.model, ctx.num_classes, **ctx.model_kwargs), ctx.num_classes, ctx.image_shape, ctx.ipc,
                **{n: o[n] for n in ("steps", "epochs", "real_per_class", "memory", "remat_every", "nets", "init_lr",
                                     "conv_impl")})


register_method(MethodSpec(
    name="bptt",
    build=_build_bptt,
    defaults={"optimizer": "adam", "lr_img": 0.01, "iterations": 400, "init": "noise", "eval_augment": None},
    options=(
        opt(bptt, "steps", int, "inner batches of the synthetic set (0: one image per class per step)"),
        opt(bptt, "epochs", int, "passes over the inner batches (unrolled steps = steps x epochs)"),
        opt(bptt, "real_per_class", int, "real images per class of the outer loss"),
        opt(bptt, "memory", str, "meta-gradient memory: full unroll or remat (jax.checkpoint blocks)",
               MEMORY_STRATEGIES),
        opt(bptt, "remat_every", int, "unrolled steps per jax.checkpoint block with --memory remat"),
        opt(bptt, "nets", int, "random initialisations per outer step (vmapped, losses averaged)"),
        opt(bptt, "init_lr", float, "initial learned inner learning rate (softplus-parameterised)"),
        _conv_impl_option(bptt),
    ),
    help="BPTT performance matching, the original dataset distillation (Wang et al., 2018)",
    tiny=lambda ctx, tmp: {"epochs": 1, "real_per_class": 4},
))


# --------------------------------------------------------------------------------------------------------------
# MTT and TESLA (docs/methods.md 5, 8)


def check_buffer_matches(buffer, ctx) -> None:
    """Raise unless the experts were trained on data shaped and preprocessed like ``ctx``'s, with its model."""
    meta = buffer.meta
    problems = []
    if int(meta["num_classes"]) != ctx.num_classes:
        problems.append(f"{meta['num_classes']} classes vs {ctx.num_classes}")
    if tuple(meta["image_shape"]) != tuple(ctx.image_shape):
        problems.append(f"image shape {tuple(meta['image_shape'])} vs {tuple(ctx.image_shape)}")
    if meta["model"] != ctx.model or dict(meta["model_kwargs"]) != {
            k: v for k, v in ctx.model_kwargs.items() if k != "conv_impl"}:
        problems.append(f"model {meta['model']} {meta['model_kwargs']} vs {ctx.model} {ctx.model_kwargs}")
    ds = meta.get("info", {}).get("dataset")
    if ds is not None and ctx.dataset is not None and ds != ctx.dataset:
        problems.append(f"dataset {ds} vs {ctx.dataset}")
    if ctx.preprocess is not None and (buffer.directory / "preprocess.npz").exists():
        pre = buffer.preprocess()
        if pre.uses_zca != ctx.preprocess.uses_zca or not (
                np.allclose(pre.mean, ctx.preprocess.mean) and np.allclose(pre.std, ctx.preprocess.std)):
            problems.append("preprocessing (mean/std or ZCA) differs")
    if problems:
        raise JaxddError(f"expert buffer {buffer.directory} does not match this run: {'; '.join(problems)}. "
                         "Train experts for this setting with `jaxdd experts` (same dataset, model, --zca)")


def _build_mtt(ctx):
    o = ctx.options
    if not o["experts"]:
        raise JaxddError("mtt needs an expert buffer: pass --experts DIR (create it with `jaxdd experts --dataset "
                         f"{ctx.dataset} --num-experts N --epochs E --out DIR`)")
    buffer = ExpertBuffer(o["experts"], allow_partial=bool(o["allow_partial_buffer"]))
    check_buffer_matches(buffer, ctx)
    module = student_module(ctx.model, ctx.num_classes, ctx.model_kwargs, "")
    return mtt(module, ctx.num_classes, buffer, strategy=o["dsa"] or None, image_shape=ctx.image_shape,
               **{n: o[n] for n in ("syn_steps", "expert_epochs", "max_start_epoch", "batch_syn", "memory",
                                    "remat_every", "lr_teacher", "lr_param", "conv_impl")})


def _artifact_metadata(extras: dict, options: dict) -> dict:
    """The learned inner lr, which the evaluation trains with (``evaluate_run`` reads ``eval_lr``)."""
    raw = float(np.asarray(extras["syn_lr"]))
    lr = float(lr_value(jnp.asarray(raw), options.get("lr_param", "raw")))
    if not lr > 0 or not math.isfinite(lr):
        raise JaxddError(f"the learned inner lr is {lr}, not a usable evaluation lr: lower the lr of "
                         "extras/syn_lr or use --lr-param softplus")
    return {"eval_lr": lr, "learned_syn_lr": lr}


def _mtt_tiny(ctx, tmp: str) -> dict:
    """A 1-expert, 2-epoch buffer on the toy pool, and a 2-step student (for the contract suite)."""
    path = os.path.join(tmp, "mtt_experts")
    n = int(ctx.pool.labels.shape[0])  # one full-batch step per epoch: one compiled shape
    train_experts(jax.random.key(0), np.asarray(ctx.pool.images), np.asarray(ctx.pool.labels), path,
                  num_classes=ctx.num_classes, num_experts=1, model=ctx.model, model_kwargs=ctx.model_kwargs,
                  protocol=ExpertProtocol(epochs=2, lr=0.05, batch_size=n, augment=None),
                  preprocess=ctx.preprocess, info={"dataset": ctx.dataset}, progress=False)
    return {"experts": path, "syn_steps": 2, "expert_epochs": 1, "max_start_epoch": 2, "batch_syn": 0, "dsa": ""}


register_method(MethodSpec(
    name="mtt",
    build=_build_mtt,
    defaults={"lr_img": 1000.0, "momentum": 0.5, "iterations": 5000, "init": "real",
              "eval_augment": aug.DSA_DEFAULT, "eval_models": 5, "lrs": (("extras/syn_lr", 1e-5),)},
    options=(
        Option("experts", str, "", "expert buffer directory (made by `jaxdd experts`)"),
        opt(mtt, "syn_steps", int, "student SGD steps per iteration (N)"),
        opt(mtt, "expert_epochs", int, "expert epochs the student must cover (M)"),
        opt(mtt, "max_start_epoch", int, "start epochs are drawn from 0..max_start_epoch-1"),
        opt(mtt, "batch_syn", int, "synthetic images per student step (0 = the whole set)"),
        opt(mtt, "memory", str, "meta-gradient memory: full | remat | constant (exact) | tesla "
               "(TESLA's approximation)", choices=MEMORY),
        opt(mtt, "remat_every", int, "steps per jax.checkpoint block with --memory remat"),
        opt(mtt, "lr_teacher", float, "initial learned inner lr"),
        opt(mtt, "lr_param", str, "inner lr as is (raw, MTT) or softplus of the learnable (extension)",
               choices=LR_PARAMS),
        _conv_impl_option(mtt, empty=None),
        opt(mtt, "dsa", str, "DSA strategy for matching ('' or none disables)", param="strategy"),
        Option("allow_partial_buffer", bool, False, "use the finished experts of an incomplete buffer"),
    ),
    help="matching training trajectories (Cazenavette et al., CVPR 2022), exact bounded-memory meta-gradients",
    tiny=_mtt_tiny,
    artifact_metadata=_artifact_metadata,
))


# --------------------------------------------------------------------------------------------------------------
# SRe2L and DWA (docs/methods.md 11)


def _build_recover(ctx, perturb: bool):
    o = ctx.options
    if not o.get("teacher"):
        raise JaxddError("SRe2L/DWA need a trained teacher: pass --teacher DIR (train one with "
                         "`jaxdd teacher --dataset NAME --model ConvNetBN --out DIR`)")
    teacher = load_teacher(o["teacher"])
    check_teacher(teacher, ctx.num_classes, ctx.image_shape, ctx.preprocess)
    kw = {n: o[n] for n in ("alpha_bn", "first_bn_multiplier", "r_var", "jitter")}
    args = (teacher.module, teacher.variables, ctx.num_classes, ctx.ipc)
    if not perturb:
        return sre2l(*args, clip=valid_range(ctx.preprocess), **kw)
    pool = ctx.pool
    return dwa(*args, clip=valid_range(ctx.preprocess), rho=o["rho"], dwa_steps=o["dwa_steps"],
               sample_real=lambda key: pool.images[sample_per_class(key, pool.index, ctx.ipc)], **kw)


def _recover_options(constructor, perturb: bool):
    opts = [Option("teacher", str, "", "directory of a trained BN teacher (jaxdd teacher ... --out DIR)"),
            opt(constructor, "alpha_bn", float, "weight of the BN statistics loss (r_bn)"),
            opt(constructor, "first_bn_multiplier", float, "multiplier of the first BN layer's term"),
            opt(constructor, "r_var", float, "weight of the variance term of the BN statistics loss"),
            opt(constructor, "jitter", int, "random roll-jitter of each batch, in px per axis (0 = off)")]
    if perturb:
        opts += [opt(constructor, "rho", float, "DWA: norm budget of the weight perturbation"),
                 opt(constructor, "dwa_steps", int, "DWA: gradient-ascent steps K (step size rho/K)")]
    return tuple(opts)


_TINY_TEACHERS: dict = {}


def _recover_tiny(ctx, tmp: str) -> dict:
    """Train a seconds-long ConvNetBN teacher on the toy pool into tmp/teacher (memoised per toy problem)."""
    out = Path(tmp) / "teacher"
    if not (out / "teacher.json").exists():
        kw = dict(ctx.model_kwargs)
        images, labels = np.asarray(ctx.pool.images), np.asarray(ctx.pool.labels)
        memo = (ctx.num_classes, images.shape, hash(images.tobytes()), hash(labels.tobytes()),
                json.dumps(kw, sort_keys=True))
        if memo not in _TINY_TEACHERS:
            module = get_model("ConvNetBN", ctx.num_classes, **kw)
            cfg = TeacherConfig(epochs=1, batch_size=16, shift=0, flip=False)
            _TINY_TEACHERS[memo] = fit_teacher(jax.random.key(0), module, images, labels, cfg)["variables"]
        save_teacher(out, "ConvNetBN", kw, _TINY_TEACHERS[memo], {
            "dataset": ctx.dataset, "num_classes": ctx.num_classes, "image_shape": list(ctx.image_shape),
            "epochs_done": 1, "preprocess": {n: np.asarray(v).tolist()
                                             for n, v in preprocess_to_arrays(ctx.preprocess).items()}})
    return {"teacher": str(out), "jitter": 1, **({"dwa_steps": 2} if ctx.options.get("dwa_steps") else {})}


_RECOVER_DEFAULTS = {"optimizer": "adam", "lr_img": 0.25, "schedule": "cosine", "iterations": 1000,
                     "eval_augment": "color_crop_cutout_flip_scale_rotate"}
register_method(MethodSpec(
    name="sre2l", build=lambda ctx: _build_recover(ctx, False), defaults={**_RECOVER_DEFAULTS, "init": "noise"},
    options=_recover_options(sre2l, False), tiny=_recover_tiny,
    help="SRe2L recover against a BN teacher (Yin, Xing, Shen, NeurIPS 2023); needs --teacher"))
register_method(MethodSpec(
    name="dwa", build=lambda ctx: _build_recover(ctx, True), defaults={**_RECOVER_DEFAULTS, "init": "real"},
    options=_recover_options(dwa, True), tiny=_recover_tiny,
    help="DWA: SRe2L with directed weight adjustment of a fresh teacher per batch (Du et al., NeurIPS 2024); "
         "needs --teacher"))


# --------------------------------------------------------------------------------------------------------------
# MIM4DD: "<base>+mim" for the bases in DERIVED_BASES (docs/methods.md 10)


SUFFIX = "+mim"
# the matching families the paper adds MIM4DD to. DC is DSA without augmentation (the same objective code). Any
# other method: ``register_method(derive_mim(get_method("kip")))``.
DERIVED_BASES = ("dm", "dsa", "mtt")


def _mim_options():
    return (
        Option("mutual_info_weight", float, DEFAULT_WEIGHT, "MIM4DD: weight of the NCE term"),
        Option("mutual_info_temperature", float, DEFAULT_TEMPERATURE, "MIM4DD: NCE temperature"),
        Option("mutual_info_layers", str, "auto", "MIM4DD: feature layers, e.g. 'block1,block3' ('auto': all)"),
        Option("mutual_info_head_dim", int, DEFAULT_HEAD_DIM, "MIM4DD: contrastive head dimension"),
        Option("mutual_info_negatives", str, "batch", "MIM4DD: in-batch negatives or a memory bank",
               choices=NEGATIVES),
        Option("mutual_info_bank_size", int, DEFAULT_BANK_SIZE, "MIM4DD: memory bank size (negatives=bank)"),
        Option("mutual_info_real_per_class", int, DEFAULT_REAL_PER_CLASS, "MIM4DD: real images/class for NCE"),
        Option("mutual_info_head_lr", float, DEFAULT_HEAD_LR, "MIM4DD: Adam lr of the heads"),
        Option("mutual_info_networks", int, 0, "MIM4DD: 0 = a random network per step (DM's draw), P = a pool"),
    )


def derive_mim(base):
    """The MethodSpec of ``base`` + MIM4DD (name ``<base>+mim``)."""

    mim_opts = _mim_options()
    base_names = {o.name for o in base.options}

    def build(ctx):
        o = ctx.options
        obj = base.build(ctx._replace(options={k: v for k, v in o.items() if k in base_names}))
        module = get_model(ctx.model, ctx.num_classes, **ctx.model_kwargs)
        return with_mutual_info(
            obj, module=module, num_classes=ctx.num_classes, image_shape=tuple(ctx.image_shape),
            weight=o["mutual_info_weight"], temperature=o["mutual_info_temperature"],
            layers=o["mutual_info_layers"], head_dim=o["mutual_info_head_dim"],
            negatives=o["mutual_info_negatives"], bank_size=o["mutual_info_bank_size"],
            real_per_class=o["mutual_info_real_per_class"], head_lr=o["mutual_info_head_lr"],
            networks=o["mutual_info_networks"])

    def tiny(ctx, tmp):
        over = base.tiny(ctx._replace(options={k: v for k, v in ctx.options.items() if k in base_names}), tmp) \
            if base.tiny is not None else {}
        return {**over, "mutual_info_head_dim": 8, "mutual_info_real_per_class": 2}

    # dataclasses.replace keeps every other field of the base spec (defaults, artifact metadata, ...)
    return dataclasses.replace(
        base, name=base.name + SUFFIX, build=build, defaults=dict(base.defaults),
        options=tuple(base.options) + mim_opts, tiny=tiny,
        help=f"{base.help} + MIM4DD contrastive mutual-information term (Shang et al., NeurIPS 2023)")


def _derive_all(methods: dict) -> None:
    for name, spec in methods.items():
        if name not in DERIVED_BASES or name + SUFFIX in methods:
            continue
        register_method(derive_mim(spec))


register_deriver(_derive_all)
