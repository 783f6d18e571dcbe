"""jaxdd on your own numpy arrays with your own flax model, from the public API only (as in a notebook).

    python examples/own_data_and_model.py --out runs/own          # 2.5 minutes on 2 shared CPU cores
    python examples/own_data_and_model.py --tiny --out /tmp/own   # seconds: the smoke test tests/test_examples.py runs

What it does, step by step:

1. Own data: scikit-learn's 8x8 digits as plain numpy arrays (any (n, h, w[, c]) uint8 or [0, 1] float array and int
   labels work), wrapped with ``jaxdd.from_arrays`` to give the classes names.
2. Own model: a small ``flax.linen`` CNN that follows jaxdd's model contract (``jaxdd.MODEL_CONTRACT``):
   ``__call__(x, train=False, features=False)`` returns logits, or ``(logits, {"embedding": ...})``.
3. Distribution matching (DM) on them with ``jaxdd.distill_dataset``, logging every row through a callback that
   writes TensorBoard-style scalars (tensorboardX's ``SummaryWriter`` when it is installed, a CSV stand-in with the
   same ``add_scalar`` call otherwise), besides the default ``metrics.jsonl``.
4. ``jaxdd.evaluate_run`` on the held-out test arrays (a run made from arrays has no name to find its test split
   by), and a random real subset of the same size under the same protocol for comparison.
5. ``jaxdd.show_synthetic``: a matplotlib Figure of the images per class with class names, saved as a PNG.
6. A custom objective (matching the per-class mean AND standard deviation of a random network's embeddings: DM plus
   second moments) written against ``jaxdd.Objective``, run with the library's pieces: ``make_pool``,
   ``init_state`` and ``make_step`` (a jitted ``distill_step`` that takes the pool as an argument instead of closing
   over it), then evaluated with ``jaxdd.evaluate_synthetic``.

Expected output (full mode, seed 0; measured once on a 2-core CPU machine, 2 min 32 s wall, all five networks trained
without augmentation for 300 epochs on 10 images per class, tested on the 360 held-out digits):

    DM test accuracy 97.00 % (random real subset 90.39 %)
    custom objective: final loss 13.12, test accuracy 97.61 +- 0.33 % (5 x SmallCNN)

Other machines may differ in the last digits (float rounding); the smoke test asserts only that every step runs.
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import jaxdd

CLASS_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


class SmallCNN(nn.Module):
    """Two 3x3 conv blocks and a linear classifier, following jaxdd's model contract."""

    num_classes: int = 10
    width: int = 32

    @nn.compact
    def __call__(self, x, train: bool = False, features: bool = False):
        h = nn.relu(nn.GroupNorm(num_groups=4)(nn.Conv(self.width, (3, 3))(x)))
        h = nn.avg_pool(h, (2, 2), (2, 2))
        h = nn.relu(nn.GroupNorm(num_groups=4)(nn.Conv(self.width, (3, 3))(h)))
        emb = h.reshape(h.shape[0], -1)
        logits = nn.Dense(self.num_classes)(emb)
        return (logits, {"embedding": emb}) if features else logits


def own_arrays(seed: int = 0):
    """Digits as numpy arrays, split 80/20 at random: ((x_train, y_train), (x_test, y_test)), x uint8 (n, 8, 8)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images * (255 / 16)).round().astype(np.uint8)
    y = bunch.target.astype(np.int64)
    perm = np.random.default_rng(seed).permutation(len(y))
    cut = int(0.8 * len(y))
    return (x[perm[:cut]], y[perm[:cut]]), (x[perm[cut:]], y[perm[cut:]])


class CsvScalarWriter:
    """Stand-in for a TensorBoard ``SummaryWriter``: the same ``add_scalar(tag, value, step)``, one CSV per tag."""

    def __init__(self, logdir: str | Path):
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        path = self.logdir / (tag.replace("/", "_") + ".csv")
        new = not path.exists()
        with path.open("a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["step", tag])
            w.writerow([step, value])


def tensorboard_callback(logdir: str | Path):
    """A jaxdd logging callback ``(step, metrics) -> None`` that writes every metric as a scalar."""
    try:
        from tensorboardX import SummaryWriter  # or torch.utils.tensorboard / flax.metrics.tensorboard

        writer = SummaryWriter(str(logdir))
    except ImportError:
        writer = CsvScalarWriter(logdir)

    def callback(step: int, metrics: dict) -> None:
        for name, value in metrics.items():
            writer.add_scalar(f"distill/{name}", value, step)

    return callback


def moments_objective(module: nn.Module, num_classes: int, real_per_class: int = 64) -> jaxdd.Objective:
    """Match per-class mean and standard deviation of a fresh random network's embeddings (real vs synthetic)."""

    def loss(syn: jaxdd.Synthetic, real, state, key):
        variables = jaxdd.init_model(module, key, syn.x.shape[1:])  # a new random network every step

        def moments(x):
            emb = jaxdd.apply_model(module, variables, x, train=True, features=True).features["embedding"]
            emb = emb.reshape(num_classes, -1, emb.shape[-1])  # class-major batches
            return emb.mean(1), emb.std(1)

        mu_s, sd_s = moments(syn.x)
        mu_r, sd_r = jax.lax.stop_gradient(moments(real.x))
        mean_term = jnp.sum(jnp.square(mu_r - mu_s))
        std_term = jnp.sum(jnp.square(sd_r - sd_s))
        return mean_term + std_term, {"mean_term": mean_term, "std_term": std_term}

    return jaxdd.Objective("moments", lambda key: (), loss, real_per_class=real_per_class)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/own_data_and_model")
    p.add_argument("--tiny", action="store_true", help="a seconds-long smoke run (few steps, one short evaluation)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    out = Path(args.out)
    ipc = 2 if args.tiny else 10
    iterations = 4 if args.tiny else 1000
    eval_kw = dict(num_models=1, epochs=4) if args.tiny else dict(num_models=5, epochs=300)
    model = SmallCNN(num_classes=10, width=8 if args.tiny else 32)
    (x_train, y_train), (x_test, y_test) = own_arrays(args.seed)
    train = jaxdd.from_arrays(x_train, y_train, class_names=CLASS_NAMES)

    # 3. DM on own arrays with the own model; every logged row also goes to the TensorBoard-style callback.
    summary = jaxdd.distill_dataset(
        "dm", train, ipc, model=model, iterations=iterations, seed=args.seed, out_dir=str(out / "dm"),
        callbacks=[tensorboard_callback(out / "tensorboard")], progress=not args.tiny,
        method_options={"real_per_class": 16} if args.tiny else None)
    print(f"DM: {summary['num_images']} images, final loss {summary['final_metrics']['loss']:.4g}")

    # 4. Evaluate on the test arrays (and a random real subset of the same size).
    res = jaxdd.evaluate_run(str(out / "dm"), model=model, test=(x_test, y_test), train=(x_train, y_train),
                             baseline=True, augment=False, **eval_kw)
    print(f"DM test accuracy {100 * res['synthetic']['mean']:.2f} % "
          f"(random real subset {100 * res['random_subset']['mean']:.2f} %)")

    # 5. The figure of the images per class, with class names.
    fig = jaxdd.show_synthetic(jaxdd.load_artifact(out / "dm"), title=f"DM, {ipc} images per class")
    fig.savefig(out / "dm_synthetic.png")

    # 6. A custom objective under the library's jitted step.
    pre = jaxdd.fit_preprocess(train.images, train.mean, train.std)
    pool = jaxdd.make_pool(jaxdd.apply_preprocess(pre, train.images), train.labels, train.num_classes)
    objective = moments_objective(model, train.num_classes, real_per_class=16 if args.tiny else 64)
    param = jaxdd.pixels(ipc, init="real")
    key = jax.random.key(args.seed)
    state, tx = jaxdd.init_state(key, objective, param, pool, jaxdd.DistillConfig(lr_img=1.0, momentum=0.5))
    step = jaxdd.make_step(objective, param, tx)  # jax.jit of distill_step; pool and key are arguments
    for _ in range(iterations):
        state, metrics = step(state, pool, key)
    images = state.syn["data"]  # pixels: the learnable pytree is the image array itself
    labels = jnp.repeat(jnp.arange(train.num_classes), ipc)
    x_test_n = jaxdd.apply_preprocess(pre, jaxdd.from_arrays(x_test, y_test, num_classes=10).images)
    custom = jaxdd.evaluate_synthetic(jax.random.key(args.seed + 1), images, labels, x_test_n, jnp.asarray(y_test),
                                      num_classes=10, model=model,
                                      protocol=jaxdd.default_protocol(None, epochs=eval_kw["epochs"]),
                                      num_models=eval_kw["num_models"])
    print(f"custom objective: final loss {float(metrics['loss']):.4g}, test accuracy {custom}")
    jaxdd.show_synthetic(images, labels, CLASS_NAMES, pre, title="moments objective").savefig(
        out / "moments_synthetic.png")

    result = {"dm": res["synthetic"]["mean"], "random_subset": res["random_subset"]["mean"],
              "moments": custom.mean, "moments_final_loss": float(metrics["loss"])}
    (out / "summary.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
