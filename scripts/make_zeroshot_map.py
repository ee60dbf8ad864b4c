"""Build ``detect/data/imagenet_to_det200.tsv``: ImageNet-1k classes -> ILSVRC DET-200 classes by WordNet.

DESIGN.md "Weights": the default detector is zero-shot — torchvision's ImageNet GoogLeNet, its 1000
classes mapped to the 200 DET classes by WordNet hypernyms. An ImageNet class maps to DET class ``d``
when ``d``'s synset is the class itself or one of its hypernym ancestors (pointers ``@`` and ``@i`` of
WordNet 3.0's ``data.noun``; wnid = ``"n"`` + 8-digit offset). Where several DET synsets are ancestors
(e.g. a class under both "dog" and a more specific DET class), the CLOSEST one wins: fewest hypernym
steps (breadth-first search), ties broken by the lower DET index. Classes with no DET ancestor map to
background (DET index 0).

Regenerate (needs Debian's ``wordnet-base``: ``apt-get install -y wordnet-base``)::

    python scripts/make_zeroshot_map.py \\
        --imagenet ../shared/data/synsets/imagenet1k.tsv --det ../shared/data/synsets/ilsvrc_det200.tsv \\
        --wordnet /usr/share/wordnet/data.noun --out detect/data/imagenet_to_det200.tsv

Output: tab-separated, header ``imagenet_index imagenet_wnid det_index det_wnid steps``, one row per
ImageNet class in index order; unmapped rows have ``det_index`` 0, ``det_wnid`` ``-`` and ``steps`` -1.
The test ``tests/detect/test_zeroshot.py`` checks that the shipped file equals a rebuild.
"""

from __future__ import annotations

import argparse
import sys
from collections import deque
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SYNSETS = REPO.parent / "shared" / "data" / "synsets"


def read_synset_tsv(path: Path) -> list[tuple[int, str, str]]:
    """Rows ``(index, wnid, names)`` of a synset TSV with header ``index wnid names``."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        if line.strip():
            index, wnid, names = line.split("\t", 2)
            rows.append((int(index), wnid, names))
    return rows


def read_hypernyms(data_noun: Path) -> dict[str, list[str]]:
    """wnid -> wnids of its direct hypernyms (``@``) and instance hypernyms (``@i``), from ``data.noun``."""
    graph: dict[str, list[str]] = {}
    with open(data_noun, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith("  "):  # licence header
                continue
            fields = line.split(" | ", 1)[0].split()
            offset, n_words = fields[0], int(fields[3], 16)
            pos = 4 + 2 * n_words
            n_ptrs = int(fields[pos])
            parents = []
            for k in range(n_ptrs):
                symbol, target, target_pos = fields[pos + 1 + 4 * k: pos + 4 + 4 * k]
                if symbol in ("@", "@i") and target_pos == "n":
                    parents.append("n" + target)
            graph["n" + offset] = parents
    return graph


def closest_det_ancestor(wnid: str, graph: dict[str, list[str]], det_index: dict[str, int]) -> tuple[int, int]:
    """``(det index, steps)`` of the nearest DET synset at or above ``wnid``; ``(0, -1)`` if none."""
    seen = {wnid}
    frontier = [wnid]
    steps = 0
    while frontier:
        hits = sorted(det_index[w] for w in frontier if w in det_index)
        if hits:
            return hits[0], steps
        nxt = []
        for w in frontier:
            for p in graph.get(w, []):
                if p not in seen:
                    seen.add(p)
                    nxt.append(p)
        frontier, steps = nxt, steps + 1
    return 0, -1


def build_map(imagenet_tsv: Path, det_tsv: Path, data_noun: Path) -> str:
    """The TSV text of the map (see module docstring)."""
    graph = read_hypernyms(data_noun)
    det = read_synset_tsv(det_tsv)
    det_index = {wnid: index for index, wnid, _ in det}
    det_wnid = {index: wnid for index, wnid, _ in det}
    lines = ["imagenet_index\timagenet_wnid\tdet_index\tdet_wnid\tsteps"]
    for index, wnid, _ in read_synset_tsv(imagenet_tsv):
        if wnid not in graph:
            raise SystemExit(f"{data_noun}: synset {wnid} of {imagenet_tsv} not found (is this WordNet 3.0?)")
        d, steps = closest_det_ancestor(wnid, graph, det_index)
        lines.append(f"{index}\t{wnid}\t{d}\t{det_wnid.get(d, '-')}\t{steps}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--imagenet", type=Path, default=DEFAULT_SYNSETS / "imagenet1k.tsv")
    parser.add_argument("--det", type=Path, default=DEFAULT_SYNSETS / "ilsvrc_det200.tsv")
    parser.add_argument("--wordnet", type=Path, default=Path("/usr/share/wordnet/data.noun"))
    parser.add_argument("--out", type=Path, default=REPO / "detect" / "data" / "imagenet_to_det200.tsv")
    args = parser.parse_args(argv)
    for path in (args.imagenet, args.det, args.wordnet):
        if not path.exists():
            print(f"make_zeroshot_map: error: {path}: no such file", file=sys.stderr)
            return 2
    text = build_map(args.imagenet, args.det, args.wordnet)
    sys.path.insert(0, str(REPO))
    from backbone.files import write_bytes
    write_bytes(args.out, text.encode("utf-8"))
    rows = [line.split("\t") for line in text.splitlines()[1:]]
    mapped = [r for r in rows if r[2] != "0"]
    print(f"{len(mapped)} of {len(rows)} ImageNet classes mapped onto "
          f"{len({r[2] for r in mapped})} of 200 DET classes -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
