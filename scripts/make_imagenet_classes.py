"""Regenerate ``backbone/data/imagenet_classes.tsv`` from the team's ImageNet-1k synset list.

Usage (from the repository root)::

    python scripts/make_imagenet_classes.py [../shared/data/synsets/imagenet1k.tsv] [backbone/data/imagenet_classes.tsv]

Input: a TSV with header ``index<TAB>wnid<TAB>names`` (1000 rows in the ILSVRC-2012 class order, which
is torchvision's output order). Output: ``index<TAB>wnid<TAB>name<TAB>names``, where ``name`` is the first
comma-separated name (the short readable one ``backbone.weights.imagenet_classes()`` returns; the two
names that occur twice, "crane" and "maillot", get their wnid appended so that names stay unique) and
``names`` the full WordNet lemma list.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from backbone.files import write_bytes

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IN = REPO.parent / "shared" / "data" / "synsets" / "imagenet1k.tsv"
DEFAULT_OUT = REPO / "backbone" / "data" / "imagenet_classes.tsv"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    src = Path(argv[0]) if argv else DEFAULT_IN
    dst = Path(argv[1]) if len(argv) > 1 else DEFAULT_OUT
    with src.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if len(rows) != 1000 or [int(r["index"]) for r in rows] != list(range(1000)):
        print(f"{src}: expected 1000 rows indexed 0..999", file=sys.stderr)
        return 2
    short = [r["names"].split(",")[0].strip() for r in rows]
    lines = ["index\twnid\tname\tnames"]
    for r, name in zip(rows, short):
        if short.count(name) > 1:  # "crane" (bird, machine), "maillot" (two garments): add the wnid
            name = f"{name} ({r['wnid']})"
        lines.append(f"{r['index']}\t{r['wnid']}\t{name}\t{r['names'].strip()}")
    write_bytes(dst, ("\n".join(lines) + "\n").encode("utf-8"), inputs=[src])
    print(f"wrote {dst} ({len(rows)} classes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
