"""Evaluation: train K fresh networks on a synthetic set at once (vmapped over keys) and test them.

The default protocol is METHODS.md 1.4 (SGD lr 0.01, momentum 0.9, wd 5e-4, batch 256, lr x0.1 after epoch
E//2+1; 1000 epochs with DSA, 300 without). Accuracy is measured on whatever split is passed: the library's driver
passes a validation split carved from the training set during distillation; the test split is used only for the
final report.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxdd.data import check_images, sample_per_class, class_index
from jaxdd.models import check_model, get_model, model_name, with_conv_impl
from jaxdd.train import TrainProtocol, accuracy, predict_many, train_many
from jaxdd.types import JaxddError, PRNGKey


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
                       test_labels: jax.Array, *, num_classes: int, model="ConvNet", num_models: int = 5,
                       protocol: TrainProtocol = TrainProtocol(), model_kwargs: dict | None = None,
                       progress: Callable[[int], None] | None = None, group: int | None = None) -> EvalResult:
    """Train ``num_models`` fresh ``model`` networks on (images, labels) with ``protocol``; test accuracy of each.

    images: (n, h, w, c) float32 in the models' normalised space; labels: (n,) int or (n, k) soft. test_images and
    test_labels must be in the same space (same normalisation or ZCA). Networks are trained together (vmap), so
    K networks cost about one network's dispatches on an accelerator; ``group`` networks share one vmapped program
    (default: all on GPU/TPU, one on CPU; see ``jaxdd.train.default_group``). ``model``: a registered name or a
    flax module satisfying ``jaxdd.models.MODEL_CONTRACT`` (checked first).
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


def eval_module(model, num_classes: int, model_kwargs: dict | None = None):
    """The network evaluation trains: ConvNet-family and ResNet convolutions default to ``conv_impl="auto"``
    (``jaxdd.models.resolve_conv_impl``): on CPU ``"fused"`` (Winograd and the fused first block), where a training
    epoch of 100 images with DSA takes 0.22-0.24 s (0.37 s without jaxdd.hostmem's huge pages) against Winograd's
    0.42 s and vjp's 0.59 s on 28x28x1 (experiments/results/bench_vs_reference*.md), and the library convolution on
    accelerators. ``model_kwargs`` naming a ``conv_impl`` wins. Test predictions use the model as configured (the
    library convolution unless ``model_kwargs`` says otherwise)."""
    kw = dict(model_kwargs or {})
    return with_conv_impl(get_model(model, num_classes, **kw), None if "conv_impl" in kw else "auto")


def random_subset(key: PRNGKey, images: jax.Array, labels: jax.Array, num_classes: int, ipc: int):
    """A class-balanced random real subset of ``ipc`` images per class, class-major: (images, labels)."""
    idx = sample_per_class(key, class_index(np.asarray(labels), num_classes), ipc).reshape(-1)
    return jnp.asarray(images)[idx], jnp.asarray(labels)[idx]


def evaluate_random_subset(key: PRNGKey, images, labels, test_images, test_labels, *, num_classes: int, ipc: int,
                           **kwargs) -> EvalResult:
    """The random-real-subset baseline of the same size, under the same protocol: one subset per network."""
    num_models = kwargs.pop("num_models", 5)
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
