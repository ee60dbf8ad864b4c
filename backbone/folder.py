"""Image classification data in the ImageNet layout: ``ROOT/<class name>/<image>`` (any depth below the class).

Like ``torchvision.datasets.ImageFolder``, but images are read with :func:`backbone.images.read_image`
(RGB uint8 ``np.ndarray[H, W, 3]``, EXIF, grayscale, 16-bit, ...) and every problem is one
:class:`InputError` line naming the folder or file: a missing or empty root, a root without class
subfolders, a class folder without images. A corrupt image is reported (with its file name) when it is
read, not at start-up: checking the headers of 1.28M ImageNet files first would take too long.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from torch.utils.data import Dataset

from backbone.errors import InputError
from backbone.images import IMAGE_SUFFIXES, MAX_PIXELS, read_image

log = logging.getLogger(__name__)


def _images_under(folder: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / f for f in sorted(filenames)
                     if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES)
    return found


def find_classes(root: str | os.PathLike) -> list[str]:
    """Sorted names of the class subfolders of ``root`` (hidden folders skipped).

    Raises InputError for a missing root, an empty one, or one with images but no class subfolders.
    """
    r = Path(root)
    if not r.exists():
        raise InputError(r, "no such folder")
    if not r.is_dir():
        raise InputError(r, "is a file, expected a folder of class subfolders (ROOT/<class>/<image>)")
    entries = [e for e in os.scandir(r) if not e.name.startswith(".")]
    classes = sorted(e.name for e in entries if e.is_dir())
    if not classes:
        loose = [e for e in entries if Path(e.name).suffix.lower() in IMAGE_SUFFIXES]
        what = f"{len(loose)} images but no class subfolders" if loose else "empty folder"
        raise InputError(r, f"{what}; expected the ImageNet layout ROOT/<class>/<image>")
    return classes


class ImageFolder(Dataset):
    """``dataset[i] -> (transform(image), label)``; ``image`` is ``np.ndarray[H, W, 3]`` uint8 RGB.

    Args:
        root: folder with one subfolder per class.
        transform: applied to the image (default: none, the array is returned).
        class_names: the label space. None: the sorted subfolder names, labels 0..K-1. Given (e.g. a
            checkpoint's classes): each subfolder must be one of them and gets its index; folders
            not in the list are an InputError, classes without a folder are fine (evaluation subsets).
        classes_from: what ``class_names`` came from, for that error message (e.g. a checkpoint's name).
        max_pixels: passed to :func:`read_image`.

    Attributes:
        classes: the label names, index = label. samples: ``(path, label)`` pairs, sorted by class then path.
    """

    def __init__(self, root: str | os.PathLike, transform: Callable[[np.ndarray], object] | None = None, *,
                 class_names: Sequence[str] | None = None, classes_from: str = "the model",
                 max_pixels: int = MAX_PIXELS) -> None:
        self.root = Path(root)
        self.transform = transform
        self.max_pixels = max_pixels
        folders = find_classes(self.root)
        if class_names is None:
            self.classes = list(folders)
        else:
            self.classes = list(class_names)
            index = {name: i for i, name in enumerate(self.classes)}
            unknown = [f for f in folders if f not in index]
            if unknown:
                shown = ", ".join(unknown[:3]) + (" ..." if len(unknown) > 3 else "")
                raise InputError(self.root, f"{len(unknown)} class folders ({shown}) are not among the "
                                 f"{len(self.classes)} classes of {classes_from}")
        label_of = {name: i for i, name in enumerate(self.classes)}
        self.samples: list[tuple[Path, int]] = []
        for name in folders:
            files = _images_under(self.root / name)
            if not files:
                raise InputError(self.root / name, f"class folder has no image files ({', '.join(IMAGE_SUFFIXES[:3])} ...)")
            self.samples.extend((f, label_of[name]) for f in files)
        log.info("%s: %d images in %d classes", self.root, len(self.samples), len(folders))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[object, int]:
        path, label = self.samples[index]
        image = read_image(path, max_pixels=self.max_pixels)
        return (self.transform(image) if self.transform is not None else image), label

    @property
    def targets(self) -> list[int]:
        return [label for _, label in self.samples]
