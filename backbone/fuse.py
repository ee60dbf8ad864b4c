"""Inference-time rewrites of a GoogLeNet: BatchNorm folded into the convolutions, conv + ReLU fused.

``y = gamma * (conv(x) - mean) / sqrt(var + eps) + beta`` is itself a convolution, so in evaluation mode
each ``BasicConv2d``'s BatchNorm can be folded into its conv weights and bias: one kernel and one pass
over the activations fewer per layer, same outputs up to float rounding. The paper variant has no
BatchNorm and is left as it is by :func:`fold_batchnorm_`.

:func:`fuse_conv_relu_` then runs each ``BasicConv2d`` (conv, no BatchNorm left, ReLU) as one oneDNN
convolution with the ReLU as a post-op (``torch.ops.mkldnn._convolution_pointwise``, the kernel that
``torch.compile`` uses on CPUs) for float32 CPU tensors without gradients: the separate ReLU pass over every
activation (8 % of an eager CPU forward) goes; elsewhere (CUDA, autocast, training) it runs conv then ReLU.
:func:`prepare_for_inference_` does both. Training must not use a rewritten model (the statistics are frozen).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F
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


def _fused_kernel_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


class ConvReLU(nn.Module):
    """``relu(conv(x))`` for inference; one oneDNN primitive on float32 CPU tensors (module docstring).

    Keeps the conv as ``self.conv``, so state dict keys stay those of ``BasicConv2d`` (``conv.weight``, ...).
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
            raise ValueError("ConvReLU needs numeric zero padding")
        self.conv = conv

    def forward(self, x: Tensor) -> Tensor:  # N x C x H x W -> N x C' x H' x W'
        c = self.conv
        if (x.device.type != "cpu" or x.dtype != torch.float32 or c.weight.dtype != torch.float32
                or torch.is_autocast_enabled("cpu")
                or (torch.is_grad_enabled() and (x.requires_grad or c.weight.requires_grad))):
            return F.relu(c(x), inplace=True)
        return torch.ops.mkldnn._convolution_pointwise(x, c.weight, c.bias, list(c.padding), list(c.stride),
                                                       list(c.dilation), c.groups, "relu", [None], "")


def fuse_conv_relu_(model: nn.Module) -> nn.Module:
    """Replace every ``BasicConv2d`` without BatchNorm by a :class:`ConvReLU`, in place; returns ``model``
    (in eval mode). A model whose BatchNorm is not folded yet is left as it is; so is every model where
    this torch has no oneDNN fused convolution."""
    model.eval()
    if not _fused_kernel_available():
        return model
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, BasicConv2d) and child.bn is None:
                setattr(parent, name, ConvReLU(child.conv))
    return model


def prepare_for_inference_(model: nn.Module) -> nn.Module:
    """:func:`fold_batchnorm_` then :func:`fuse_conv_relu_`, in place; returns ``model`` in eval mode."""
    return fuse_conv_relu_(fold_batchnorm_(model))
