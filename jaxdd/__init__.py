"""jaxdd: dataset distillation in JAX.

Flat public API; users never import private paths::

    import jaxdd
    out = jaxdd.distill_dataset("dm", "digits", ipc=5, iterations=100, out_dir="runs/dm")
    print(jaxdd.evaluate_run("runs/dm", num_models=4, epochs=300)["synthetic"]["mean"])
"""
__version__ = "0.1.0"

from jaxdd import augment, data, models  # noqa: E402
from jaxdd.augment import DSA_DEFAULT, DSA_NO_FLIP, DCParams, DSAParams, dc_augment, dsa, parse_strategy  # noqa: E402,E501
from jaxdd.checkpoint import Artifact, Checkpointer, load_artifact, save_artifact  # noqa: E402
from jaxdd.data import (  # noqa: E402
    Dataset, Preprocess, apply_preprocess, class_index, fit_preprocess, invert_preprocess, load,
    sample_per_class, split_train_val,
)
from jaxdd.distill import (  # noqa: E402
    DistillConfig, DistillResult, DistillState, RealPool, distill, distill_step, init_state, make_pool, make_step,
)
from jaxdd.evaluate import EvalResult, evaluate_random_subset, evaluate_synthetic, random_subset  # noqa: E402
from jaxdd.methods import MethodSpec, Option, available_methods, get_method, register_method  # noqa: E402
from jaxdd.models import apply_model, available_models, get_model, init_model  # noqa: E402
from jaxdd.objectives import Objective, Synthetic, bptt, dc, dm, gradient_matching, kip  # noqa: E402
from jaxdd.pipeline import (  # noqa: E402
    available_parameterizations, distill_dataset, evaluate_run, register_parameterization,
)
from jaxdd.synthetic import Parameterization, pixel_budget, pixels  # noqa: E402
from jaxdd.synthetic.low_rank import low_rank  # noqa: E402  (registers --param low_rank)
from jaxdd.train import TrainProtocol, cross_entropy, default_protocol, train, train_many, unroll_sgd  # noqa: E402
from jaxdd.types import Batch, JaxddError  # noqa: E402
from jaxdd import sharding  # noqa: E402  (jaxdd.multi is imported explicitly: it registers CLI subcommands)
from jaxdd.sharding import initialize_distributed, make_mesh, shard_objective, shard_pool  # noqa: E402
