"""CPU benchmark: the evaluation loop as users call it, ``jaxdd.train.train_many`` (the one training loop, ``fit``).

    python experiments/bench/bench_train_loop.py --epochs 20

10 ConvNets (width 128, depth 3) on 100 random 28x28x1 images with DSA, batch 256 (one step per epoch), timed after a
one-epoch warm-up that compiles, one network at a time (``group=1``, the CPU default) and the 10 vmapped
(``group=10``); prints seconds per network per 300 epochs. Run it twice on a quiet machine (and from a ``git
worktree`` of another commit with ``PYTHONPATH`` set to it, to compare two versions the same day): runs on this
2-core machine spread by about +-10 %.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[2]))  # after PYTHONPATH: another checkout can be timed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=20, help="epochs timed per setting")
    args = p.parse_args(argv)
    import jax
    import jax.numpy as jnp

    from jaxdd.augment import DSA_DEFAULT
    from jaxdd.models import eval_module
    from jaxdd.train import TrainProtocol, train_many

    x = jax.random.normal(jax.random.key(0), (100, 28, 28, 1))
    y = jnp.arange(100, dtype=jnp.int32) % 10
    module = eval_module("ConvNet", 10, None)
    keys = jax.random.split(jax.random.key(1), 10)
    for group in (1, 10):
        jax.block_until_ready(train_many(keys, module, x, y, TrainProtocol(epochs=0, augment=DSA_DEFAULT),
                                         group=group))  # compiles (one epoch)
        protocol = TrainProtocol(epochs=args.epochs - 1, augment=DSA_DEFAULT)  # the loop runs epochs + 1
        t0 = time.perf_counter()
        jax.block_until_ready(train_many(keys, module, x, y, protocol, group=group))
        per = (time.perf_counter() - t0) / len(keys) / args.epochs * 300
        print(f"group {group}: {per:.1f} s per network per 300 epochs", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
