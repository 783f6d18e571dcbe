"""Class-incremental continual learning on Fashion-MNIST (METHODS.md 9.1): 5 steps of 2 classes, a budget of 10
pixel images per class, 3 class orders (seeds 0, 1, 2); memories: random real subset, herding (random-init
ConvNetW32 embeddings), pixel DM, low-rank DM (rank 2: 70 images per class in the same floats).

Command: jaxdd continual --dataset fashion_mnist --steps 5 --ipc 10 --seeds 3 --out runs/continual_fmnist
         --methods random,herding,dm,lowrank_dm --rank 2 --lowrank-init svd --model ConvNetW32 --iterations 20
         --real-per-class 32 --eval-models 1 --eval-epochs 20 --herding-candidates 300
Runtime: see experiments/results/continual_fmnist.json (per-cell seconds) on the shared 2-core CPU.
Paper: the plugin reports LoDM above DM on CIFAR-10 (5 steps x 2 classes, 10 IPC, LoDM 80/class at r=2); the
numbers were not available (METHODS.md 9). Reductions against the protocol (1000 eval epochs, 3 nets x 5 seeds,
20000 DM iterations, 256 real/class, ConvNet width 128): ConvNetW32 everywhere, 20 DM iterations with 32 real
images per class, 1 network x 20 epochs (DSA) per seed and step, 3 seeds, herding among 300 random candidates per
class, and the low-rank sets start from the SVD init (jaxdd extension; the paper's noise init cannot converge in
20 iterations). This is NOT an `experiments/run.py` distillation config: run the command above.
"""
CONFIG = {
    "method": "continual", "dataset": "fashion_mnist", "ipc": 10,
    "continual": {"steps": 5, "ipc": 10, "seeds": [0, 1, 2], "methods": ["random", "herding", "dm", "lowrank_dm"],
                  "rank": 2, "lowrank_init": "svd", "model": "ConvNetW32", "iterations": 20, "real_per_class": 32,
                  "eval_models": 1, "eval_epochs": 20, "herding_candidates": 300},
}
