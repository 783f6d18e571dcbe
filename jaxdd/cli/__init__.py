"""The ``jaxdd`` console script.

    jaxdd distill --method dm --dataset fashion_mnist --ipc 10 --iterations 200 --seed 0 --out runs/dm10
    jaxdd evaluate runs/dm10 --models 5 --epochs 300 [--baseline]
    jaxdd methods            # list methods and their options

Rerunning the same ``distill`` command on the same --out directory resumes from its last checkpoint; a larger
--iterations extends the run, any other change of the configuration is refused (docs/resume.md).
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
from typing import Sequence

from jaxdd.types import JaxddError

# The other subcommands live in this package, one module each with register(register_subcommand); the library
# never imports the CLI.
SUBCOMMAND_MODULES: tuple[str, ...] = ("jaxdd.cli.experts", "jaxdd.cli.teacher", "jaxdd.cli.relabel",
                                      "jaxdd.cli.multi", "jaxdd.cli.continual")
SUBCOMMANDS: dict = {}


def register_subcommand(name: str, help: str, add_arguments, run) -> None:
    SUBCOMMANDS[name] = (help, add_arguments, run)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _at_least(lo: int, what: str = "an integer"):
    """An argparse type: an int >= lo (argparse then reports a bad value in one line and exits 2)."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {v}")
        return v

    return parse


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {v}")
    return v


def _bool(text: str) -> bool:
    t = text.lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean (true/false)")


positive_int = _at_least(1, "a positive integer")
nonnegative_int = _at_least(0, "a non-negative integer")


class HelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to every option's help whose default is a value and whose text names none."""

    def _get_help_string(self, action):
        text = action.help or ""
        d = action.default
        if ("default" not in text and d is not None and d is not False and d != argparse.SUPPRESS
                and action.option_strings and not isinstance(d, list)):
            text += " (default: %(default)s)"
        return text


def _per_method(values: dict) -> str:
    """{method: default} -> "1000 (dc, dsa); 20000 (dm)", or the one value all share."""
    groups: dict = {}
    for m, v in sorted(values.items()):
        groups.setdefault(repr(v) if isinstance(v, str) else str(v), []).append(m)
    if len(groups) == 1:
        return next(iter(groups))
    return "; ".join(f"{v} ({', '.join(ms)})" for v, ms in groups.items())


def _add_distill(p: argparse.ArgumentParser) -> None:
    from jaxdd.distill import DistillConfig
    from jaxdd.methods import available_methods
    from jaxdd.methods.registry import _METHODS
    from jaxdd.models import available_models
    from jaxdd.api import available_parameterizations

    methods = available_methods()
    specs = {m: _METHODS[m] for m in methods}
    default = lambda field, base: _per_method({m: s.defaults.get(field, base) for m, s in specs.items()})
    p.add_argument("--method", required=True, choices=methods, help="distillation method")
    p.add_argument("--dataset", required=True, help="dataset name (digits, fashion_mnist, mnist, cifar10, ...)")
    p.add_argument("--ipc", type=positive_int, required=True, help="budget: pixel images per class")
    p.add_argument("--out", required=True,
                   help="run directory; rerunning the same command resumes it, a larger --iterations extends it, "
                        "any other change is refused (see docs/resume.md)")
    p.add_argument("--iterations", type=positive_int, default=None,
                   help=f"distillation steps (default per method: {default('iterations', DistillConfig.iterations)})")
    p.add_argument("--seed", type=int, default=0, help="the run's one PRNG seed")
    p.add_argument("--model", default="ConvNet", help=f"network ({', '.join(available_models())})")
    p.add_argument("--param", default="pixels", help=f"parameterization ({', '.join(available_parameterizations())})")
    p.add_argument("--rank", type=positive_int, default=None,
                   help="rank of the low-rank parameterization (default: the parameterization's)")
    p.add_argument("--init", choices=("real", "noise"), default=None,
                   help=f"synthetic init (default per method: {default('init', 'real')})")
    p.add_argument("--lr-img", type=_positive_float, default=None,
                   help=f"learning rate of the synthetic images (default per method: "
                        f"{default('lr_img', DistillConfig.lr_img)})")
    p.add_argument("--zca", action="store_true", help="ZCA-whiten instead of mean/std normalisation (default: off)")
    p.add_argument("--data-dir", default=None, help="TFDS data_dir or a directory of IDX files (default: TFDS's)")
    p.add_argument("--eval-every", type=nonnegative_int, default=0,
                   help="validation evaluation cadence in steps (0: off)")
    p.add_argument("--checkpoint-every", type=positive_int, default=None,
                   help="checkpoint every this many steps (default: by wall time, see --checkpoint-seconds)")
    p.add_argument("--checkpoint-seconds", type=_positive_float, default=DistillConfig.checkpoint_seconds,
                   help="without --checkpoint-every: checkpoint once this many seconds have passed since the last "
                        "one (and always at the end; Ctrl-C / SIGTERM also save)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    owners: dict = {}  # option name -> [(method, Option)]: methods may share an option with different choices
    for name_ in methods:
        for opt in specs[name_].options:
            owners.setdefault(opt.name, []).append((name_, opt))
    group = p.add_argument_group("method options (apply to the methods that define them; default per method)")
    for name, defs in owners.items():
        _, opt = defs[0]
        helps = dict.fromkeys(o.help for _, o in defs)
        kw = {"type": opt.type, "default": None,
              "help": f"[{', '.join(m for m, _ in defs)}] {next((h for h in helps if h), '')} "
                      f"(default: {_per_method({m: o.default for m, o in defs})})"}
        if opt.type is bool:
            kw["type"] = _bool
        if all(o.choices for _, o in defs):  # the union; each method checks its own (jaxdd.methods.resolve_options)
            kw["choices"] = tuple(dict.fromkeys(c for _, o in defs for c in o.choices))
        group.add_argument(_flag(name), dest=f"opt_{name}", **kw)


def method_options(args) -> dict:
    """The method options given on the command line (None = not given), refusing those of other methods."""
    from jaxdd.methods import get_method

    spec = get_method(args.method)
    given = {o.name: getattr(args, f"opt_{o.name}", None) for o in spec.options}
    stray = [k[4:] for k, v in vars(args).items() if k.startswith("opt_") and v is not None and k[4:] not in given]
    if stray:
        raise JaxddError(f"options {stray} do not apply to --method {args.method}; its options: {list(given)}")
    return given


def _run_distill(args) -> int:
    from jaxdd.api import distill_dataset

    given = method_options(args)
    overrides = {}
    if args.lr_img is not None:
        overrides["lr_img"] = args.lr_img
    if args.checkpoint_every is not None:
        overrides["checkpoint_every"] = args.checkpoint_every
    overrides["checkpoint_seconds"] = args.checkpoint_seconds
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
    p.add_argument("--models", type=positive_int, default=None,
                   help=f"number of networks (default {DEFAULT_EVAL_MODELS}; --paper-protocol: {PAPER_EVAL_MODELS}, "
                        "MTT 5); vmapped together on GPU/TPU, trained one after the other on CPU")
    p.add_argument("--epochs", type=positive_int, default=None,
                   help="training epochs per network (default: 1000 with augmentation, 300 without)")
    p.add_argument("--model", default=None, help="evaluation network (default: the distillation one)")
    p.add_argument("--seed", type=int, default=0, help="seed of the evaluation networks")
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
    p.add_argument("--data-dir", default=None, help="TFDS data_dir or a directory of IDX files (default: TFDS's)")


def _run_evaluate(args) -> int:
    from jaxdd.api import evaluate_run

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

    import jaxdd.methods  # noqa: F401  (registers the built-in methods)

    for mod in SUBCOMMAND_MODULES:
        importlib.import_module(mod).register(register_subcommand)

    parser = argparse.ArgumentParser(prog="jaxdd", description="Dataset distillation in JAX.",
                                     formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("distill", help="distil a dataset into a small synthetic set (resumable)",
                       formatter_class=HelpFormatter)
    _add_distill(p)
    p.set_defaults(func=_run_distill)
    p = sub.add_parser("evaluate", help="train fresh networks on a distilled set, report test accuracy",
                       formatter_class=HelpFormatter)
    _add_evaluate(p)
    p.set_defaults(func=_run_evaluate)
    p = sub.add_parser("methods", help="list methods, their defaults and options", formatter_class=HelpFormatter)
    p.set_defaults(func=_run_methods)
    for name, (help_, add, run) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_, formatter_class=HelpFormatter)
        add(p)
        p.set_defaults(func=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:  # the console script: restart with huge-page malloc (jaxdd.hostmem); in-process callers do not
        from jaxdd.hostmem import reexec_with_hugepages

        reexec_with_hugepages()
    parser = build_parser()
    args = parser.parse_args(argv)
    old_term = None
    try:  # SIGTERM stops like Ctrl-C (the distillation loops turn both into a checkpoint and a clean stop)
        old_term = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread
        pass
    try:
        return args.func(args)
    except JaxddError as e:
        print(f"jaxdd: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the environment (a full disk, a permission): one line, no traceback
        print(f"jaxdd: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\njaxdd: interrupted; the last checkpoint is saved, rerun the same command to resume",
              file=sys.stderr)
        return 130
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)


def _terminate(signum, frame):
    raise KeyboardInterrupt
