"""GoogLeNet (Szegedy et al. 2014, "Going Deeper with Convolutions", arXiv 1409.4842, section 5, Table 1).

One implementation, two named variants (``GoogLeNetConfig.variant``):

``"paper"``
    Table 1 exactly: true 5x5 convolutions, ReLU after every convolution (reduce and projection layers
    included), no BatchNorm, local response normalisation (size 5, alpha 1e-4, beta 0.75, k 1, as in the
    Caffe replica ``bvlc_googlenet``) after the first max pool and after the 3x3 convolution, 3x3/2 max
    pools with "same" padding (112 -> 56 -> 28 -> 14 -> 7 at 224; the Caffe replica's unpadded ceil-mode
    pools give the same sizes at 224), dropout 40 % before the classifier,
    auxiliary classifiers on 4a and 4d (avgpool 5x5/3 -> 1x1 conv 128 + ReLU -> FC 1024 + ReLU ->
    dropout 70 % -> linear), each loss weighted 0.3 (section 5).
``"torchvision"``
    The layout of ``torchvision.models.googlenet`` with the same parameter names, so its state dicts
    (and its ImageNet weights, ``googlenet-1378be20.pth``) load unchanged: BatchNorm (eps 1e-3) after
    each convolution, a 3x3 convolution in the "5x5" branch (pytorch/vision#906), ceil-mode max pools,
    a 2x2 last max pool, dropout 20 %, adaptive 4x4 pooling in the auxiliary heads, and
    ``transform_input`` (re-normalises ImageNet-mean/std inputs to the (x - 0.5) / 0.5 the ported weights
    expect).

Deviations from the paper, both variants: the final "avgpool 7x7/1" is a global average pool (the same
at 224 x 224, and it lets the classifier run at other input sizes); in the paper variant the auxiliary
heads pool 5x5/3 and, only where that does not give 4x4 (inputs other than about 224), pool adaptively to
4x4, so that the heads run at any input size.

The face (timm's): :meth:`GoogLeNet.forward_features` (trunk, ``N x 1024 x H/32 x W/32``),
:meth:`GoogLeNet.forward_head`, :meth:`GoogLeNet.reset_classifier`, :attr:`GoogLeNet.num_features`.
:meth:`GoogLeNet.forward` always returns logits, in training and evaluation mode alike; the auxiliary
logits come only from :meth:`GoogLeNet.forward_train`, whose result :func:`googlenet_loss` turns into the
paper's training loss ``ce(logits) + 0.3 * (ce(aux1) + ce(aux2))``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbone.config import VARIANTS, GoogLeNetConfig  # noqa: F401  (re-exported: defined torch-free)
from backbone.preprocess import IMAGENET_MEAN, IMAGENET_STD

#: Weight of each auxiliary classifier's loss in the total training loss (section 5: "weighted by 0.3").
AUX_LOSS_WEIGHT = 0.3

#: The auxiliary heads (module names) and the classifier layers (the main one, then each auxiliary head's
#: last layer): the names ``initialize``, ``reset_classifier`` and weight loading (backbone.checkpoint) share.
AUX_HEADS = ("aux1", "aux2")
CLASSIFIER_LAYERS = ("fc", "aux1.fc2", "aux2.fc2")

#: Inception widths of Table 1: name -> (in, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj).
INCEPTION_WIDTHS: dict[str, tuple[int, int, int, int, int, int, int]] = {
    "inception3a": (192, 64, 96, 128, 16, 32, 32),
    "inception3b": (256, 128, 128, 192, 32, 96, 64),
    "inception4a": (480, 192, 96, 208, 16, 48, 64),
    "inception4b": (512, 160, 112, 224, 24, 64, 64),
    "inception4c": (512, 128, 128, 256, 24, 64, 64),
    "inception4d": (512, 112, 144, 288, 32, 64, 64),
    "inception4e": (528, 256, 160, 320, 32, 128, 128),
    "inception5a": (832, 256, 160, 320, 32, 128, 128),
    "inception5b": (832, 384, 192, 384, 48, 128, 128),
}


class TrainOutputs(NamedTuple):
    """What :meth:`GoogLeNet.forward_train` returns; each ``Tensor[N, num_classes]``.

    ``aux1`` (on 4a) and ``aux2`` (on 4d) are None when the model was built with ``aux_logits=False``.
    """

    logits: Tensor
    aux1: Tensor | None
    aux2: Tensor | None


class BasicConv2d(nn.Module):
    """Conv -> (BatchNorm, torchvision variant only) -> ReLU. Parameter names match torchvision's."""

    def __init__(self, in_channels: int, out_channels: int, *, batch_norm: bool, **kwargs: Any) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=not batch_norm, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001) if batch_norm else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x, inplace=True)


class Inception(nn.Module):
    """Four parallel branches concatenated on channels (Figure 2b).

    Output channels: ``ch1x1 + ch3x3 + ch5x5 + pool_proj``; spatial size unchanged.
    ``five_by_five=False`` gives torchvision's 3x3 in the "5x5" branch (pytorch/vision#906).
    """

    def __init__(self, in_channels: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int, ch5x5: int,
                 pool_proj: int, *, batch_norm: bool, five_by_five: bool, ceil_mode: bool) -> None:
        super().__init__()
        k5 = 5 if five_by_five else 3
        self.branch1 = BasicConv2d(in_channels, ch1x1, batch_norm=batch_norm, kernel_size=1)
        self.branch2 = nn.Sequential(
            BasicConv2d(in_channels, ch3x3red, batch_norm=batch_norm, kernel_size=1),
            BasicConv2d(ch3x3red, ch3x3, batch_norm=batch_norm, kernel_size=3, padding=1))
        self.branch3 = nn.Sequential(
            BasicConv2d(in_channels, ch5x5red, batch_norm=batch_norm, kernel_size=1),
            BasicConv2d(ch5x5red, ch5x5, batch_norm=batch_norm, kernel_size=k5, padding=k5 // 2))
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=ceil_mode),
            BasicConv2d(in_channels, pool_proj, batch_norm=batch_norm, kernel_size=1))

    def forward(self, x: Tensor) -> Tensor:
        # N x C_in x H x W
        b1 = self.branch1(x)
        # N x ch1x1 x H x W
        b2 = self.branch2(x)
        # N x ch3x3 x H x W
        b3 = self.branch3(x)
        # N x ch5x5 x H x W
        b4 = self.branch4(x)
        # N x pool_proj x H x W
        return torch.cat([b1, b2, b3, b4], 1)  # N x (ch1x1 + ch3x3 + ch5x5 + pool_proj) x H x W


class InceptionAux(nn.Module):
    """Auxiliary classifier (section 5): pool to 4x4 -> 1x1 conv 128 + ReLU -> FC 1024 + ReLU -> dropout -> FC.

    ``paper_pool=True`` pools 5x5/3 (Table 1's head; 14x14 -> 4x4), else adaptively to 4x4 (torchvision).
    """

    def __init__(self, in_channels: int, num_classes: int, *, batch_norm: bool, paper_pool: bool,
                 dropout: float) -> None:
        super().__init__()
        self.paper_pool = paper_pool
        self.conv = BasicConv2d(in_channels, 128, batch_norm=batch_norm, kernel_size=1)
        self.fc1 = nn.Linear(2048, 1024)
        self.fc2 = nn.Linear(1024, num_classes) if num_classes > 0 else nn.Identity()
        self.dropout = nn.Dropout(p=dropout)

    def forward(self, x: Tensor) -> Tensor:
        # aux1: N x 512 x 14 x 14, aux2: N x 528 x 14 x 14 (at 224 x 224 input)
        if self.paper_pool and min(x.shape[-2:]) >= 5:
            x = F.avg_pool2d(x, kernel_size=5, stride=3)
        if x.shape[-2:] != (4, 4):
            x = F.adaptive_avg_pool2d(x, (4, 4))
        # N x C x 4 x 4
        x = self.conv(x)
        # N x 128 x 4 x 4
        x = torch.flatten(x, 1)
        # N x 2048
        x = F.relu(self.fc1(x), inplace=True)
        # N x 1024
        x = self.dropout(x)
        # N x 1024
        return self.fc2(x)  # N x num_classes


class GoogLeNet(nn.Module):
    """GoogLeNet; build it with :func:`googlenet`. See the module docstring for the two variants.

    Input: ``Tensor[N, 3, H, W]`` float, normalised with :class:`backbone.preprocess.Preprocessing`
    (ImageNet mean/std), H and W >= 32 (224 in the paper).
    """

    #: 1024 features after the last inception block (5b).
    num_features: int = 1024
    aux_loss_weight: float = AUX_LOSS_WEIGHT

    def __init__(self, config: GoogLeNetConfig | None = None, *, init_weights: bool = True) -> None:
        """``init_weights=False`` skips the (slow) variant-specific initialisation, for weights about to be
        loaded; PyTorch's default layer initialisation still applies."""
        super().__init__()
        self.config = config = config or GoogLeNetConfig()
        paper = config.variant == "paper"
        bn = not paper
        ceil = not paper  # paper: "same"-padded 3x3/2 pools; torchvision: unpadded ceil-mode pools
        pool_pad = 1 if paper else 0

        def pool(kernel: int = 3) -> nn.MaxPool2d:
            return nn.MaxPool2d(kernel, stride=2, padding=pool_pad if kernel == 3 else 0, ceil_mode=ceil)

        def lrn() -> nn.Module:
            return nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=1.0) if paper else nn.Identity()

        self.conv1 = BasicConv2d(3, 64, batch_norm=bn, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = pool()
        self.lrn1 = lrn()
        self.conv2 = BasicConv2d(64, 64, batch_norm=bn, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, batch_norm=bn, kernel_size=3, padding=1)
        self.lrn2 = lrn()
        self.maxpool2 = pool()
        block = dict(batch_norm=bn, five_by_five=paper, ceil_mode=ceil)
        self.inception3a = Inception(*INCEPTION_WIDTHS["inception3a"], **block)
        self.inception3b = Inception(*INCEPTION_WIDTHS["inception3b"], **block)
        self.maxpool3 = pool()
        self.inception4a = Inception(*INCEPTION_WIDTHS["inception4a"], **block)
        self.inception4b = Inception(*INCEPTION_WIDTHS["inception4b"], **block)
        self.inception4c = Inception(*INCEPTION_WIDTHS["inception4c"], **block)
        self.inception4d = Inception(*INCEPTION_WIDTHS["inception4d"], **block)
        self.inception4e = Inception(*INCEPTION_WIDTHS["inception4e"], **block)
        self.maxpool4 = pool(3 if paper else 2)
        self.inception5a = Inception(*INCEPTION_WIDTHS["inception5a"], **block)
        self.inception5b = Inception(*INCEPTION_WIDTHS["inception5b"], **block)
        if config.aux_logits:
            aux = dict(batch_norm=bn, paper_pool=paper, dropout=config.dropout_aux)
            self.aux1: InceptionAux | None = InceptionAux(512, config.num_classes, **aux)
            self.aux2: InceptionAux | None = InceptionAux(528, config.num_classes, **aux)
        else:
            self.aux1 = self.aux2 = None
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=config.dropout)
        self.fc: nn.Module = nn.Linear(1024, config.num_classes) if config.num_classes > 0 else nn.Identity()
        if init_weights:
            self.initialize()

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def variant(self) -> str:
        return self.config.variant

    def initialize(self, module: nn.Module | None = None) -> None:
        """(Re-)initialise ``module`` (default: the whole model) the variant's way.

        torchvision: truncated normal (std 0.01), BN 1/0 — as torchvision's ``init_weights=True``.
        paper: Xavier weights with biases 0.2 on convolutions and hidden FC layers and 0 on classifiers,
        as the Caffe replica ``bvlc_googlenet`` (the paper does not state its initialisation).
        """
        classifiers = {id(m) for m in self._classifier_layers()}
        for m in (module or self).modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                if self.config.variant == "torchvision":
                    nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)
                else:
                    nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0.0 if id(m) in classifiers else 0.2)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _transform_input(self, x: Tensor) -> Tensor:
        """ImageNet mean/std-normalised input -> (x - 0.5) / 0.5, what torchvision's ported weights expect."""
        if not self.config.transform_input:
            return x
        mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return (x * std + mean - 0.5) / 0.5

    def _trunk(self, x: Tensor, *, taps: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Input -> 5b features, plus the 4a and 4d outputs when ``taps`` (for the auxiliary heads)."""
        x = self._transform_input(x)
        # N x 3 x 224 x 224
        x = self.conv1(x)
        # N x 64 x 112 x 112
        x = self.maxpool1(x)
        # N x 64 x 56 x 56
        x = self.lrn1(x)
        # N x 64 x 56 x 56
        x = self.conv2(x)
        # N x 64 x 56 x 56
        x = self.conv3(x)
        # N x 192 x 56 x 56
        x = self.lrn2(x)
        # N x 192 x 56 x 56
        x = self.maxpool2(x)
        # N x 192 x 28 x 28
        x = self.inception3a(x)
        # N x 256 x 28 x 28
        x = self.inception3b(x)
        # N x 480 x 28 x 28
        x = self.maxpool3(x)
        # N x 480 x 14 x 14
        x = self.inception4a(x)
        # N x 512 x 14 x 14
        tap1 = x if taps else None
        x = self.inception4b(x)
        # N x 512 x 14 x 14
        x = self.inception4c(x)
        # N x 512 x 14 x 14
        x = self.inception4d(x)
        # N x 528 x 14 x 14
        tap2 = x if taps else None
        x = self.inception4e(x)
        # N x 832 x 14 x 14
        x = self.maxpool4(x)
        # N x 832 x 7 x 7
        x = self.inception5a(x)
        # N x 832 x 7 x 7
        x = self.inception5b(x)
        # N x 1024 x 7 x 7
        return x, tap1, tap2

    def forward_features(self, x: Tensor) -> Tensor:
        """Trunk up to inception 5b: ``Tensor[N, 3, H, W]`` -> ``Tensor[N, 1024, ~H/32, ~W/32]``.

        The spatial size is ``ceil(H / 32)`` for the paper variant (7 at 224); the torchvision variant's
        ceil-mode pools give the same for even sizes along the way (7 at 224).
        """
        return self._trunk(x, taps=False)[0]

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Features ``Tensor[N, 1024, h, w]`` -> global average pool -> dropout -> fc.

        Returns ``Tensor[N, num_classes]`` logits, or the pooled ``Tensor[N, 1024]`` when ``pre_logits``.
        """
        x = self.avgpool(x)
        # N x 1024 x 1 x 1
        x = torch.flatten(x, 1)
        # N x 1024
        x = self.dropout(x)
        # N x 1024
        return x if pre_logits else self.fc(x)  # N x num_classes

    def forward(self, x: Tensor) -> Tensor:
        """``Tensor[N, 3, H, W]`` -> logits ``Tensor[N, num_classes]``, in train and eval mode alike."""
        return self.forward_head(self.forward_features(x))

    def forward_train(self, x: Tensor) -> TrainOutputs:
        """Logits plus the auxiliary logits on 4a and 4d (None without aux heads); for training.

        Same result type in train and eval mode (dropout follows the mode as usual).
        Feed it to :func:`googlenet_loss`.
        """
        features, tap1, tap2 = self._trunk(x, taps=self.aux1 is not None)
        logits = self.forward_head(features)
        # N x num_classes
        aux1 = self.aux1(tap1) if self.aux1 is not None else None
        # N x num_classes
        aux2 = self.aux2(tap2) if self.aux2 is not None else None
        # N x num_classes
        return TrainOutputs(logits, aux1, aux2)

    def get_classifier(self) -> nn.Module:
        """The final classifier layer (timm's face): ``nn.Linear(1024, num_classes)``, or ``nn.Identity``
        after ``reset_classifier(0)``."""
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier (and the auxiliary heads' last layers) with fresh ``num_classes`` outputs.

        ``num_classes=0`` makes :meth:`forward` return the pooled 1024-d features (timm's convention).
        """
        self.config = dataclasses.replace(self.config, num_classes=num_classes)
        device = next(self.parameters()).device
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        for head in (self.aux1, self.aux2):
            if head is not None:
                head.fc2 = nn.Linear(1024, num_classes) if num_classes > 0 else nn.Identity()
        for m in self._classifier_layers():
            self.initialize(m)
            m.to(device)

    def _classifier_layers(self) -> list[nn.Module]:
        """The modules named in :data:`CLASSIFIER_LAYERS` that this model has (no aux heads: ``fc`` alone)."""
        names = dict(self.named_modules())
        return [names[n] for n in CLASSIFIER_LAYERS if n in names]


def googlenet_loss(outputs: TrainOutputs, targets: Tensor, *, aux_weight: float = AUX_LOSS_WEIGHT,
                   label_smoothing: float = 0.0) -> Tensor:
    """The paper's training loss (section 5): ``ce(logits) + aux_weight * (ce(aux1) + ce(aux2))``.

    Args:
        outputs: from :meth:`GoogLeNet.forward_train`; missing auxiliary logits (None) add nothing.
        targets: ``Tensor[N]`` int64 class indices.
    Returns:
        Scalar tensor (mean over the batch).
    """
    loss = F.cross_entropy(outputs.logits, targets, label_smoothing=label_smoothing)
    for aux in (outputs.aux1, outputs.aux2):
        if aux is not None:
            loss = loss + aux_weight * F.cross_entropy(aux, targets, label_smoothing=label_smoothing)
    return loss
