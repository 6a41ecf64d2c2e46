"""The model zoo: PyTorch definitions of the networks whose workload tables perfmodel uses.

Registry::

    MODELS: dict[str, ModelInfo]              name -> builder and default dataset
    DATASETS: dict[str, DatasetInfo]          "imagenet" (3x224x224, 1000 classes), "cifar10" (3x32x32, 10)
    build_model(name, num_classes=None, **kw) -> nn.Module
    list_models() -> list[str]

The same definitions feed :mod:`executor.workload_extract` (which writes the cached tables under
``perfmodel/data/workloads``) and the executor's real training runs, so a prediction and a measurement
always describe the same network.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from hardware.errors import ConfigError
from perfmodel.datasets import DATASETS, DatasetInfo
from executor.models import alexnet as _alexnet
from executor.models import cifar_resnet as _cifar
from executor.models import digits as _digits
from executor.models import resnet as _resnet

__all__ = ["DatasetInfo", "ModelInfo", "DATASETS", "MODELS", "build_model", "list_models", "get_model_info"]




@dataclass(frozen=True)
class ModelInfo:
    """One entry of the model registry.

    Attributes
    ----------
    name : str
        Registry key, e.g. ``"resnet50"``.
    builder : callable
        ``builder(num_classes=..., **kw) -> nn.Module``.
    dataset : str
        Key of :data:`DATASETS` the model is defined for (input shape and default class count).
    description : str
        One line.
    """

    name: str
    builder: Callable[..., nn.Module]
    dataset: str
    description: str

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Per-sample input shape of the default dataset."""
        return DATASETS[self.dataset].input_shape

    @property
    def num_classes(self) -> int:
        """Default number of classes (that of the default dataset)."""
        return DATASETS[self.dataset].num_classes


def _entries() -> list[ModelInfo]:
    return [
        ModelInfo("resnet18", _resnet.resnet18, "imagenet", "ResNet-18 (torchvision)"),
        ModelInfo("resnet34", _resnet.resnet34, "imagenet", "ResNet-34 (torchvision)"),
        ModelInfo("resnet50", _resnet.resnet50, "imagenet", "ResNet-50 v1.5 (torchvision)"),
        ModelInfo("resnet101", _resnet.resnet101, "imagenet", "ResNet-101 v1.5 (torchvision)"),
        ModelInfo("resnet152", _resnet.resnet152, "imagenet", "ResNet-152 v1.5 (torchvision)"),
        ModelInfo("alexnet", _alexnet.alexnet, "imagenet", "AlexNet (torchvision, one-tower)"),
        ModelInfo("alexnet_bn", _alexnet.alexnet_bn, "imagenet",
                  "AlexNet-BN (BN after every conv and fc6/fc7, no LRN, no dropout; You et al.)"),
        ModelInfo("resnet20", _cifar.resnet20, "cifar10", "CIFAR ResNet-20, option-A shortcuts (He et al. 4.2)"),
        ModelInfo("resnet32", _cifar.resnet32, "cifar10", "CIFAR ResNet-32, option-A shortcuts"),
        ModelInfo("resnet44", _cifar.resnet44, "cifar10", "CIFAR ResNet-44, option-A shortcuts"),
        ModelInfo("resnet56", _cifar.resnet56, "cifar10", "CIFAR ResNet-56, option-A shortcuts"),
        ModelInfo("resnet110", _cifar.resnet110, "cifar10", "CIFAR ResNet-110, option-A shortcuts"),
        ModelInfo("tiny", _cifar.tiny, "cifar10", "two-conv CNN for smoke tests (1.6k parameters)"),
        ModelInfo("digits_cnn", _digits.digits_cnn, "digits", "two-conv CNN for the bundled 8x8 digits"),
        ModelInfo("digits_mlp", _digits.digits_mlp, "digits", "one-hidden-layer MLP for the bundled 8x8 digits"),
    ]


MODELS: dict[str, ModelInfo] = {m.name: m for m in _entries()}


def _canonical(name: str) -> str | None:
    """Registry key for ``name`` ignoring case, '-' and '_' (``ResNet-50`` -> ``resnet50``), or None."""
    if name in MODELS:
        return name
    squash = str(name).lower().replace("-", "").replace("_", "")
    for key in MODELS:
        if key.replace("_", "") == squash:
            return key
    return None


def get_model_info(name: str) -> ModelInfo:
    """Registry entry for ``name``; unknown names raise :class:`~hardware.errors.ConfigError`."""
    key = _canonical(name)
    if key is None:
        raise ConfigError(source="--model", field="model", value=name,
                          reason=f"unknown model; known: {', '.join(MODELS)}")
    return MODELS[key]


def list_models() -> list[str]:
    """Registered model names, in registry order (ImageNet models first)."""
    return list(MODELS)


def build_model(name: str, num_classes: int | None = None, **kw) -> nn.Module:
    """Build a registered model on the current default device (use ``with torch.device("meta"):`` for a
    model without memory).

    Parameters
    ----------
    name : str
        Registry key (case, '-' and '_' are ignored: ``ResNet-50`` works).
    num_classes : int, optional
        Classifier outputs; default: the model's dataset's class count.
    **kw
        Passed to the builder (e.g. ``zero_init_residual=True``, ``shortcut="B"``, ``dropout=0.5``).

    Raises
    ------
    ConfigError
        Unknown model, a non-positive ``num_classes`` or an option the builder does not accept.
    """
    info = get_model_info(name)
    n = info.num_classes if num_classes is None else num_classes
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(source="--num-classes", field="num_classes", value=num_classes,
                          reason="must be a positive integer")
    try:
        return info.builder(num_classes=n, **kw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(source="--model", field="model options", value=kw, reason=str(exc)) from None

