"""The proposals JSON of `detect proposals` and `detect multibox run`: one entry per image.

Each entry: ``{"file", "image_id", "boxes" [[x1, y1, x2, y2], ...] (absolute pixels, rounded to 2 decimals),
"scores" (6 decimals), "sources" ("ss" | "multibox")}``, in the proposals' own order (best first within
each source).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch-importing modules load when a command runs, not for --help
    from proposals.cache import CacheItem
    from proposals.structures import Proposals


def proposals_json(item: CacheItem, image_id: Any, props: Proposals, *, decimals: int = 2) -> dict[str, Any]:
    """One image's output entry (boxes xyxy in pixels, rounded to ``decimals``)."""
    from proposals.structures import SOURCES

    return {
        "file": item.file,
        "image_id": image_id,
        "boxes": [[round(v, decimals) for v in box] for box in props.boxes.tolist()],
        "scores": [round(v, 6) for v in props.scores.tolist()],
        "sources": [SOURCES[s] for s in props.sources.tolist()],
    }
