"""The GoogLeNet detector (Szegedy et al. 2014, section 8): region classifiers, ensembles, evaluation.

Evaluation lives in :mod:`detect.evaluation` (imported on demand: it needs pycocotools and matplotlib).
"""

from detect.classifier import Ensemble, RegionClassifier, ZeroShotClassifier
from detect.crops import CropConfig, warp_regions
from detect.datasets import DetectionDataset, ImageRecord, read_coco, read_dataset, read_voc_xml
from detect.pipeline import Detector, DetectorConfig, detect_dataset, load_detector
from detect.postprocess import PostprocessConfig, postprocess
from detect.structures import Detections

__all__ = [
    "CropConfig", "DetectionDataset", "Detections", "Detector", "DetectorConfig", "Ensemble", "ImageRecord",
    "PostprocessConfig", "RegionClassifier", "ZeroShotClassifier", "detect_dataset", "load_detector",
    "postprocess", "read_coco", "read_dataset", "read_voc_xml", "warp_regions",
]
