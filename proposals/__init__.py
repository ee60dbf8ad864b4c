"""GoogLeNet region proposals: selective search (Uijlings et al.) and MultiBox (Erhan et al.), merged the
paper's way (section 8: selective search with superpixel size x2 plus the top 200 MultiBox boxes)."""

from proposals.cache import build_cache, load_cached
from proposals.merge import METHODS, ProposalMethod, merge_proposals, paper_proposals
from proposals.metrics import proposal_recall
from proposals.multibox import MultiBox, MultiBoxConfig, load_multibox
from proposals.selective_search import SelectiveSearchConfig, selective_search, selective_search_many
from proposals.types import SOURCES, Proposals

__all__ = [
    "METHODS", "MultiBox", "MultiBoxConfig", "ProposalMethod", "Proposals", "SOURCES", "SelectiveSearchConfig",
    "build_cache", "load_cached", "load_multibox", "merge_proposals", "paper_proposals", "proposal_recall",
    "selective_search", "selective_search_many",
]
