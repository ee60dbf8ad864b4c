"""The GoogLeNet classification backbone (Szegedy et al. 2014): model, weights, training, testing."""

# Names are imported on first use (PEP 562), so `import backbone.<module>` and the console scripts' --help
# do not pay for torch unless they need it; ``from backbone import X`` works as usual.
from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING

#: public name -> module defining it
_WHERE = {
    "AUX_LOSS_WEIGHT": "backbone.googlenet",
    "GoogLeNet": "backbone.googlenet",
    "GoogLeNetConfig": "backbone.googlenet",
    "Preprocessing": "backbone.preprocess",
    "TrainOutputs": "backbone.googlenet",
    "googlenet": "backbone.googlenet",
    "googlenet_loss": "backbone.googlenet",
    "imagenet_classes": "backbone.weights",
    "imagenet_wnids": "backbone.weights",
    "load_checkpoint": "backbone.checkpoint",
    "load_classifier": "backbone.weights",
    "model_from_checkpoint": "backbone.checkpoint",
    "preprocess": "backbone.preprocess",
    "save_checkpoint": "backbone.checkpoint",
}

__all__ = [
    "AUX_LOSS_WEIGHT", "GoogLeNet", "GoogLeNetConfig", "Preprocessing", "TrainOutputs", "googlenet",
    "googlenet_loss", "imagenet_classes", "imagenet_wnids", "load_checkpoint", "load_classifier",
    "model_from_checkpoint", "preprocess", "save_checkpoint",
]


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Face(types.ModuleType):
    """Where a public name is also its module's name (``googlenet``, ``preprocess``, ``selective_search``,
    ``postprocess``), importing that module must not replace the name on the package with the module (as
    the eager imports this face replaced never did): the import system's ``setattr`` stores the name's
    object instead."""

    def __setattr__(self, name: str, value: object) -> None:
        if isinstance(value, types.ModuleType) and value.__name__ == _WHERE.get(name):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Face


if TYPE_CHECKING:
    from backbone.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
    from backbone.googlenet import AUX_LOSS_WEIGHT, GoogLeNet, GoogLeNetConfig, TrainOutputs, googlenet, googlenet_loss
    from backbone.preprocess import Preprocessing, preprocess
    from backbone.weights import imagenet_classes, imagenet_wnids, load_classifier
