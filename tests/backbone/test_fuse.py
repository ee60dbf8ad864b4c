"""Folding BatchNorm for inference keeps the logits."""

import copy

import torch

from backbone.fuse import fold_batchnorm_
from backbone.weights import googlenet


def test_fold_batchnorm_keeps_logits():
    model = googlenet(variant="torchvision", num_classes=10, aux_logits=False).eval()
    with torch.no_grad():  # non-trivial statistics, as after training
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    folded = fold_batchnorm_(copy.deepcopy(model))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)


def test_paper_variant_unchanged():
    model = googlenet(variant="paper", num_classes=10, aux_logits=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fold_batchnorm_(model)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
