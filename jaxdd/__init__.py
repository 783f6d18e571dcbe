"""jaxdd: dataset distillation in JAX.

Flat public API; users never import private paths::

    import jaxdd
    out = jaxdd.distill_dataset("dm", "digits", ipc=5, iterations=100, out_dir="runs/dm")
    print(jaxdd.evaluate_run("runs/dm", num_models=4, epochs=300)["synthetic"]["mean"])
    fig = jaxdd.show_synthetic("runs/dm")             # a matplotlib Figure, one row per class

Own data and models: ``distill_dataset("dm", (x, y), ipc=5, model=MyCNN(num_classes=10))`` with numpy arrays and any
flax module satisfying ``jaxdd.MODEL_CONTRACT``; ``evaluate_run(run, test=(x_test, y_test), model=MyCNN(...))``.

Names: the method constructors are ``jaxdd.dm``, ``jaxdd.dc``, ``jaxdd.dsa``, ``jaxdd.mtt``, ``jaxdd.kip``,
``jaxdd.bptt``, ``jaxdd.sre2l`` and ``jaxdd.dwa`` (both built on ``jaxdd.recover``), each with its paper's defaults
and the backend's fast settings (which ``jaxdd distill`` reads from them); the wrapper ``jaxdd.with_mutual_info``;
the parameterizations ``jaxdd.pixels`` and ``jaxdd.low_rank``. The DSA *augmentation* is ``jaxdd.dsa_augment`` (``jaxdd.augment.dsa``).
The modules ``jaxdd.train``, ``jaxdd.augment``, ``jaxdd.data``, ``jaxdd.models`` are modules; the training function
is ``jaxdd.train_model`` (``jaxdd.train.train``). Importing jaxdd changes no global state (no matplotlib backend).
"""
__version__ = "0.1.0"

from jaxdd import augment, data, models  # noqa: E402
from jaxdd.augment import DSA_DEFAULT, DSA_NO_FLIP, DCParams, DSAParams, dc_augment, parse_strategy  # noqa: E402
from jaxdd.augment import dsa as dsa_augment  # noqa: E402
from jaxdd.checkpoint import Artifact, Checkpointer, load_artifact, load_teacher, save_artifact  # noqa: E402
from jaxdd.data import (  # noqa: E402
    Dataset, Preprocess, apply_preprocess, as_dataset, available_datasets, class_index, fingerprint, fit_preprocess,
    from_arrays, invert_preprocess, load, register_dataset, sample_per_class, split_train_val,
)
from jaxdd.distill import (  # noqa: E402
    DistillConfig, DistillResult, DistillState, JsonlLogger, MultiResult, RealPool, distill, distill_many, distill_step,
    init_state, make_pool, make_step,
)
from jaxdd.evaluate import EvalResult, evaluate_random_subset, evaluate_synthetic, random_subset  # noqa: E402
from jaxdd.methods import MethodSpec, Option, available_methods, get_method, register_method  # noqa: E402
from jaxdd.models import (  # noqa: E402
    MODEL_CONTRACT, apply_model, available_models, check_model, get_model, init_model, register_model,
)
from jaxdd.objectives import (  # noqa: E402
    Objective, Synthetic, bptt, dc, dm, dwa, gradient_matching, kip, mtt, recover, sre2l, with_mutual_info,
)
from jaxdd.objectives.recover.teacher import TeacherConfig  # noqa: E402
from jaxdd.objectives.trajectory.experts import ExpertBuffer, ExpertProtocol, train_experts  # noqa: E402
from jaxdd.api import (  # noqa: E402
    available_parameterizations, distill_dataset, distill_many_dataset, evaluate_many_runs, evaluate_run,
    make_experts, register_parameterization, relabel_evaluate_run, train_teacher,
)
from jaxdd.plots import save_image_grid, show_synthetic  # noqa: E402  (matplotlib is imported on first use)
from jaxdd.synthetic import Parameterization, pixel_budget, pixels  # noqa: E402
from jaxdd.synthetic.low_rank import low_rank  # noqa: E402  (registers --param low_rank)
from jaxdd import train  # noqa: E402  (the module: jaxdd.train.predict_many, jaxdd.train.train_many, ...)
from jaxdd.train import (  # noqa: E402
    TrainProtocol, accuracy, cross_entropy, default_protocol, predict_many, train_many, unroll_sgd,
)
from jaxdd.train import train as train_model  # noqa: E402
from jaxdd.types import Batch, JaxddError  # noqa: E402


def dsa(module, num_classes, image_shape, *args, **kwargs):
    """The DSA method (gradient matching with Siamese augmentation): ``jaxdd.objectives.dsa``. Until issue 22
    ``jaxdd.dsa`` was the augmentation, now ``jaxdd.dsa_augment``; a call in that form gets an error saying so."""
    import flax.linen as _nn

    if not isinstance(module, _nn.Module):
        raise JaxddError("jaxdd.dsa is the DSA distillation method, dsa(module, num_classes, image_shape, ...); the "
                         "augmentation jaxdd.dsa used to name is jaxdd.dsa_augment(x, key, strategy, ...)")
    return objectives.dsa(module, num_classes, image_shape, *args, **kwargs)


from jaxdd import objectives  # noqa: E402
from jaxdd import sharding  # noqa: E402
from jaxdd.sharding import initialize_distributed, make_mesh, shard_objective, shard_pool  # noqa: E402
