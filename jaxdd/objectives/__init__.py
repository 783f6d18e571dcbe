"""Matching objectives, one file per family; all follow ``jaxdd.objectives.base.Objective``."""
from jaxdd.objectives.base import Objective, Synthetic, no_init, no_update
from jaxdd.objectives.distribution import class_mean_embeddings, dm, per_class_siamese_dsa

__all__ = ["Objective", "Synthetic", "class_mean_embeddings", "dm", "no_init", "no_update",
           "per_class_siamese_dsa"]
