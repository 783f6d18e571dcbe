"""``jaxdd relabel-eval``: soft-label evaluation with a teacher (``jaxdd.objectives.recover``)."""
from __future__ import annotations

from jaxdd.objectives.recover import RelabelProtocol
from jaxdd.api import relabel_evaluate_run


def _add_relabel_arguments(p) -> None:
    d = RelabelProtocol()
    p.add_argument("run", help="run directory holding synthetic.npz (from jaxdd distill)")
    p.add_argument("--teacher", required=True, help="teacher directory (jaxdd teacher ... --out DIR)")
    p.add_argument("--models", type=int, default=3, help="students trained at once (vmapped)")
    p.add_argument("--model", default=None, help="student network (default: the run's model)")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--temperature", type=float, default=d.temperature)
    p.add_argument("--t2", action="store_true", help="multiply the KL by T^2")
    p.add_argument("--mixup", type=float, default=d.mixup, help="MixUp alpha (0 = off)")
    p.add_argument("--cutmix", type=float, default=d.cutmix, help="CutMix alpha (0 = off; overrides MixUp)")
    p.add_argument("--shift", type=int, default=d.shift)
    p.add_argument("--no-flip", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)


def _run_relabel(args) -> int:
    proto = RelabelProtocol(epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay,
                            batch_size=args.batch_size, temperature=args.temperature, t2=args.t2, mixup=args.mixup,
                            cutmix=args.cutmix, shift=args.shift, flip=not args.no_flip)
    out = relabel_evaluate_run(args.run, args.teacher, num_models=args.models, model=args.model, protocol=proto,
                               seed=args.seed, data_dir=args.data_dir)
    s = out["soft_label"]
    print(f"soft-label: {100 * s['mean']:.2f} +- {100 * s['std']:.2f} % test accuracy ({len(s['accuracies'])} x "
          f"{s['model']}, {proto.epochs} epochs)")
    if "diversity" in out:
        print(f"diversity (mean within-class cosine distance of teacher embeddings): {out['diversity']['mean']:.4f}")
    print(f"-> {args.run}/relabel_eval.json")
    return 0


def register(register_subcommand) -> None:
    register_subcommand("relabel-eval", "evaluate a distilled set with a teacher's soft labels (SRe2L/DWA relabel)",
                        _add_relabel_arguments, _run_relabel)
