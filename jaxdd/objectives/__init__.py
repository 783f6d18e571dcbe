"""Matching objectives, one file per family; all follow ``jaxdd.objectives.base.Objective``."""
from jaxdd.objectives.base import Objective, Synthetic, no_init, no_update
from jaxdd.objectives.distribution import class_mean_embeddings, dm, per_class_siamese_dsa
from jaxdd.objectives.trajectory import mtt, unroll_sgd_adjoint, unroll_student
from jaxdd.objectives.recover import dwa, recover, relabel_evaluate, sre2l  # registers sre2l, dwa
from jaxdd.objectives.mutual_info import contrastive_terms, nce_loss, with_mutual_info
from jaxdd.objectives.gradient import dc, dsa, gradient_matching, layerwise_distance
from jaxdd.objectives.kernel import kernel_ridge_predict, kip
from jaxdd.objectives.performance import bptt

__all__ = ["mtt", "unroll_sgd_adjoint", "unroll_student",
           "bptt", "Objective", "Synthetic", "class_mean_embeddings", "dc", "dm", "dsa", "gradient_matching",
           "kernel_ridge_predict", "kip", "layerwise_distance", "no_init", "no_update",
           "per_class_siamese_dsa", "recover", "relabel_evaluate", "sre2l", "dwa", "contrastive_terms", "nce_loss", "with_mutual_info"]
