"""SRe2L (recover against a BN teacher, noise init, r_var 1) on Fashion-MNIST, 50 images per class, CPU budget.

Command:
  jaxdd teacher --dataset fashion_mnist --model ConvNetBN --model-kwargs '{"width": 32}' --epochs 2 \
      --out runs/teacher_fmnist                       # squeeze (needed first; ~25 min on the shared 2-core CPU)
  python experiments/run.py sre2l_fmnist_ipc50        # recover + hard-label evaluation (run.py protocol)
  python experiments/sre2l_dwa_fmnist.py              # SRe2L vs DWA at IPC 10 (first 10 images per class of this
                                                      # synthesis, as DWA does on ImageNet) and 50: hard and soft
                                                      # labels, diversity -> experiments/results/sre2l_dwa_fmnist.json
Runtime: (measured on the heavily shared 2-core CPU) recover 100 Adam iterations on 500 images through a width-32
ConvNetBN: SRe2L 220 s, DWA 740 s (per-batch perturbed teachers are vmapped convolutions, slower on XLA:CPU); the
recover budget is far below the papers' 1000 iterations; the evaluations follow the protocols (see CONFIG).
Paper: SRe2L/DWA report no Fashion-MNIST numbers; DWA Table 1 (CIFAR-10, ResNet-18 teacher and student, soft labels)
is the closest reference. Hard-label ConvNet-3 references for this dataset: METHODS.md section 12.
"""
CONFIG = {
    "method": "sre2l", "dataset": "fashion_mnist", "ipc": 50, "iterations": 100, "seed": 0,
    "model": "ConvNetW32",  # the evaluation (student) network; the teacher is read from --teacher
    "method_options": {"teacher": "runs/teacher_fmnist"},
    "eval": {"models": 2, "epochs": 20, "augment": True},
    # read by experiments/sre2l_dwa_fmnist.py (run.py ignores them)
    # per evaluated subset (IPC): hard = the matching methods' protocol (3 nets x 300 epochs with DSA, like the
    # README table's other rows); soft = the DWA CIFAR relabel recipe (400 epochs, batch 128, AdamW, MixUp, T 30)
    "subsets": {"10": {"hard": {"epochs": 300, "models": 3}, "soft": {"epochs": 400, "models": 3}},
                "50": {"hard": {"epochs": 300, "models": 2}, "soft": {"epochs": 400, "models": 2}}},
}
