"""``jaxdd experts``: train MTT expert trajectories (``jaxdd.objectives.trajectory.experts``)."""
from __future__ import annotations

import json

from jaxdd import augment as aug
from jaxdd.api import make_experts
from jaxdd.objectives.trajectory.experts import DTYPES
from jaxdd.types import JaxddError


def _add_arguments(p) -> None:
    from jaxdd.cli import _positive_float, positive_int

    p.add_argument("--dataset", required=True, help="dataset name (fashion_mnist, mnist, digits, cifar10, ...)")
    p.add_argument("--num-experts", type=positive_int, required=True,
                   help="number of experts (rerun with more to extend)")
    p.add_argument("--epochs", type=positive_int, required=True,
                   help="training epochs per expert (snapshots: epochs + 1)")
    p.add_argument("--out", required=True, help="buffer directory (rerun the same command to resume)")
    p.add_argument("--seed", type=int, default=0, help="seed of the experts' initialisations and batches")
    p.add_argument("--lr", type=_positive_float, default=0.01, help="expert SGD learning rate (constant, no momentum)")
    p.add_argument("--batch-size", type=positive_int, default=256, help="batch size")
    p.add_argument("--augment", default=aug.DSA_DEFAULT, help="DSA strategy ('none' disables)")
    p.add_argument("--model", default="ConvNet", help="network")
    p.add_argument("--model-kwargs", default="{}", help='JSON overrides, e.g. \'{"width": 64}\'')
    p.add_argument("--zca", action="store_true", help="ZCA-whiten instead of mean/std normalisation (default: off)")
    p.add_argument("--group", type=positive_int, default=1, help="experts trained at once (vmapped)")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="storage dtype of the snapshots")
    p.add_argument("--max-per-class", type=positive_int, default=None,
                   help="use only this many images per class (default: all)")
    p.add_argument("--data-dir", default=None, help="TFDS data_dir or a directory of IDX files (default: TFDS's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _run(args) -> int:
    augment = None if args.augment.lower() in ("", "none") else args.augment
    try:
        model_kwargs = json.loads(args.model_kwargs)
    except json.JSONDecodeError as e:
        raise JaxddError(f"--model-kwargs must be a JSON object, got {args.model_kwargs!r} ({e})") from None
    if not isinstance(model_kwargs, dict):
        raise JaxddError(f"--model-kwargs must be a JSON object such as '{{\"width\": 64}}', got {args.model_kwargs!r}")
    buf = make_experts(args.dataset, args.out, num_experts=args.num_experts, epochs=args.epochs, seed=args.seed,
                       lr=args.lr, batch_size=args.batch_size, augment=augment, model=args.model,
                       model_kwargs=model_kwargs, zca=args.zca, group=args.group,
                       dtype=args.dtype, max_per_class=args.max_per_class, data_dir=args.data_dir,
                       progress=not args.no_progress)
    print(f"{buf.num_experts} experts x {buf.epochs + 1} snapshots x {buf.num_params} parameters "
          f"({buf.nbytes() / 2**20:.1f} MiB, {buf.dtype}) -> {args.out}")
    return 0


def register(register_subcommand) -> None:
    register_subcommand("experts", "train expert trajectories for MTT (resumable buffer)", _add_arguments, _run)
