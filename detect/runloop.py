"""What the commands that walk many inputs share (`detect run`, `detect eval --weights`, `detect proposals`).

They behave alike (STYLE.md, "Commands that walk many files"): one start line saying what runs where
(:func:`model_phrase`, :func:`proposal_phrase`), each item's result printed as soon as it is done
(:class:`Printer`, above a progress bar from :func:`progress_bar`), a bad item reported in one stderr line,
one line when interrupted (:func:`interrupted`) and an end line that sets the exit code (:func:`summary`).
``--workers`` is checked and capped the same way everywhere (:func:`capped_workers`).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING, Any, Sequence

from backbone.errors import InputError
from detect.config import DetectorConfig

if TYPE_CHECKING:
    from detect.pipeline import Detector
    from detect.sharding import Shard

log = logging.getLogger(__name__)

#: Exit codes of the commands that walk many inputs (see `detect run --help`).
EXIT_SKIPPED = 1
EXIT_NOTHING = 2
EXIT_INTERRUPTED = 130


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def capped_workers(workers: int) -> int:
    """``--workers`` checked (>= 0; 0 and 1 both compute proposals in this process, as torch's DataLoader
    takes 0) and capped at the CPU cores this process may use (with a log note)."""
    if workers < 0:
        raise InputError(None, f"--workers must be >= 0, got {workers}")
    cores = _cores()
    if workers > cores:
        log.info("--workers %d capped at %d: the CPU cores this process may use (more processes only "
                 "share them and take memory)", workers, cores)
        return cores
    return workers


def proposal_phrase(config: DetectorConfig, has_multibox: bool) -> str:
    """The start line's words for the proposals ``config`` computes."""
    ss = "single-strategy selective search" if config.fast else "selective search (fast mode)"
    ss += f", superpixels x{config.superpixel_scale:g}"
    if config.proposals == "multibox":
        phrase = f"{config.multibox_top_k} MultiBox boxes"
    elif config.proposals == "paper" and has_multibox:
        phrase = f"{ss} + {config.multibox_top_k} MultiBox boxes (the paper's)"
    elif config.proposals == "paper":
        phrase = f"{ss} only (no --multibox-weights: without the paper's +{config.multibox_top_k} MultiBox boxes)"
    else:
        phrase = ss
    if config.fast:
        phrase += f", at most {config.fast_max_proposals}"
    return phrase


def model_phrase(weights: Sequence[str] | None, config: DetectorConfig, detector: Detector) -> str:
    """The start line's words for the model: which checkpoints (or the zero-shot one), how many classes."""
    k = len(detector.class_names)
    if not weights:
        model = "zero-shot ImageNet GoogLeNet"
    elif config.fast or len(weights) == 1:
        model = os.fspath(weights[0]) + (f" (first of {len(weights)}: --fast)" if len(weights) > 1 else "")
    else:
        model = f"ensemble of {len(weights)} ({', '.join(os.path.basename(w) for w in weights)})"
    classes = f"{k} classes"
    if config.classes:
        classes += ", keeping " + ", ".join(detector.class_names[c - 1] for c in config.classes)
    return f"{model}, {classes}"


def progress_bar(total: int, shard: Shard) -> Any:
    """A tqdm bar over ``total`` images on a terminal (rank 0 only), else None."""
    from backbone.console import wants_progress

    if not (wants_progress() and shard.is_main):
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="img", dynamic_ncols=True)


class Printer:
    """Writes each image's text to stdout as soon as it is done (above the progress bar, when there is one)."""

    def __init__(self, bar: Any) -> None:
        self.bar = bar

    def out(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stdout)
        else:
            try:
                print(text, flush=True)
            except BrokenPipeError:  # `detect run ... | head`: stop printing, keep running
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())

    def err(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)


def interrupted(bar: Any, counts: dict, store: Any, total: int, parts: Any) -> int:
    """Ctrl-C during a per-image loop (detect run, detect eval --weights): close the bar, say in one line how
    far the run got and where its per-image results are kept, return the exit code 130."""
    if bar is not None:
        bar.close()
    done = counts["ok"] + counts["skipped"] + len(store.done if store else ())
    hint = f"; results so far are in {parts}: rerun with --resume to continue" if store is not None else ""
    print(f"detect: interrupted after {done} of {total} images{hint}", file=sys.stderr)
    return EXIT_INTERRUPTED


def summary(ok: int, skipped: int, total: int, elapsed: float) -> int:
    """The end line; returns the exit code (0 all done, 1 some skipped, 2 none processed)."""
    per = f" in {elapsed:.1f} s ({elapsed / max(1, ok):.2f} s/image)"
    if skipped == 0:
        log.info("%s of %s images%s", f"{ok:,}", f"{total:,}", per)
        return 0
    log.info("%s of %s images%s; %s skipped, listed above", f"{ok:,}", f"{total:,}", per, f"{skipped:,}")
    return EXIT_SKIPPED if ok else EXIT_NOTHING
