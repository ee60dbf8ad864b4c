"""The detector's result type."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Detections:
    """Detections for one image.

    Attributes:
        boxes: ``Tensor[N, 4]`` float32, ``(x1, y1, x2, y2)`` in absolute pixels of the original image.
        scores: ``Tensor[N]`` float32 class probability (ensemble-averaged softmax), sorted decreasing.
        labels: ``Tensor[N]`` int64 contiguous class labels ``1..K`` (0 is background and never appears).
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        n = self.boxes.shape[0]
        if self.boxes.shape != (n, 4) or self.scores.shape != (n,) or self.labels.shape != (n,):
            raise ValueError(f"inconsistent detection shapes {tuple(self.boxes.shape)}, "
                             f"{tuple(self.scores.shape)}, {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return self.boxes.shape[0]

    @staticmethod
    def empty() -> "Detections":
        return Detections(torch.zeros((0, 4)), torch.zeros(0), torch.zeros(0, dtype=torch.int64))
