"""Evaluation: train K fresh networks on a synthetic set and test them.

The K networks are independent (network i depends only on its key). On GPU/TPU they train together, vmapped in one
program; on CPU one after the other, each its own program (``jaxdd.train.default_group``), so there the time grows
linearly with K.

The protocol is the papers' (docs/methods.md, evaluation): SGD lr 0.01, momentum 0.9, wd 5e-4, batch 256, lr x0.1
after epoch E//2+1; E = 1000 epochs with augmentation, 300 without. Which augmentation is the method's
(``standard_eval_augment``): DSA for DSA, DM and MTT; for DC the DC code's rule (``dc_eval_augment``): DC
augmentation on MNIST or on a ConvNetBN network, none otherwise. The papers train ``PAPER_EVAL_MODELS`` networks per
set (MTT: 5); ``evaluate_run`` defaults to ``DEFAULT_EVAL_MODELS``. Accuracy is measured on whatever split is passed:
the library's driver passes a validation split carved from the training set during distillation; the test split is
used only for the final report.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxdd import augment as aug
from jaxdd.data import check_images, sample_per_class, class_index
from jaxdd.models import check_model, eval_module, get_model, model_name  # noqa: F401  (eval_module: its old home)
from jaxdd.train import TrainProtocol, accuracy, predict_many, train_many
from jaxdd.types import JaxddError, PRNGKey


DEFAULT_EVAL_MODELS = 5  # networks per set by default (cheap on CPU, where they train one after the other)
PAPER_EVAL_MODELS = 20  # DC, DSA and DM: num_eval 20 networks per synthetic set; a method may say otherwise


def dc_eval_augment(dataset: str | None, model: str) -> str | None:
    """The augmentation the DC code trains its evaluation networks with, for a set distilled by DC (without DSA),
    as a ``TrainProtocol.augment`` string: ``"dc:crop_scale_rotate"`` on MNIST; ``"dc:crop_noise"`` when the
    evaluation network is ``ConvNetBN`` (on any dataset, MNIST included); otherwise None (no augmentation). These
    are the reference's exact conditions (dataset name MNIST, network name ConvNetBN): FashionMNIST, CIFAR, the
    8x8 digits and other batch-norm networks get none."""
    strategy = None
    if (dataset or "").lower() == "mnist":
        strategy = "crop_scale_rotate"
    if model == "ConvNetBN":
        strategy = "crop_noise"
    return None if strategy is None else aug.DC_PREFIX + strategy


def _method_defaults(method: str | None) -> dict:
    from jaxdd.methods import get_method

    if not method:
        return {}
    try:
        return get_method(method).defaults
    except JaxddError:  # a run made by a method this installation does not have: no method-specific rule
        return {}


def standard_eval_augment(method: str | None, dataset: str, model: str,
                          eval_augment: str | None = None) -> str | None:
    """The evaluation augmentation of a set distilled by ``method`` from ``dataset``, evaluated on ``model``.

    ``eval_augment`` (the strategy the run recorded, by default the method's ``defaults["eval_augment"]``): a DSA
    strategy there wins (DSA, DM, MTT: 1000 epochs of non-Siamese DSA). Otherwise a method whose defaults set
    ``eval_dc_augment`` (DC) follows ``dc_eval_augment(dataset, model)``; any other method trains without
    augmentation."""
    defaults = _method_defaults(method)
    if eval_augment is None:
        eval_augment = defaults.get("eval_augment")
    if aug.parse_train_augment(eval_augment)[0] != "none":
        return eval_augment
    if defaults.get("eval_dc_augment"):
        return dc_eval_augment(dataset, model)
    return None


def paper_eval_models(method: str | None) -> int:
    """How many networks the method's paper trains per synthetic set: ``defaults["eval_models"]`` (MTT: 5), else
    ``PAPER_EVAL_MODELS`` (20)."""
    return int(_method_defaults(method).get("eval_models", PAPER_EVAL_MODELS))


@dataclasses.dataclass(frozen=True)
class EvalResult:
    accuracies: np.ndarray  # (K,) test accuracy of each network, in [0, 1]
    model: str
    protocol: TrainProtocol

    @property
    def mean(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def std(self) -> float:
        return float(np.std(self.accuracies))

    def to_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "accuracies": [float(a) for a in self.accuracies],
                "model": self.model, "protocol": dataclasses.asdict(self.protocol)}

    def __str__(self) -> str:
        return f"{100 * self.mean:.2f} +- {100 * self.std:.2f} % ({len(self.accuracies)} x {self.model})"


def evaluate_synthetic(key: PRNGKey, images: jax.Array, labels: jax.Array, test_images: jax.Array,
                       test_labels: jax.Array, *, num_classes: int, model="ConvNet",
                       num_models: int = DEFAULT_EVAL_MODELS,
                       protocol: TrainProtocol = TrainProtocol(), model_kwargs: dict | None = None,
                       progress: Callable[[int], None] | None = None, group: int | None = None) -> EvalResult:
    """Train ``num_models`` fresh ``model`` networks on (images, labels) with ``protocol``; test accuracy of each.

    images: (n, h, w, c) float32 in the models' normalised space; labels: (n,) int or (n, k) soft. test_images and
    test_labels must be in the same space (same normalisation or ZCA). ``group`` networks share one vmapped program
    (default ``jaxdd.train.default_group``: all K on GPU/TPU, so K networks cost about one network's dispatches;
    one at a time on CPU, so the time grows linearly with K). Network i depends only on its key. ``model``: a
    registered name or a flax module satisfying ``jaxdd.models.MODEL_CONTRACT`` (checked first).
    """
    images = check_images(images, "synthetic images")
    test_images = check_images(test_images, "test images")
    if images.shape[1:] != test_images.shape[1:]:
        raise JaxddError(f"synthetic images have shape {images.shape[1:]} but test images {test_images.shape[1:]}; "
                         "evaluate on the dataset the set was distilled from")
    if labels.shape[0] != images.shape[0]:
        raise JaxddError(f"{images.shape[0]} images but {labels.shape[0]} labels")
    if num_models < 1:
        raise JaxddError(f"num_models must be >= 1, got {num_models}")
    if not isinstance(model, str):
        check_model(get_model(model, num_classes, **(model_kwargs or {})), tuple(images.shape[1:]), num_classes)
    module = eval_module(model, num_classes, model_kwargs)
    keys = jax.random.split(key, num_models)
    variables = train_many(keys, module, jnp.asarray(images), jnp.asarray(labels), protocol, progress=progress,
                           group=group)
    # the forward pass alone is faster with the library convolution on CPU too (bench_dm.md); same parameters
    logits = predict_many(get_model(model, num_classes, **(model_kwargs or {})), variables, jnp.asarray(test_images),
                          group=group)
    accs = jax.vmap(accuracy, in_axes=(0, None))(logits, jnp.asarray(test_labels))
    return EvalResult(np.asarray(accs), model_name(model), protocol)


def random_subset(key: PRNGKey, images: jax.Array, labels: jax.Array, num_classes: int, ipc: int):
    """A class-balanced random real subset of ``ipc`` images per class, class-major: (images, labels)."""
    idx = sample_per_class(key, class_index(np.asarray(labels), num_classes), ipc).reshape(-1)
    return jnp.asarray(images)[idx], jnp.asarray(labels)[idx]


def evaluate_random_subset(key: PRNGKey, images, labels, test_images, test_labels, *, num_classes: int, ipc: int,
                           **kwargs) -> EvalResult:
    """The random-real-subset baseline of the same size, under the same protocol: one subset per network."""
    num_models = kwargs.pop("num_models", DEFAULT_EVAL_MODELS)
    accs = []
    model = model_name(kwargs.get("model", "ConvNet"))
    protocol = kwargs.get("protocol", TrainProtocol())
    for i in range(num_models):
        k_sub, k_eval = jax.random.split(jax.random.fold_in(key, i))
        x, y = random_subset(k_sub, images, labels, num_classes, ipc)
        res = evaluate_synthetic(k_eval, x, y, test_images, test_labels, num_classes=num_classes, num_models=1,
                                 **kwargs)
        accs.append(res.accuracies[0])
    return EvalResult(np.asarray(accs), model, protocol)
