"""theory: dataset distillation of two-layer networks on multi-index models, and a benchmark of the r^2 d + L
memory law (Kinoshita, Nishikawa, Toyoizumi, arXiv 2603.14830). See theory/README.md.

Flat public API; every function is pure and takes explicit keys.
"""
from theory.tasks import (KINDS, MIMTask, expected_gradient, expected_hessian, link, make_mim_task, sample,
                          target)
from theory.network import (Moments, TwoLayerInit, features, first_layer_grad, first_layer_step, forward,
                            init_two_layer, moments, moments_mse, mse_loss, normalise_rows,
                            population_first_layer_grad, readout_from_moments, ridge_readout,
                            train_one_step_ridge)
from theory.distill import (STAGE2_KINDS, DistilledSet, decode_stage2, distill_end2end, distill_gm,
                            distill_pm_ridge, gm_loss, init_stage2, size_mask, stage2_readout)
from theory.metrics import (memory_claim, memory_model, memory_model_lowrank, memory_points, memory_stage2,
                            offsub, principal_cos2, x_in_span)
from theory.search import bucketize, default_grid, m_star_per_seed, m_star_rate, passes, run_curve

__all__ = [n for n in dir() if not n.startswith("_")]
