"""The GoogLeNet classification backbone (Szegedy et al. 2014): model, weights, training, testing."""

# Names are imported on first use (backbone/lazyface.py, PEP 562), so `import backbone.<module>` and the console
# scripts' --help do not pay for torch unless they need it; ``from backbone import X`` works as usual.
from __future__ import annotations

from typing import TYPE_CHECKING

from backbone.lazyface import lazy_face

#: public name -> module defining it
_WHERE = {
    "AUX_LOSS_WEIGHT": "backbone.googlenet",
    "GoogLeNet": "backbone.googlenet",
    "GoogLeNetConfig": "backbone.googlenet",
    "Preprocessing": "backbone.preprocess",
    "TrainOutputs": "backbone.googlenet",
    "googlenet": "backbone.weights",
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

lazy_face(__name__, _WHERE)

if TYPE_CHECKING:
    from backbone.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
    from backbone.googlenet import AUX_LOSS_WEIGHT, GoogLeNet, GoogLeNetConfig, TrainOutputs, googlenet_loss
    from backbone.preprocess import Preprocessing, preprocess
    from backbone.weights import googlenet, imagenet_classes, imagenet_wnids, load_classifier
