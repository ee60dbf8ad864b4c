"""The test-time pipeline of the GoogLeNet detector (Szegedy et al. 2014, section 8; R-CNN's rcnn_detect).

proposals (selective search at doubled superpixel size + top-200 MultiBox) -> context-padded warps ->
ensemble-averaged softmax of the region classifiers -> per-class NMS. No bounding-box regression, no
context model: the paper's mode.

Two modes:
- ``paper``: every member of the ensemble, selective search "fast" strategies at superpixel scale 2, plus
  MultiBox when a MultiBox checkpoint is given (without one the proposals are selective search alone).
- ``fast`` (a CPU mode of ours, not in the paper): the first ensemble member only, the single-strategy
  selective search, and at most ``fast_max_proposals`` proposals.

:meth:`Detector.detect_each` overlaps selective search (CPU worker processes) with classification, so the
GPU works on image *i* while image *i+1*'s selective search runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from backbone.device import resolve_device
from backbone.errors import InputError
from backbone.images import image_to_tensor
from backbone.inputs import Input, is_url, read_input
from detect.config import DetectorConfig  # noqa: F401  (re-exported; defined torch-free)
from detect.postprocess import PostprocessConfig, postprocess
from detect.structures import Detections
from detect.workpool import imap_ordered
from proposals.merge import METHODS
from proposals.structures import Proposals

if TYPE_CHECKING:
    from detect.classifier import Ensemble
    from proposals.multibox import MultiBox
    from proposals.selective_search import SelectiveSearchConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Timing:
    """Seconds spent per stage for one image (selective search may run in another process)."""

    proposals: float = 0.0
    classify: float = 0.0  # crops + forward passes
    nms: float = 0.0


@dataclass(frozen=True)
class ImageResult:
    """What the pipeline returns for one image (``path``: a file path, or the URL it came from)."""

    path: Path | str
    width: int
    height: int
    detections: Detections
    num_proposals: int
    timing: Timing = field(default_factory=Timing)


@dataclass(frozen=True)
class DetectorOutput:
    """What :meth:`Detector.detect` returns for one image.

    Attributes:
        detections: in original-image pixels (see :class:`Detections`).
        proposals: the proposals that were classified (``boxes`` ``Tensor[P, 4]`` xyxy pixels).
        timing: seconds per stage.
    """

    detections: Detections
    proposals: Proposals
    timing: Timing


# -- step 1: proposals -----------------------------------------------------------------------------------

def _ss_config(config: DetectorConfig) -> SelectiveSearchConfig:
    from proposals.selective_search import SelectiveSearchConfig  # loads numba's kernels: when first needed

    strategy = "single" if config.fast else "fast"
    return SelectiveSearchConfig.rcnn(strategy, superpixel_scale=config.superpixel_scale, seed=config.seed)


def _cap(props: Proposals, config: DetectorConfig) -> Proposals:
    """Fast mode keeps only the ``fast_max_proposals`` best-ranked proposals (input order = rank)."""
    if config.fast and len(props) > config.fast_max_proposals:
        return props.select(torch.arange(config.fast_max_proposals))
    return props


def compute_proposals(image: np.ndarray, config: DetectorConfig, multibox: MultiBox | None = None, *,
                      selective_search: Proposals | None = None) -> Proposals:
    """Proposals for one RGB image as the config asks (``proposals.merge.METHODS``): selective search on
    the CPU (``selective_search`` when already computed: :class:`ReadAndSearch` in a worker process, a
    cache), MultiBox on its model's device; merged MultiBox-first and deduplicated, capped in fast mode."""
    method = config.proposals
    if method == "paper" and multibox is None:  # said once at start by the caller (`detect run`'s start line)
        method = "ss"
    props = METHODS[method](image, ss_config=_ss_config(config), multibox=multibox, top_k=config.multibox_top_k,
                            selective_search=selective_search)
    return _cap(props, config)


@dataclass(frozen=True)
class Decoded:
    """One input read by :class:`ReadAndSearch`: the RGB image, its selective-search proposals (None when the
    config proposes with MultiBox alone) and the seconds selective search took."""

    image: np.ndarray
    selective_search: Proposals | None
    seconds: float


@dataclass(frozen=True)
class ReadAndSearch:
    """The CPU part of the proposal step for one input (file or URL): decode it and run the config's selective
    search. Picklable: :meth:`Detector.detect_each` runs it in worker processes, or here with one worker;
    an unreadable input raises :class:`InputError`."""

    config: DetectorConfig

    def __call__(self, item: Input) -> Decoded:
        image = read_input(item, max_pixels=self.config.max_pixels)
        if self.config.proposals == "multibox":
            return Decoded(image, None, 0.0)
        t0 = time.perf_counter()
        props = METHODS["ss"](image, ss_config=_ss_config(self.config))
        return Decoded(image, props, time.perf_counter() - t0)


@dataclass(frozen=True)
class ImageOutcome:
    """One input's outcome in :meth:`Detector.detect_each`: a result and the decoded image, or the
    :class:`~backbone.errors.InputError` that made the input unusable (unreadable, refused, failed download)."""

    item: Path | str
    result: ImageResult | None = None
    image: np.ndarray | None = None
    error: Exception | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Detector:
    """Proposals -> warps -> ensemble softmax -> per-class NMS, for one image at a time (R-CNN's
    ``rcnn_detect.m``).

    Args:
        classifier: the region classifiers (``classify(image: Tensor[3,H,W] uint8, boxes: Tensor[P,4])
            -> Tensor[P, K+1]``, ``class_names``, ``category_ids``, ``to(device)``).
        config: :class:`DetectorConfig`.
        multibox: the paper's 200 extra proposals' model, or None.
        device: where the classifier runs.
    """

    def __init__(self, classifier: Ensemble, config: DetectorConfig = DetectorConfig(), *,
                 multibox: MultiBox | None = None, device: str | torch.device | None = "auto") -> None:
        self.config = config
        self.device = resolve_device(device)
        self.classifier = classifier.to(self.device)
        if config.compile:  # bench/classify.py: 17k -> 35k crops/s per model on an H100 (bf16, batch 1024)
            for member in self.classifier.members:
                member.model = torch.compile(member.model)
        self.multibox = multibox.to(self.device) if multibox is not None else None
        self.class_names: list[str] = list(classifier.class_names)
        self.postprocess_config = PostprocessConfig(
            nms_iou=config.nms_iou, score_threshold=config.score_threshold,
            max_detections=config.max_detections)

    # -- one image -----------------------------------------------------------------------------------
    def detect(self, image: np.ndarray, proposals: Proposals | None = None) -> DetectorOutput:
        """Detect objects in one ``np.ndarray[H, W, 3]`` uint8 RGB image.

        ``proposals``: this image's selective-search proposals when already computed (:class:`ReadAndSearch`
        in a worker process, a cache); MultiBox, the merge and the fast-mode cap are applied here either way.
        """
        t0 = time.perf_counter()
        props = compute_proposals(image, self.config, self.multibox, selective_search=proposals)  # 1. proposals
        self._synchronize()  # MultiBox's GPU work counts as proposals
        t1 = time.perf_counter()
        probs = self.classify_proposals(image, props.boxes)  # 2. scores: Tensor[P, K+1] on the CPU
        t2 = time.perf_counter()
        dets = postprocess(props.boxes.cpu(), probs, self.postprocess_config)  # 3. per-class NMS
        return DetectorOutput(dets, props, Timing(proposals=t1 - t0, classify=t2 - t1, nms=time.perf_counter() - t2))

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def classify_proposals(self, image: np.ndarray, boxes: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``Tensor[P, K+1]`` (CPU; column 0 background) of the regions ``boxes``
        (``Tensor[P, 4]`` xyxy pixels) of ``image``: the ensemble-averaged softmax over context-padded warps.
        With ``config.classes`` (``--classes``) the other classes' columns are zero, so they never become
        detections (before the top-N cap)."""
        if boxes.shape[0] == 0:
            return torch.zeros((0, len(self.class_names) + 1))
        tensor = image_to_tensor(image)  # Tensor[3, H, W] uint8
        if self.device.type == "cuda":
            tensor = tensor.pin_memory().to(self.device, non_blocking=True)
        probs = self.classifier.classify(tensor, boxes.to(self.device), batch_size=self.config.batch_size,
                                         amp=self.config.amp).cpu()
        if self.config.classes:
            keep = torch.zeros(probs.shape[1], dtype=torch.bool)
            keep[0] = True
            keep[list(self.config.classes)] = True
            probs = probs.masked_fill(~keep, 0.0)
        return probs

    # -- many images, selective search overlapped with classification ---------------------------------
    def detect_each(self, items: Sequence[str | os.PathLike], *, workers: int = 1) -> Iterator[ImageOutcome]:
        """Detect in each input of ``items`` (image paths, or http(s) URLs as ``str``), in order, one
        :class:`ImageOutcome` per input as soon as it is done; an input that cannot be used yields an
        outcome with its :class:`InputError` and the run goes on.

        With ``workers > 1``, :class:`ReadAndSearch` for upcoming images runs in that many CPU processes
        (:func:`detect.workpool.imap_ordered`, spawned: the parent holds a model and its threads) while the
        current one is classified (at most ``2 x workers`` images in flight). The workers ignore Ctrl-C; on
        KeyboardInterrupt (or when the caller stops iterating) they are stopped at once.
        """
        items = [i if is_url(i) else Path(i) for i in items]
        if self.config.proposals == "multibox":  # no selective search to overlap: read here
            workers = 1
        decoded = imap_ordered(ReadAndSearch(self.config), items, workers=workers, start_method="spawn")
        with contextlib.closing(decoded):  # stops the workers at once when this generator is left early
            for item, value, error in decoded:
                if error is not None:
                    yield ImageOutcome(item, error=error)
                    continue
                out = self.detect(value.image, value.selective_search)
                timing = replace(out.timing, proposals=out.timing.proposals + value.seconds)
                h, w = value.image.shape[:2]
                yield ImageOutcome(item, ImageResult(item, w, h, out.detections, len(out.proposals), timing),
                                   value.image)

    def detect_paths(self, paths: Sequence[str | os.PathLike], *, workers: int = 1,
                     progress: bool = False) -> Iterator[tuple[ImageResult, np.ndarray]]:
        """Like :meth:`detect_each`, yielding ``(result, image)`` with the decoded RGB image (so callers
        can draw without decoding again), with a progress bar when ``progress``.

        Raises :class:`backbone.errors.InputError` for the first unusable image.
        """
        with tqdm(total=len(paths), unit="img", disable=not progress) as bar:
            for outcome in self.detect_each(paths, workers=workers):
                if outcome.error is not None:
                    raise outcome.error
                bar.update()
                yield outcome.result, outcome.image


def load_detector(weights: Sequence[str] | None, config: DetectorConfig = DetectorConfig(), *,
                  multibox_weights: str | None = None, device: str | torch.device | None = "auto") -> Detector:
    """Build a :class:`Detector` from region-classifier checkpoints (an ensemble when several), or the
    zero-shot ImageNet GoogLeNet (DESIGN.md "Weights") when ``weights`` is empty.

    In fast mode only the first checkpoint is used.
    """
    from detect.classifier import Ensemble, ZeroShotClassifier

    if weights:
        chosen = list(weights[:1]) if config.fast else list(weights)
        if config.fast and len(weights) > 1:
            log.info("fast mode: using only the first of %d models (%s)", len(weights), weights[0])
        classifier = Ensemble.from_checkpoints(chosen)
    else:
        try:
            classifier = Ensemble([ZeroShotClassifier.from_imagenet()])
        except InputError as err:  # offline and no file: say how to see the detector work without it
            raise InputError(err.path, f"{err.problem}; or run 'detect demo' to train and run the detector "
                                       "offline on synthetic shapes") from None
    from backbone.fuse import prepare_for_inference_

    for member in classifier.members:  # inference only: BatchNorm folded into the convs
        prepare_for_inference_(member.model)
    multibox = None
    if multibox_weights:
        from proposals.multibox import load_multibox

        multibox = load_multibox(multibox_weights)
    return Detector(classifier, config, multibox=multibox, device=device)


def detect_dataset(dataset, weights: Sequence[str] | None, *, device: str = "auto", proposals: str = "paper",
                   fast: bool = False, multibox_weights: str | None = None, workers: int = 1,
                   progress: bool = False) -> dict | None:
    """Run the detector over every image of a ``detect.datasets.DetectionDataset``.

    Under ``torchrun`` each rank detects its shard of the images and rank 0 gathers them
    (:mod:`detect.sharding`); other ranks return None.

    Returns ``{image_id: Detections}`` (the data set's own ids), ready for ``detect.evaluation``.
    """
    from detect.sharding import finish, init_shard, local_device

    config = DetectorConfig(proposals=proposals, fast=fast)
    resolved = resolve_device(device)
    shard = init_shard(resolved)
    detector = load_detector(weights, config, multibox_weights=multibox_weights, device=local_device(resolved))
    model_ids = [str(c) for c in detector.classifier.category_ids]
    data_ids = [str(c) for c in dataset.category_ids]
    if model_ids != data_ids:  # labels are positions in these lists: they must agree exactly
        raise InputError(weights[0] if weights else "zero-shot ImageNet model",
                         f"model classes ({len(model_ids)}: {', '.join(model_ids[:3])}, ...) differ from those "
                         f"of {dataset.source} ({len(data_ids)}: {', '.join(data_ids[:3])}, ...) in number or order")
    mine = shard.take(dataset.records)
    runs = detector.detect_paths([r.file for _, r in mine], workers=workers, progress=progress and shard.is_main)
    results = [(i, (record.image_id, result.detections)) for (i, record), (result, _) in zip(mine, runs)]
    gathered = shard.gather(results)
    finish(shard)
    return None if gathered is None else dict(gathered)
