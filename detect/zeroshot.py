"""The zero-shot map: ImageNet-1k classes -> the 200 ILSVRC DET classes (DESIGN.md "Weights").

With no trained region classifier, ``detect run`` scores regions with torchvision's ImageNet GoogLeNet
and maps its 1000 classes onto the 200 DET classes by WordNet hypernyms: the probability of DET class
``d`` is the sum of the softmax probabilities of the ImageNet classes mapped to ``d``; background is the
sum over the classes mapped to none. The map is built offline from WordNet 3.0 by
``scripts/make_zeroshot_map.py`` (closest DET ancestor, see there) and shipped as
``detect/data/imagenet_to_det200.tsv``; this module only reads it. Not in the paper (its detector was
trained on DET data); this is our default for running without trained weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from backbone.errors import InputError
from backbone.safeio import read_bytes
from detect.datasets import ILSVRC_DET200, read_synsets

#: The shipped map (regenerate with ``scripts/make_zeroshot_map.py``).
ZEROSHOT_MAP = Path(__file__).resolve().parent / "data" / "imagenet_to_det200.tsv"


@dataclass(frozen=True)
class ZeroShotMap:
    """ImageNet index -> DET label.

    Attributes:
        det_label: ``Tensor[1000]`` int64, the DET label ``1..200`` of each ImageNet class, 0 = unmapped
            (counts towards background).
        class_names: the 200 DET class names, ``class_names[d - 1]`` for label ``d``.
        wnids: the 200 DET WordNet ids in the same order (the ILSVRC evaluator's category ids).
    """

    det_label: torch.Tensor
    class_names: list[str]
    wnids: list[str]

    @property
    def num_mapped(self) -> int:
        """How many ImageNet classes map to some DET class."""
        return int((self.det_label > 0).sum())

    def aggregate(self, imagenet_probs: torch.Tensor) -> torch.Tensor:
        """``Tensor[B, 1000]`` softmax -> ``Tensor[B, 201]``: column ``d`` sums the classes mapped to ``d``,
        column 0 (background) the unmapped ones. Rows still sum to 1."""
        index = self.det_label.to(imagenet_probs.device)
        out = imagenet_probs.new_zeros((imagenet_probs.shape[0], len(self.class_names) + 1))
        return out.index_add_(1, index, imagenet_probs)


def load_zeroshot_map(path: str | os.PathLike = ZEROSHOT_MAP, *,
                      det_synsets: str | os.PathLike = ILSVRC_DET200) -> ZeroShotMap:
    """Read the map TSV (``imagenet_index imagenet_wnid det_index det_wnid steps``).

    Raises:
        InputError: unreadable file, malformed line, or a DET id that disagrees with ``det_synsets``.
    """
    p = Path(path)
    wnids, names = read_synsets(det_synsets)
    try:  # a regular file of at most 1 MB (the shipped one is 40 KB): never a FIFO or a device
        lines = read_bytes(p, max_bytes=1 << 20, what="zero-shot map").decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise InputError(p, "the zero-shot map is not UTF-8 text") from None
    labels: dict[int, int] = {}
    for lineno, line in enumerate(lines[1:], start=2):
        parts = line.split("\t")
        try:
            index, det = int(parts[0]), int(parts[2])
        except (IndexError, ValueError):
            raise InputError(p, f"line {lineno}: expected 'imagenet_index<TAB>wnid<TAB>det_index<TAB>...'") from None
        if not 0 <= det <= len(wnids) or (det > 0 and parts[3] != wnids[det - 1]):
            raise InputError(p, f"line {lineno}: DET class {det} ({parts[3]}) does not match {det_synsets}")
        labels[index] = det
    if sorted(labels) != list(range(1000)):
        raise InputError(p, f"expected ImageNet indices 0..999, got {len(labels)} rows")
    det_label = torch.tensor([labels[i] for i in range(1000)], dtype=torch.int64)
    return ZeroShotMap(det_label, names, wnids)
