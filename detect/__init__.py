"""The GoogLeNet detector (Szegedy et al. 2014, section 8): region classifiers, ensembles, evaluation.

Evaluation lives in :mod:`detect.evaluation` (imported on demand: it needs pycocotools and matplotlib).
"""

# Names are imported on first use (backbone/lazyface.py, PEP 562), so `import detect.<module>` and the console
# scripts' --help do not pay for torch unless they need it; ``from detect import X`` works as usual.
from __future__ import annotations

from typing import TYPE_CHECKING

from backbone.lazyface import lazy_face

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

lazy_face(__name__, _WHERE)

if TYPE_CHECKING:
    from detect.classifier import Ensemble, RegionClassifier, ZeroShotClassifier
    from detect.crops import CropConfig, warp_regions
    from detect.datasets import DetectionDataset, ImageRecord, read_coco, read_dataset, read_voc_xml
    from detect.pipeline import Detector, DetectorConfig, detect_dataset, load_detector
    from detect.postprocess import PostprocessConfig, postprocess
    from detect.structures import Detections
