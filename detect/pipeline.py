"""The test-time pipeline of the GoogLeNet detector (Szegedy et al. 2014, section 8; R-CNN's rcnn_detect).

proposals (selective search at doubled superpixel size + top-200 MultiBox) -> context-padded warps ->
ensemble-averaged softmax of the region classifiers -> per-class NMS. No bounding-box regression, no
context model: the paper's mode.

Two modes:
- ``paper``: every member of the ensemble, selective search "fast" strategies at superpixel scale 2, plus
  MultiBox when a MultiBox checkpoint is given (without one the proposals are selective search alone).
- ``fast`` (a CPU mode of ours, not in the paper): the first ensemble member only, the single-strategy
  selective search, and at most ``fast_max_proposals`` proposals.

:func:`detect_images` overlaps proposal computation (CPU worker processes) with classification, so the
GPU works on image *i* while image *i+1*'s selective search runs.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from backbone.device import resolve_device
from detect.config import DetectorConfig  # noqa: F401  (re-exported; defined torch-free)
from detect.structures import Detections
from proposals.types import Proposals

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Timing:
    """Seconds spent per stage for one image (proposals may run in another process)."""

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


def _ss_config(config: DetectorConfig):
    from proposals.selective_search import SelectiveSearchConfig

    strategy = "single" if config.fast else "fast"
    return SelectiveSearchConfig(strategy=strategy, superpixel_scale=config.superpixel_scale, seed=config.seed)


def _cap(props: Proposals, config: DetectorConfig) -> Proposals:
    """Fast mode keeps only the ``fast_max_proposals`` best-ranked proposals (input order = rank)."""
    if config.fast and len(props) > config.fast_max_proposals:
        return props.select(torch.arange(config.fast_max_proposals))
    return props


def compute_proposals(image: np.ndarray, config: DetectorConfig, multibox=None) -> Proposals:
    """Proposals for one RGB image as the config asks (``proposals.merge.METHODS``): selective search on
    the CPU, MultiBox on its model's device; merged MultiBox-first and deduplicated, capped in fast mode."""
    from proposals.merge import METHODS

    method = config.proposals
    if method == "paper" and multibox is None:  # said once at start by the caller (`detect run`'s start line)
        method = "ss"
    props = METHODS[method](image, ss_config=_ss_config(config), multibox=multibox, top_k=config.multibox_top_k)
    return _cap(props, config)


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


def _worker_init() -> None:
    """Worker processes: one thread each; Ctrl-C is the parent's to handle (no traceback per worker)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)


def _proposal_job(path: str, config: DetectorConfig) -> tuple[np.ndarray, Proposals, float]:
    """Worker-process job: decode the image (file or URL) and run selective search (no model needed).

    Returns the decoded image too, so the parent does not decode it again; an unreadable image raises
    InputError, which reaches the parent through the future."""
    from backbone.inputs import read_input

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    image = read_input(path, max_pixels=config.max_pixels)
    props = compute_proposals(image, replace(config, proposals="ss"))
    return image, props, time.perf_counter() - t0


class Detector:
    """Proposals -> warps -> ensemble softmax -> per-class NMS, for one image at a time.

    Args:
        classifier: a ``detect.classifier.Ensemble`` (``classify(image: Tensor[3,H,W] uint8,
            boxes: Tensor[P,4]) -> Tensor[P, K+1]``, ``class_names``, ``category_ids``, ``to(device)``).
        config: :class:`DetectorConfig`.
        multibox: optional ``proposals.multibox.MultiBox`` for the paper's 200 extra proposals.
        device: where the classifier runs.
    """

    def __init__(self, classifier, config: DetectorConfig = DetectorConfig(), *, multibox=None,
                 device: str | torch.device | None = "auto") -> None:
        self.config = config
        self.device = resolve_device(device)
        self.classifier = classifier.to(self.device)
        if config.compile:  # bench/classify.py: 17k -> 35k crops/s per model on an H100 (bf16, batch 1024)
            for member in self.classifier.members:
                member.model = torch.compile(member.model)
        self.multibox = multibox.to(self.device) if multibox is not None else None
        self.class_names: list[str] = list(classifier.class_names)
        from detect.postprocess import PostprocessConfig

        self.postprocess_config = PostprocessConfig(
            nms_iou=config.nms_iou, score_threshold=config.score_threshold,
            max_detections=config.max_detections)

    # -- one image -----------------------------------------------------------------------------------
    def detect(self, image: np.ndarray, proposals: Proposals | None = None) -> tuple[Detections, Proposals, Timing]:
        """Detect objects in one ``np.ndarray[H, W, 3]`` uint8 RGB image.

        Returns (detections in original-image pixels, the proposals used, per-stage timing).
        """
        t0 = time.perf_counter()
        if proposals is None:
            proposals = compute_proposals(image, self.config, self.multibox)
        else:  # selective search came from a worker process: add MultiBox here, as compute_proposals does
            if self.multibox is not None and self.config.proposals == "paper":
                from proposals.merge import merge_proposals

                mb = self.multibox.propose(image, top_k=self.config.multibox_top_k)
                proposals = merge_proposals([mb, proposals])
            proposals = _cap(proposals, self.config)
        t1 = time.perf_counter()
        dets = self.classify_proposals(image, proposals.boxes)
        return dets[0], proposals, Timing(proposals=t1 - t0, classify=dets[1], nms=dets[2])

    def classify_proposals(self, image: np.ndarray, boxes: torch.Tensor) -> tuple[Detections, float, float]:
        """Classify the regions ``boxes`` (Tensor[P, 4] xyxy) of ``image`` and post-process.

        Returns (detections, seconds classifying, seconds in NMS)."""
        from detect.postprocess import postprocess

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        if boxes.shape[0] == 0:
            return Detections.empty(), 0.0, 0.0
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        if self.device.type == "cuda":
            tensor = tensor.pin_memory().to(self.device, non_blocking=True)
        probs = self.classifier.classify(tensor, boxes.to(self.device), batch_size=self.config.batch_size,
                                         amp=self.config.amp).cpu()
        if self.config.classes:  # `--classes`: other classes never become detections (before the top-N cap)
            keep = torch.zeros(probs.shape[1], dtype=torch.bool)
            keep[0] = True
            keep[list(self.config.classes)] = True
            probs = probs.masked_fill(~keep, 0.0)
        t1 = time.perf_counter()
        dets = postprocess(boxes.cpu(), probs, self.postprocess_config)
        return dets, t1 - t0, time.perf_counter() - t1

    # -- many images, proposals overlapped with classification ----------------------------------------
    def detect_each(self, items: Sequence[str | os.PathLike], *, workers: int = 1) -> Iterator[ImageOutcome]:
        """Detect in each input of ``items`` (image paths, or http(s) URLs as ``str``), in order, one
        :class:`ImageOutcome` per input as soon as it is done; an input that cannot be used yields an
        outcome with its :class:`InputError` and the run goes on.

        With ``workers > 1``, selective search for upcoming images runs in that many CPU processes while
        the current one is classified (at most ``2 x workers`` images in flight). The workers ignore
        Ctrl-C; on KeyboardInterrupt (or when the caller stops iterating) they are stopped at once.
        """
        from backbone.errors import InputError
        from backbone.inputs import is_url, read_input

        items = [i if is_url(i) else Path(i) for i in items]
        if workers <= 1 or self.config.proposals == "multibox":
            for item in items:
                try:
                    image = read_input(item, max_pixels=self.config.max_pixels)
                except InputError as err:
                    yield ImageOutcome(item, error=err)
                    continue
                dets, props, timing = self.detect(image)
                yield ImageOutcome(item, ImageResult(item, image.shape[1], image.shape[0], dets, len(props), timing),
                                   image)
            return
        import signal

        ctx = torch.multiprocessing.get_context("spawn")
        pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init)
        pending: list[cf.Future] = []
        it = iter(items)
        try:
            # workers are spawned at the first submit: with SIGINT ignored, so that they inherit "ignore"
            # from their first instruction (a Ctrl-C while they import torch prints nothing)
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                for item in it:
                    pending.append(pool.submit(_proposal_job, str(item), self.config))
                    if len(pending) >= 2 * workers:
                        break
            finally:
                signal.signal(signal.SIGINT, previous)
            for item in items:
                future = pending.pop(0)
                nxt = next(it, None)
                if nxt is not None:
                    pending.append(pool.submit(_proposal_job, str(nxt), self.config))
                try:
                    image, props, ss_seconds = future.result()
                except InputError as err:
                    yield ImageOutcome(item, error=InputError(str(item), err.problem))
                    continue
                dets, used, timing = self.detect(image, proposals=props)
                result = ImageResult(item, image.shape[1], image.shape[0], dets, len(used),
                                     replace(timing, proposals=timing.proposals + ss_seconds))
                yield ImageOutcome(item, result, image)
        except BaseException:  # Ctrl-C, the caller stopping early (GeneratorExit), an error: stop workers now
            processes = list(getattr(pool, "_processes", {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            for proc in processes:
                proc.terminate()
            for proc in processes:
                proc.join(timeout=5)
            raise
        pool.shutdown(wait=True)

    def detect_paths(self, paths: Sequence[str | os.PathLike], *, workers: int = 1,
                     progress: bool = False) -> Iterator[tuple[ImageResult, np.ndarray]]:
        """Like :meth:`detect_each`, yielding ``(result, image)`` with the decoded RGB image (so callers
        can draw without decoding again), with a progress bar when ``progress``.

        Raises :class:`backbone.errors.InputError` for the first unusable image.
        """
        from tqdm import tqdm

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
        from backbone.errors import InputError

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
    from backbone.errors import InputError
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
