"""The GoogLeNet detector (Szegedy et al. 2014, section 8): region classifiers, ensembles, evaluation.

Evaluation lives in :mod:`detect.evaluation` (imported on demand: it needs pycocotools and matplotlib).
"""

# Names are imported on first use (PEP 562), so `import detect.<module>` and the console scripts' --help
# do not pay for torch unless they need it; ``from detect import X`` works as usual.
from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING

#: public name -> module defining it
_WHERE = {
    "CropConfig": "detect.crops",
    "DetectionDataset": "detect.datasets",
    "Detections": "detect.structures",
    "Detector": "detect.pipeline",
    "DetectorConfig": "detect.pipeline",
    "Ensemble": "detect.classifier",
    "ImageRecord": "detect.datasets",
    "PostprocessConfig": "detect.postprocess",
    "RegionClassifier": "detect.classifier",
    "ZeroShotClassifier": "detect.classifier",
    "detect_dataset": "detect.pipeline",
    "load_detector": "detect.pipeline",
    "postprocess": "detect.postprocess",
    "read_coco": "detect.datasets",
    "read_dataset": "detect.datasets",
    "read_voc_xml": "detect.datasets",
    "warp_regions": "detect.crops",
}

__all__ = [
    "CropConfig", "DetectionDataset", "Detections", "Detector", "DetectorConfig", "Ensemble", "ImageRecord",
    "PostprocessConfig", "RegionClassifier", "ZeroShotClassifier", "detect_dataset", "load_detector",
    "postprocess", "read_coco", "read_dataset", "read_voc_xml", "warp_regions",
]


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Face(types.ModuleType):
    """Where a public name is also its module's name (``googlenet``, ``preprocess``, ``selective_search``,
    ``postprocess``), importing that module must not replace the name on the package with the module (as
    the eager imports this face replaced never did): the import system's ``setattr`` stores the name's
    object instead."""

    def __setattr__(self, name: str, value: object) -> None:
        if isinstance(value, types.ModuleType) and value.__name__ == _WHERE.get(name):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Face


if TYPE_CHECKING:
    from detect.classifier import Ensemble, RegionClassifier, ZeroShotClassifier
    from detect.crops import CropConfig, warp_regions
    from detect.datasets import DetectionDataset, ImageRecord, read_coco, read_dataset, read_voc_xml
    from detect.pipeline import Detector, DetectorConfig, detect_dataset, load_detector
    from detect.postprocess import PostprocessConfig, postprocess
    from detect.structures import Detections
