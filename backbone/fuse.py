"""Inference-time folding of BatchNorm into the preceding convolution (torchvision variant).

``y = gamma * (conv(x) - mean) / sqrt(var + eps) + beta`` is itself a convolution, so in evaluation mode
each ``BasicConv2d``'s BatchNorm can be folded into its conv weights and bias: one kernel and one pass
over the activations fewer per layer, same outputs up to float rounding. The paper variant has no
BatchNorm and is returned unchanged. Training must not use a folded model (the statistics are frozen).
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from backbone.googlenet import BasicConv2d


def fold_batchnorm_(model: nn.Module) -> nn.Module:
    """Fold every ``BasicConv2d``'s BatchNorm into its conv, in place; returns ``model`` (in eval mode)."""
    model.eval()
    for module in model.modules():
        if isinstance(module, BasicConv2d) and module.bn is not None:
            module.conv = fuse_conv_bn_eval(module.conv, module.bn)
            module.bn = None
    return model
