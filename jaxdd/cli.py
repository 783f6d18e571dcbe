"""The ``jaxdd`` console script.

    jaxdd distill --method dm --dataset fashion_mnist --ipc 10 --iterations 200 --seed 0 --out runs/dm10
    jaxdd evaluate runs/dm10 --models 5 --epochs 300 [--baseline]
    jaxdd methods            # list methods and their options

Rerunning the same ``distill`` command on the same --out directory resumes from its last checkpoint.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from jaxdd.types import JaxddError

# Subcommands contributed by other modules (each calls register_subcommand at import): add the module here.
SUBCOMMAND_MODULES: tuple[str, ...] = ("jaxdd.experts", "jaxdd.teacher", "jaxdd.objectives.recover", "jaxdd.multi",
                                      "jaxdd.continual")
SUBCOMMANDS: dict = {}


def register_subcommand(name: str, help: str, add_arguments, run) -> None:
    SUBCOMMANDS[name] = (help, add_arguments, run)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_distill(p: argparse.ArgumentParser) -> None:
    from jaxdd.methods import _METHODS, available_methods
    from jaxdd.models import available_models
    from jaxdd.pipeline import available_parameterizations

    p.add_argument("--method", required=True, choices=available_methods(), help="distillation method")
    p.add_argument("--dataset", required=True, help="dataset name (digits, fashion_mnist, mnist, cifar10, ...)")
    p.add_argument("--ipc", type=int, required=True, help="budget: pixel images per class")
    p.add_argument("--out", required=True, help="run directory (rerun the same command to resume)")
    p.add_argument("--iterations", type=int, default=None, help="distillation steps (default: the method's)")
    p.add_argument("--seed", type=int, default=0, help="the run's one PRNG seed")
    p.add_argument("--model", default="ConvNet", help=f"network ({', '.join(available_models())})")
    p.add_argument("--param", default="pixels", help=f"parameterization ({', '.join(available_parameterizations())})")
    p.add_argument("--rank", type=int, default=None, help="rank of the low-rank parameterization")
    p.add_argument("--init", choices=("real", "noise"), default=None, help="synthetic init (default: method's)")
    p.add_argument("--lr-img", type=float, default=None, help="learning rate of the synthetic images")
    p.add_argument("--zca", action="store_true", help="ZCA-whiten instead of mean/std normalisation")
    p.add_argument("--data-dir", default=None, help="TFDS data_dir or a directory of IDX files")
    p.add_argument("--eval-every", type=int, default=0, help="validation evaluation cadence (0: off)")
    p.add_argument("--checkpoint-every", type=int, default=None, help="checkpoint cadence in steps")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    owners: dict = {}  # option name -> [(method, Option)]: methods may share an option with different choices
    for spec in _METHODS.values():
        for opt in spec.options:
            owners.setdefault(opt.name, []).append((spec.name, opt))
    group = p.add_argument_group("method options (apply to the methods that define them)")
    for name, defs in owners.items():
        method, opt = defs[0]
        kw = {"type": opt.type, "default": None, "help": f"[{method}] {opt.help} (default {opt.default})"}
        if opt.type is bool:
            kw = {"type": lambda s: s.lower() in ("1", "true", "yes"), "default": None, "help": kw["help"]}
        if all(o.choices for _, o in defs):  # the union; each method checks its own (jaxdd.methods.resolve_options)
            kw["choices"] = tuple(dict.fromkeys(c for _, o in defs for c in o.choices))
        group.add_argument(_flag(name), dest=f"opt_{name}", **kw)


def _run_distill(args) -> int:
    from jaxdd.methods import get_method
    from jaxdd.pipeline import distill_dataset

    spec = get_method(args.method)
    given = {o.name: getattr(args, f"opt_{o.name}", None) for o in spec.options}
    stray = [k[4:] for k, v in vars(args).items() if k.startswith("opt_") and v is not None and k[4:] not in given]
    if stray:
        raise JaxddError(f"options {stray} do not apply to --method {args.method}; its options: {list(given)}")
    overrides = {}
    if args.lr_img is not None:
        overrides["lr_img"] = args.lr_img
    if args.checkpoint_every is not None:
        overrides["checkpoint_every"] = args.checkpoint_every
    param_options = {"rank": args.rank} if args.rank is not None else {}
    out = distill_dataset(args.method, args.dataset, args.ipc, out_dir=args.out, seed=args.seed,
                          iterations=args.iterations, model=args.model, param=args.param,
                          param_options=param_options, init=args.init, method_options=given,
                          config_overrides=overrides, zca=args.zca, data_dir=args.data_dir,
                          eval_every=args.eval_every, progress=not args.no_progress)
    print(f"distilled {out['num_images']} images ({out['images_per_class']}/class, {out['floats_stored']} floats "
          f"of a {out['floats_budget']}-float budget) -> {args.out}/synthetic.npz")
    return 0


def _add_evaluate(p: argparse.ArgumentParser) -> None:
    from jaxdd.evaluate import DEFAULT_EVAL_MODELS, PAPER_EVAL_MODELS

    p.description = (
        "Train fresh networks on a distilled set (SGD, momentum 0.9, weight decay 5e-4, batch 256, lr x0.1 after "
        "half the epochs) and report their mean and std test accuracy. On GPU/TPU the networks train together in "
        "one vmapped program; on CPU they train one after the other, ConvNets and ResNets with jaxdd's CPU "
        "convolution (conv_impl "
        "'fused'; a vmapped group is no faster there and needs the memory of all of them), so the time grows "
        "linearly with --models. Without options: "
        f"{DEFAULT_EVAL_MODELS} networks with the paper's epochs and augmentation; --paper-protocol: the paper's "
        f"{PAPER_EVAL_MODELS} networks (MTT: 5) as well.")
    p.add_argument("run", help="run directory holding synthetic.npz")
    p.add_argument("--models", type=int, default=None,
                   help=f"number of networks (default {DEFAULT_EVAL_MODELS}; --paper-protocol: {PAPER_EVAL_MODELS}, "
                        "MTT 5); vmapped together on GPU/TPU, trained one after the other on CPU")
    p.add_argument("--epochs", type=int, default=None,
                   help="training epochs per network (default: 1000 with augmentation, 300 without)")
    p.add_argument("--model", default=None, help="evaluation network (default: the distillation one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--augment", default=None,
                   help="augmentation of the networks' training: a DSA strategy, 'dc:' + a DC-augmentation strategy "
                        "(dc:crop_scale_rotate, dc:crop_noise), or 'none' (default: the paper's rule for the "
                        "method: DSA for DSA/DM/MTT; for DC, dc:crop_scale_rotate on MNIST, dc:crop_noise on "
                        "ConvNetBN, none otherwise)")
    p.add_argument("--lr", type=float, default=None, help="evaluation lr (default 0.01 or the learned one)")
    p.add_argument("--paper-protocol", action="store_true",
                   help=f"the papers' protocol: {PAPER_EVAL_MODELS} networks (MTT: 5) with the paper's epochs, "
                        "augmentation and lr (cannot be combined with --models, --epochs, --augment, --lr)")
    p.add_argument("--baseline", action="store_true", help="also evaluate a random real subset of equal size")
    p.add_argument("--data-dir", default=None)


def _run_evaluate(args) -> int:
    from jaxdd.pipeline import evaluate_run

    augment = True if args.augment is None else (False if args.augment.lower() == "none" else args.augment)
    out = evaluate_run(args.run, num_models=args.models, epochs=args.epochs, model=args.model, seed=args.seed,
                       augment=augment, lr=args.lr, data_dir=args.data_dir, baseline=args.baseline,
                       paper_protocol=args.paper_protocol)
    s = out["synthetic"]
    print(f"synthetic: {100 * s['mean']:.2f} +- {100 * s['std']:.2f} % test accuracy "
          f"({len(s['accuracies'])} x {s['model']}, {s['protocol']['epochs']} epochs, "
          f"augment={s['protocol']['augment']}; "
          f"{'the paper protocol' if out['evaluation']['paper_protocol'] else 'not the paper protocol'})")
    if "random_subset" in out:
        b = out["random_subset"]
        print(f"random subset: {100 * b['mean']:.2f} +- {100 * b['std']:.2f} %")
    print(f"-> {args.run}/eval.json")
    return 0


def _run_methods(args) -> int:
    from jaxdd.methods import available_methods, get_method

    for name in available_methods():
        spec = get_method(name)
        print(f"{name}: {spec.help}")
        print(f"  defaults: {json.dumps(spec.defaults)}")
        for o in spec.options:
            print(f"  {_flag(o.name)} ({o.type.__name__}, default {o.default!r}): {o.help}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    import importlib

    import jaxdd.objectives  # noqa: F401  (registers methods)

    for mod in SUBCOMMAND_MODULES:
        importlib.import_module(mod)

    parser = argparse.ArgumentParser(prog="jaxdd", description="Dataset distillation in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("distill", help="distil a dataset into a small synthetic set (resumable)")
    _add_distill(p)
    p.set_defaults(func=_run_distill)
    p = sub.add_parser("evaluate", help="train fresh networks on a distilled set, report test accuracy")
    _add_evaluate(p)
    p.set_defaults(func=_run_evaluate)
    p = sub.add_parser("methods", help="list methods, their defaults and options")
    p.set_defaults(func=_run_methods)
    for name, (help_, add, run) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_)
        add(p)
        p.set_defaults(func=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:  # the console script: restart with huge-page malloc (jaxdd.hostmem); in-process callers do not
        from jaxdd.hostmem import reexec_with_hugepages

        reexec_with_hugepages()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except JaxddError as e:
        print(f"jaxdd: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\njaxdd: interrupted; the last checkpoint is saved, rerun the same command to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":  # `python -m jaxdd.cli`: use the imported module, where subcommands register
    from jaxdd.cli import main as _main

    sys.exit(_main())
