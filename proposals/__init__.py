"""GoogLeNet region proposals: selective search (Uijlings et al.) and MultiBox (Erhan et al.), merged the
paper's way (section 8: selective search with superpixel size x2 plus the top 200 MultiBox boxes)."""

# Names are imported on first use (backbone/lazyface.py, PEP 562), so `import proposals.<module>` and the console
# scripts' --help do not pay for torch unless they need it; ``from proposals import X`` works as usual.
from __future__ import annotations

from typing import TYPE_CHECKING

from backbone.lazyface import lazy_face

#: public name -> module defining it
_WHERE = {
    "METHODS": "proposals.merge",
    "MultiBox": "proposals.multibox",
    "MultiBoxConfig": "proposals.config",
    "ProposalMethod": "proposals.merge",
    "Proposals": "proposals.structures",
    "SOURCES": "proposals.structures",
    "SelectiveSearchConfig": "proposals.selective_search",
    "build_cache": "proposals.cache",
    "load_cached": "proposals.cache",
    "load_multibox": "proposals.multibox",
    "merge_proposals": "proposals.merge",
    "paper_proposals": "proposals.merge",
    "proposal_recall": "proposals.metrics",
    "selective_search": "proposals.selective_search",
    "selective_search_many": "proposals.selective_search",
}

__all__ = [
    "METHODS", "MultiBox", "MultiBoxConfig", "ProposalMethod", "Proposals", "SOURCES", "SelectiveSearchConfig",
    "build_cache", "load_cached", "load_multibox", "merge_proposals", "paper_proposals", "proposal_recall",
    "selective_search", "selective_search_many",
]

lazy_face(__name__, _WHERE)

if TYPE_CHECKING:
    from proposals.cache import build_cache, load_cached
    from proposals.config import MultiBoxConfig
    from proposals.merge import METHODS, ProposalMethod, merge_proposals, paper_proposals
    from proposals.metrics import proposal_recall
    from proposals.multibox import MultiBox, load_multibox
    from proposals.selective_search import SelectiveSearchConfig, selective_search, selective_search_many
    from proposals.structures import SOURCES, Proposals
