"""``jaxdd distill-many`` and ``jaxdd evaluate-many``: N experiments in one program (``jaxdd.multi``)."""
from __future__ import annotations

from jaxdd import sharding as shd
from jaxdd.api import distill_many_dataset, evaluate_many_runs
from jaxdd.types import JaxddError


def _parse_grid(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise JaxddError(f"a grid is comma-separated floats such as 0.3,1,3; got {text!r}") from e


def _add_distill_many(p) -> None:
    from jaxdd.cli import _add_distill, positive_int

    _add_distill(p)
    g = p.add_argument_group("experiments and devices")
    g.add_argument("--num-exp", type=positive_int, default=None,
                   help="number of experiments in one program (default: the grid length, else 1)")
    g.add_argument("--lr-img-grid", default=None,
                   help="per-experiment image lr, comma-separated (length N) (default: none, all use --lr-img)")
    g.add_argument("--hparam", action="append", default=[], metavar="NAME=V1,V2,...",
                   help="per-experiment optimiser hyperparameter, e.g. data:momentum=0.5,0.9 or "
                        "extras/syn_lr=1e-5,1e-4 (repeatable; default: none)")
    g.add_argument("--mesh-exp", type=positive_int, default=None,
                   help="devices on the experiment axis (default gcd(N, devices))")
    g.add_argument("--mesh-data", type=positive_int, default=None, help="devices on the data axis (default: the rest)")
    g.add_argument("--syn-sharding", choices=shd.SYN_SHARDINGS, default="replicated",
                   help="synthetic images replicated over the data axis, or split by class")
    g.add_argument("--split-pool", action="store_true", help="split the real training pool over the data axis")
    g.add_argument("--distributed", action="store_true",
                   help="call jax.distributed.initialize first (multi-host; see jaxdd.sharding)")


def _run_distill_many(args) -> int:
    from jaxdd.cli import method_options

    if args.distributed:
        info = shd.initialize_distributed()
        print(f"process {info['process_index']}/{info['process_count']}: {info['local_devices']} local of "
              f"{info['global_devices']} devices")
    given = method_options(args)
    hparams = {}
    if args.lr_img_grid:
        hparams["data"] = _parse_grid(args.lr_img_grid)
    for item in args.hparam:
        name, eq, vals = item.partition("=")
        if not eq:
            raise JaxddError(f"--hparam takes NAME=V1,V2,... (e.g. data:momentum=0.5,0.9), got {item!r}")
        hparams[name.strip()] = _parse_grid(vals)
    lengths = {len(v) for v in hparams.values()}
    if len(lengths) > 1:
        raise JaxddError(f"every grid needs one value per experiment; got lengths {sorted(lengths)}")
    num_exp = args.num_exp or (lengths.pop() if lengths else 1)
    overrides = {}
    if args.lr_img is not None:
        overrides["lr_img"] = args.lr_img
    if args.checkpoint_every is not None:
        overrides["checkpoint_every"] = args.checkpoint_every
    overrides["checkpoint_seconds"] = args.checkpoint_seconds
    out = distill_many_dataset(
        args.method, args.dataset, args.ipc, num_exp=num_exp, out_dir=args.out, seed=args.seed, hparams=hparams,
        iterations=args.iterations, model=args.model, param=args.param,
        param_options={"rank": args.rank} if args.rank is not None else {}, init=args.init, method_options=given,
        config_overrides=overrides, zca=args.zca, data_dir=args.data_dir, mesh_exp=args.mesh_exp,
        mesh_data=args.mesh_data, syn_sharding=args.syn_sharding, split_pool=args.split_pool,
        eval_every=args.eval_every, progress=not args.no_progress)
    m = out["mesh"]
    print(f"distilled {num_exp} sets of {out['num_images']} images in {out['seconds']:.1f}s on {m['devices']} "
          f"device(s) (exp {m['exp']} x data {m['data']}) -> {args.out}/exp_000 .. exp_{num_exp - 1:03d}")
    if out["diverged"]:
        print(f"diverged (no artifact): experiments {out['diverged']}")
    return 0


def _add_evaluate_many(p) -> None:
    from jaxdd.cli import positive_int

    p.add_argument("run", help="distill-many directory holding exp_*/synthetic.npz")
    p.add_argument("--models", type=positive_int, default=5,
                   help="networks per experiment (all E x K trained together)")
    p.add_argument("--epochs", type=positive_int, default=None, help="epochs (default 1000 with DSA, 300 without)")
    p.add_argument("--model", default=None, help="evaluation network (default: the distillation one)")
    p.add_argument("--seed", type=int, default=0, help="seed of the evaluation networks")
    p.add_argument("--augment", default=None, help="DSA strategy; 'none' disables (default: the method's)")
    p.add_argument("--lr", type=float, default=None, help="evaluation lr (default 0.01 or the learned one)")
    p.add_argument("--data-dir", default=None, help="TFDS data_dir or a directory of IDX files (default: TFDS's)")


def _run_evaluate_many(args) -> int:
    augment = True if args.augment is None else (False if args.augment.lower() == "none" else args.augment)
    out = evaluate_many_runs(args.run, num_models=args.models, epochs=args.epochs, model=args.model, seed=args.seed,
                             augment=augment, lr=args.lr, data_dir=args.data_dir)
    for r in out["experiments"]:
        hp = " ".join(f"{k}={v:g}" for k, v in r["hparams"].items())
        print(f"{r['dir']} {hp}: {100 * r['mean']:.2f} +- {100 * r['std']:.2f} %")
    print(f"{out['networks']} networks in {out['seconds']:.1f}s; mean over experiments "
          f"{100 * out['mean_of_means']:.2f} +- {100 * out['std_of_means']:.2f} % -> {args.run}/eval_many.json")
    return 0


def register(register_subcommand) -> None:
    register_subcommand("distill-many", "distil N synthetic sets (seeds / hyperparameter grid) in one program, "
                        "sharded over the devices", _add_distill_many, _run_distill_many)
    register_subcommand("evaluate-many", "evaluate every experiment of a distill-many run at once",
                        _add_evaluate_many, _run_evaluate_many)
