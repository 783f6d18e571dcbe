"""MTT on Fashion-MNIST, 1 image per class, small CPU budget (experts and distillation both cut hard).

Command: python experiments/run.py mtt_fmnist_ipc1
  (equivalently: jaxdd experts --dataset fashion_mnist --num-experts 2 --epochs 5 --max-per-class 300 --group 2
   --out runs/experts/fmnist_e5_c300, then jaxdd distill --method mtt --dataset fashion_mnist --ipc 1
   --experts runs/experts/fmnist_e5_c300 --syn-steps 10 --expert-epochs 2 --max-start-epoch 2 --memory constant
   --iterations 100 --lr-img 100 --out runs/mtt_fmnist_ipc1, with extras/syn_lr at 1e-7 as below)
Runtime: experts ~5 min (shared with mtt_fmnist_ipc10), distillation ~5-10 min, evaluation (3 nets x 300 epochs,
  DSA, learned lr) ~3 min on the 2-core CPU.
Paper: MTT FashionMNIST IPC 1 75.1 +- 0.9 [U] (a later reproduction; MTT published no FashionMNIST numbers; its
  CIFAR-10 IPC 1 cell uses syn_steps 50, expert_epochs 2, max_start_epoch 2, lr_img 100, lr_lr 1e-7, 100 experts x
  50 epochs on the full training set, 5000 iterations). Our budget: 2 experts x 5 epochs on 300 images/class,
  syn_steps 10, 100 iterations: expect well below the paper.
"""
CONFIG = {
    "method": "mtt", "dataset": "fashion_mnist", "ipc": 1, "iterations": 100, "seed": 0,
    "experts": {"out": "runs/experts/fmnist_e5_c300", "num_experts": 2, "epochs": 5, "max_per_class": 300,
                "group": 2},
    "method_options": {"experts": "runs/experts/fmnist_e5_c300", "syn_steps": 10, "expert_epochs": 2,
                       "max_start_epoch": 2, "batch_syn": 0, "memory": "constant"},
    "config_overrides": {"lr_img": 100.0, "lrs": (("extras/syn_lr", 1e-7),), "checkpoint_every": 25},
    "eval": {"models": 3, "epochs": 300, "augment": True},
    "baseline": True,
    "tiny": {"experts": {"out": "runs/experts_tiny/fmnist", "num_experts": 1, "epochs": 2, "max_per_class": 10},
             "method_options": {"experts": "runs/experts_tiny/fmnist", "syn_steps": 2, "expert_epochs": 1,
                                "max_start_epoch": 1}},
}
