"""The GoogLeNet classification backbone (Szegedy et al. 2014): model, weights, training, testing."""

from backbone.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from backbone.googlenet import AUX_LOSS_WEIGHT, GoogLeNet, GoogLeNetConfig, TrainOutputs, googlenet, googlenet_loss
from backbone.preprocess import Preprocessing, preprocess
from backbone.weights import imagenet_classes, imagenet_wnids, load_classifier

__all__ = [
    "AUX_LOSS_WEIGHT", "GoogLeNet", "GoogLeNetConfig", "Preprocessing", "TrainOutputs", "googlenet",
    "googlenet_loss", "imagenet_classes", "imagenet_wnids", "load_checkpoint", "load_classifier",
    "model_from_checkpoint", "preprocess", "save_checkpoint",
]
