"""GoogLeNet: torchvision equivalence, the timm face in train and eval mode, the paper variant's layers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from backbone.googlenet import (
    AUX_LOSS_WEIGHT,
    GoogLeNet,
    GoogLeNetConfig,
    InceptionAux,
    TrainOutputs,
    googlenet_loss,
)
from backbone.weights import googlenet



SIZE = 112  # fully convolutional + adaptive pools: equivalence at 112 tests the same code at 1/4 the cost


@pytest.fixture(scope="module")
def tv_model() -> nn.Module:
    torch.manual_seed(1)
    return torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True)


@pytest.fixture(scope="module")
def paper_model() -> GoogLeNet:
    torch.manual_seed(2)
    return googlenet(variant="paper", num_classes=10)


@pytest.mark.parametrize("transform_input", [False, True])
def test_torchvision_state_dict_loads_with_same_keys_and_logits(tv_model, transform_input):
    ours = googlenet(variant="torchvision", transform_input=transform_input)
    result = ours.load_state_dict(tv_model.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    tv_model.transform_input = transform_input
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = tv_model.eval()(x)
        got = ours.eval()(x)
    assert got.shape == (1, 1000)
    assert (got - expected).abs().max().item() <= 1e-5


def test_auxiliary_logits_match_torchvision(tv_model):
    ours = googlenet(variant="torchvision", transform_input=False)
    ours.load_state_dict(tv_model.state_dict())
    tv_model.transform_input = False
    # torchvision computes aux logits only in training mode; freeze BN statistics and dropout so that
    # both models are deterministic and comparable.
    tv_model.train()
    for m in tv_model.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.Dropout)):
            m.eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = tv_model(x)
        got = ours.eval().forward_train(x)
    assert (got.logits - expected.logits).abs().max().item() <= 1e-5
    assert (got.aux1 - expected.aux_logits1).abs().max().item() <= 1e-5
    assert (got.aux2 - expected.aux_logits2).abs().max().item() <= 1e-5


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_every_face_has_one_type_and_shape_in_train_and_eval(paper_model, mode):
    model = paper_model.train(mode == "train")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = model(x)
        features = model.forward_features(x)
        pooled = model.forward_head(features, pre_logits=True)
        head = model.forward_head(features)
        out = model.forward_train(x)
    assert type(logits) is torch.Tensor and logits.shape == (2, 10)
    assert features.shape == (2, model.num_features, 2, 2) and model.num_features == 1024  # 64 / 32 = 2
    assert pooled.shape == (2, 1024) and head.shape == (2, 10)
    assert isinstance(out, TrainOutputs)
    assert out.logits.shape == out.aux1.shape == out.aux2.shape == (2, 10)
    if mode == "eval":  # no dropout: the faces agree with each other
        torch.testing.assert_close(head, logits)
        torch.testing.assert_close(out.logits, logits)


@pytest.mark.parametrize("size", [64, 97, 130])
def test_forward_features_is_about_one_32nd_of_the_input(size):
    model = googlenet(variant="paper", aux_logits=False).eval()
    with torch.no_grad():
        assert model.forward_features(torch.zeros(1, 3, size, size)).shape == (1, 1024, -(-size // 32),
                                                                              -(-size // 32))


def test_reset_classifier_changes_every_head():
    model = googlenet(variant="paper", num_classes=5)
    assert model.get_classifier() is model.fc and model.get_classifier().out_features == 5  # timm's face
    model.reset_classifier(7)
    assert model.num_classes == 7 and model.config.num_classes == 7
    assert model.get_classifier().out_features == 7
    out = model.eval().forward_train(torch.zeros(1, 3, 64, 64))
    assert out.logits.shape == out.aux1.shape == out.aux2.shape == (1, 7)
    assert float(model.fc.bias.detach().abs().sum()) == 0.0  # classifier biases start at 0
    model.reset_classifier(0)
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 1024)  # timm: 0 classes -> pooled features
    assert isinstance(model.get_classifier(), torch.nn.Identity)


def test_no_aux_heads_when_not_asked():
    model = googlenet(variant="paper", aux_logits=False)
    assert model.aux1 is None and model.aux2 is None
    assert not any(k.startswith("aux") for k in model.state_dict())
    out = model.eval().forward_train(torch.zeros(1, 3, 64, 64))
    assert out.aux1 is None and out.aux2 is None and out.logits.shape == (1, 1000)


def test_paper_variant_is_table_1():
    model = googlenet(variant="paper")
    lrns = [m for m in model.modules() if isinstance(m, nn.LocalResponseNorm)]
    assert [(m.size, m.alpha, m.beta, m.k) for m in lrns] == [(5, 1e-4, 0.75, 1.0)] * 2
    assert isinstance(model.lrn1, nn.LocalResponseNorm) and isinstance(model.lrn2, nn.LocalResponseNorm)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    inceptions = [m for n, m in model.named_children() if n.startswith("inception")]
    assert len(inceptions) == 9
    assert all(m.branch3[1].conv.kernel_size == (5, 5) and m.branch3[1].conv.padding == (2, 2) for m in inceptions)
    assert all(m.branch3[1].conv.bias is not None for m in inceptions)  # no BN: convolutions carry biases
    pools = [model.maxpool1, model.maxpool2, model.maxpool3, model.maxpool4]
    assert all((p.kernel_size, p.stride, p.padding, p.ceil_mode) == (3, 2, 1, False) for p in pools)
    assert model.dropout.p == 0.4 and model.aux1.dropout.p == 0.7 and model.aux2.dropout.p == 0.7
    assert model.config.transform_input is False
    assert model.aux1.conv.conv.in_channels == 512 and model.aux2.conv.conv.in_channels == 528


def test_paper_aux_head_pools_5x5_stride_3():
    torch.manual_seed(0)
    head = InceptionAux(512, 4, batch_norm=False, paper_pool=True, dropout=0.7).eval()
    x = torch.randn(1, 512, 14, 14)
    pooled = F.avg_pool2d(x, 5, stride=3)  # 14 x 14 -> 4 x 4
    expected = head.fc2(F.relu(head.fc1(torch.flatten(F.relu(head.conv.conv(pooled)), 1))))
    torch.testing.assert_close(head(x), expected)


def test_torchvision_variant_layout():
    model = googlenet(variant="torchvision")
    assert model.inception3a.branch3[1].conv.kernel_size == (3, 3)  # pytorch/vision#906
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.eps == 1e-3 for m in bns)
    assert model.maxpool1.ceil_mode and model.maxpool4.kernel_size == 2
    assert model.dropout.p == 0.2 and model.config.transform_input is True
    assert not any(isinstance(m, nn.LocalResponseNorm) for m in model.modules())


def test_paper_loss_weights_aux_by_0_3():
    torch.manual_seed(0)
    logits, aux1, aux2 = torch.randn(3, 4, 5).unbind(0)
    target = torch.tensor([0, 1, 4, 2])
    loss = googlenet_loss(TrainOutputs(logits, aux1, aux2), target)
    ce = F.cross_entropy
    torch.testing.assert_close(loss, ce(logits, target) + 0.3 * (ce(aux1, target) + ce(aux2, target)))
    assert AUX_LOSS_WEIGHT == GoogLeNet.aux_loss_weight == 0.3
    torch.testing.assert_close(googlenet_loss(TrainOutputs(logits, None, None), target), ce(logits, target))


def test_config_round_trip_and_bad_variant():
    config = GoogLeNetConfig(variant="torchvision", num_classes=3, aux_logits=False)
    assert GoogLeNetConfig.from_dict(config.to_dict()) == config
    assert config.dropout == 0.2 and config.transform_input is True
    with pytest.raises(ValueError, match="variant"):
        googlenet(variant="inception-v3")
