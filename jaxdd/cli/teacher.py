"""``jaxdd teacher``: train a batch-norm teacher for SRe2L/DWA (``jaxdd.api.train_teacher``)."""
from __future__ import annotations

from typing import Any
import json

from jaxdd.api import train_teacher
from jaxdd.objectives.recover.teacher import TeacherConfig
from jaxdd.types import JaxddError


def _add_arguments(p) -> None:
    from jaxdd.cli import _positive_float, nonnegative_int, positive_int

    p.add_argument("--dataset", required=True, help="dataset name (fashion_mnist, mnist, cifar10, digits, ...)")
    p.add_argument("--model", default="ConvNetBN", help="a batch-norm network (ConvNetBN, ResNet8BN, ResNet18BN)")
    p.add_argument("--model-kwargs", default="{}", help='JSON model overrides, e.g. \'{"width": 32}\'')
    p.add_argument("--out", required=True, help="teacher directory (rerun the same command to resume)")
    p.add_argument("--epochs", type=positive_int, default=TeacherConfig.epochs, help="training epochs")
    p.add_argument("--lr", type=_positive_float, default=TeacherConfig.lr, help="peak SGD lr (cosine to 0)")
    p.add_argument("--batch-size", type=positive_int, default=TeacherConfig.batch_size, help="batch size")
    p.add_argument("--weight-decay", type=float, default=TeacherConfig.weight_decay, help="SGD weight decay")
    p.add_argument("--shift", type=nonnegative_int, default=TeacherConfig.shift,
                   help="random shift augmentation (px)")
    p.add_argument("--no-flip", action="store_true", help="no horizontal flips (default: flips on)")
    p.add_argument("--seed", type=int, default=0, help="seed of the validation split and the training")
    p.add_argument("--data-dir", default=None, help="TFDS data_dir or a directory of IDX files (default: TFDS's)")


def _run(args) -> int:
    try:
        kwargs: Any = json.loads(args.model_kwargs)
    except json.JSONDecodeError as e:
        raise JaxddError(f"--model-kwargs must be a JSON object, got {args.model_kwargs!r} ({e})") from None
    if not isinstance(kwargs, dict):
        raise JaxddError(f"--model-kwargs must be a JSON object such as '{{\"width\": 32}}', got {args.model_kwargs!r}")
    config = TeacherConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                           weight_decay=args.weight_decay, shift=args.shift, flip=not args.no_flip)
    info = train_teacher(args.dataset, args.model, args.out, config=config, model_kwargs=kwargs, seed=args.seed,
                         data_dir=args.data_dir)
    print(f"teacher {info['model']} on {info['dataset']}: val {100 * (info['val_accuracy'] or 0):.2f} %, "
          f"test {100 * info['test_accuracy']:.2f} % ({info['epochs_done']} epochs) -> {args.out}")
    return 0


def register(register_subcommand) -> None:
    register_subcommand("teacher", "train a batch-norm teacher for SRe2L/DWA (squeeze; resumable)",
                        _add_arguments, _run)
