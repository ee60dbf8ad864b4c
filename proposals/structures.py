"""The one result type of every proposal method (as :mod:`detect.structures` holds the detector's)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: Values of :attr:`Proposals.sources`: index into this tuple.
SOURCES = ("ss", "multibox")


@dataclass(frozen=True)
class Proposals:
    """Region proposals for one image.

    Attributes:
        boxes: ``Tensor[N, 4]`` float32, ``(x1, y1, x2, y2)`` in absolute pixels of the original image.
        scores: ``Tensor[N]`` float32, higher = ranked earlier (selective search: ``-rank``-like priority;
            MultiBox: confidence in [0, 1]). Proposals are kept sorted by decreasing score within a source.
        sources: ``Tensor[N]`` int64, index into :data:`SOURCES`.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    sources: torch.Tensor

    def __post_init__(self) -> None:
        n = self.boxes.shape[0]
        if self.boxes.shape != (n, 4) or self.scores.shape != (n,) or self.sources.shape != (n,):
            raise ValueError(f"inconsistent proposal shapes {tuple(self.boxes.shape)}, "
                             f"{tuple(self.scores.shape)}, {tuple(self.sources.shape)}")

    def __len__(self) -> int:
        return self.boxes.shape[0]

    @staticmethod
    def empty() -> "Proposals":
        return Proposals(torch.zeros((0, 4)), torch.zeros(0), torch.zeros(0, dtype=torch.int64))

    def select(self, index: torch.Tensor) -> "Proposals":
        """The proposals at ``index`` (a LongTensor or bool mask), in that order."""
        return Proposals(self.boxes[index], self.scores[index], self.sources[index])

    @staticmethod
    def cat(parts: "list[Proposals]") -> "Proposals":
        if not parts:
            return Proposals.empty()
        return Proposals(torch.cat([p.boxes for p in parts]), torch.cat([p.scores for p in parts]),
                         torch.cat([p.sources for p in parts]))
