"""``jaxdd continual``: class-incremental continual learning (``jaxdd.continual``)."""
from __future__ import annotations

from jaxdd import augment as aug
from jaxdd.protocols.continual import ContinualConfig, check_methods, continual_learning


def _add_arguments(p) -> None:
    from jaxdd.cli import _positive_float, positive_int

    p.add_argument("--dataset", required=True, help="dataset name (fashion_mnist, mnist, digits, cifar10, ...)")
    p.add_argument("--steps", type=positive_int, default=5, help="number of steps (must divide the number of classes)")
    p.add_argument("--ipc", type=positive_int, default=10, help="budget: pixel images per class")
    p.add_argument("--seeds", type=positive_int, default=3, help="number of class orders (seeds 0..N-1)")
    p.add_argument("--out", required=True, help="output directory (rerun to resume)")
    p.add_argument("--methods", default="random,herding,dm,lowrank_dm",
                   help="comma list: random, herding, any method (dm, dsa, ...), <method>@<parameterization> (dm@low_rank; "
                        "lowrank_<method> is its alias)")
    p.add_argument("--rank", type=positive_int, default=2, help="rank of the low-rank builders (<method>@low_rank)")
    p.add_argument("--model", default="ConvNet", help="network for distillation, herding features and evaluation")
    p.add_argument("--lowrank-init", choices=("noise", "svd"), default="noise", help="noise = the paper's")
    p.add_argument("--iterations", type=positive_int, default=None,
                   help="distillation steps per step's set (default: the method's)")
    p.add_argument("--real-per-class", type=positive_int, default=None,
                   help="real images per class per distillation step (default: the method's)")
    p.add_argument("--lr-img", type=_positive_float, default=None,
                   help="learning rate of the synthetic images (default: the method's)")
    p.add_argument("--eval-models", type=positive_int, default=3, help="networks per seed and step")
    p.add_argument("--eval-epochs", type=positive_int, default=1000, help="epochs of each evaluation network")
    p.add_argument("--augment", default=aug.DSA_DEFAULT, help="evaluation DSA strategy ('none' disables)")
    p.add_argument("--herding-candidates", type=int, default=None,
                   help="herd among this many random images per class (default: all)")
    p.add_argument("--data-dir", default=None, help="TFDS data_dir or a directory of IDX files (default: TFDS's)")




def _run(args) -> int:
    check_methods([m.strip() for m in args.methods.split(",") if m.strip()])
    config = ContinualConfig(
        steps=args.steps, ipc=args.ipc, seeds=tuple(range(args.seeds)),
        methods=tuple(m.strip() for m in args.methods.split(",") if m.strip()), rank=args.rank,
        lowrank_init=args.lowrank_init, iterations=args.iterations, real_per_class=args.real_per_class,
        lr_img=args.lr_img, model=args.model, eval_models=args.eval_models, eval_epochs=args.eval_epochs,
        eval_augment=None if args.augment.lower() == "none" else args.augment,
        herding_candidates=args.herding_candidates)
    record = continual_learning(args.dataset, config, out_dir=args.out, data_dir=args.data_dir)
    for method, r in record["results"].items():
        row = " ".join(f"{100 * m:5.1f}+-{100 * s:3.1f}" for m, s in zip(r["mean"], r["std"]))
        print(f"{method:>12s}: {row}")
    print(f"-> {args.out}/continual.json, {args.out}/continual.png")
    return 0


def register(register_subcommand) -> None:
    register_subcommand("continual", "class-incremental continual learning on condensed memories", _add_arguments,
                        _run)
