"""A synthetic detection set that a detector must be able to learn: shapes on real photographs.

Used by ``bench/learnability.py``, ``detect demo`` and the slow learnability test (DESIGN.md, "How quality
is shown without pretrained weights"). The classes differ by **shape only** — a disc, a triangle, a cross
(and optionally a square frame, a diamond) — while colour, size (``min_size``..``max_size`` px along the
longer side) and aspect ratio are drawn from the same distributions for every class, so nothing but shape
tells them apart. Shapes are painted (anti-aliased) onto random crops of real photographs, which gives
selective search and the classifier realistic clutter. Train and test images use **different**
photographs, so the test split measures generalisation to unseen backgrounds. Everything is seeded.

Output is COCO format (what ``detect train`` / ``detect eval`` read)::

    OUT/train/*.jpg  OUT/train.json      OUT/test/*.jpg  OUT/test.json

Boxes are the tight boxes of the painted shapes' masks, ``(x1, y1, x2, y2)`` absolute pixels with no
``+1`` (written to COCO as ``[x, y, w, h]``). Shapes of one image never overlap each other.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from backbone.files import atomic_path

log = logging.getLogger(__name__)

#: shapes this generator can draw; the first three are the default classes
SHAPES = ("disc", "triangle", "cross", "frame", "diamond")

#: colour photographs bundled with scikit-image (no download needed), and grey ones made RGB. Left out:
#: those that show discs of the drawn shapes' size, which would be unlabelled objects of a class ("coins":
#: two dozen coins, "colorwheel", "retina", "clock": one round object filling much of the picture); with
#: "coins" in a test split, its coins were the highest-scored "false" discs.
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field",
                  "camera", "moon", "grass", "gravel", "brick", "cell", "page", "text")

#: ``detect train`` flags of the from-scratch recipe measured on this set (bench/learnability.py, README).
#: 48 px crops: at 32 px a box a pixel too wide on a side is a third of a pixel in the crop, and the classifier
#: could not tell the tight proposal from a loose one (AP at IoU 0.9 0.45 against 0.52 at 48 px).
SCRATCH_RECIPE = ("--weights", "none", "--crop-size", "48", "--padding", "3", "--proposals", "ss",
                  "--fg-iou", "0.8", "--near-background", "0.5", "--epochs", "3")

#: one background photograph: a name (for the record) and a loader returning ``np.ndarray[H, W, 3]`` uint8 RGB
Background = tuple[str, Callable[[], np.ndarray]]


@dataclass(frozen=True)
class ShapesConfig:
    """What the generator draws.

    Attributes:
        classes: shape names from :data:`SHAPES`; category ids are 1..K in this order.
        train_images, test_images: images per split.
        test_photo_fraction: share of the background photographs kept for the test split only.
        min_shapes, max_shapes: shapes per image (uniform).
        min_size, max_size: longer side of a shape's box in px (log-uniform).
        max_aspect: width / height drawn log-uniform in ``[1 / max_aspect, max_aspect]``.
        width, height: ranges of the image size in px (uniform); a random crop of a photograph is resized
            to it.
        min_contrast: least RGB distance between a shape's colour and the mean of the background under it
            (a shape invisible against its background teaches nothing).
        jpeg_quality: images are written as JPEG.
        seed: everything random derives from it.
    """

    classes: tuple[str, ...] = ("disc", "triangle", "cross")
    train_images: int = 192
    test_images: int = 64
    test_photo_fraction: float = 0.25
    min_shapes: int = 1
    max_shapes: int = 4
    min_size: int = 30
    max_size: int = 120
    max_aspect: float = 1.5
    width: tuple[int, int] = (320, 448)
    height: tuple[int, int] = (256, 384)
    min_contrast: float = 80.0
    jpeg_quality: int = 95
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [c for c in self.classes if c not in SHAPES]
        if unknown or len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes must be 2 or more distinct names from {SHAPES}, got {self.classes}")
        if not 1 <= self.min_shapes <= self.max_shapes:
            raise ValueError(f"need 1 <= min_shapes <= max_shapes, got {self.min_shapes}, {self.max_shapes}")
        if not 8 <= self.min_size <= self.max_size or self.max_size > min(self.width[0], self.height[0]) // 2:
            raise ValueError(f"need 8 <= min_size <= max_size <= half the smallest image side, got "
                             f"{self.min_size}, {self.max_size}")
        if not 0.0 < self.test_photo_fraction < 1.0:
            raise ValueError(f"test_photo_fraction must be in (0, 1), got {self.test_photo_fraction}")
        if self.train_images < 1 or self.test_images < 1:
            raise ValueError("need at least one train and one test image")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ShapesSplit:
    """Where :func:`make_shapes` wrote one split."""

    annotations: Path  # COCO instances JSON
    images: Path       # folder of the images
    num_images: int
    num_boxes: int
    photos: tuple[str, ...]  # background photographs this split drew from


def skimage_backgrounds() -> list[Background]:
    """The photographs scikit-image ships (:data:`SKIMAGE_PHOTOS`), as RGB loaders; no network needed."""
    import skimage.data

    def loader(name: str) -> Callable[[], np.ndarray]:
        def load() -> np.ndarray:
            image = np.asarray(getattr(skimage.data, name)())
            if image.ndim == 2:
                image = np.repeat(image[:, :, None], 3, axis=2)
            return np.ascontiguousarray(image[:, :, :3]).astype(np.uint8)
        return load

    return [(f"skimage:{name}", loader(name)) for name in SKIMAGE_PHOTOS]


def folder_backgrounds(folder: str | os.PathLike) -> list[Background]:
    """Every image of ``folder`` (e.g. coco128's ``train2017``), sorted by name, as RGB loaders."""
    from backbone.images import read_image
    from backbone.inputs import list_images

    return [(str(p), (lambda p=p: read_image(p))) for p in list_images(folder)]


# ----------------------------------------------------------------------------------------------------
# Drawing


def shape_mask(shape: str, width: int, height: int, *, supersample: int = 4) -> np.ndarray:
    """Anti-aliased coverage ``np.ndarray[height, width]`` float32 in [0, 1] of ``shape`` filling a
    ``width x height`` box (it touches all four sides)."""
    s = supersample
    w, h = width * s, height * s
    mask = np.zeros((h, w), np.uint8)
    if shape == "disc":
        cv2.ellipse(mask, (((w - 1) / 2, (h - 1) / 2), (w - 1, h - 1), 0.0), 255, -1)
    elif shape == "triangle":  # pointing up
        cv2.fillPoly(mask, [np.array([[0, h - 1], [w - 1, h - 1], [(w - 1) // 2, 0]], np.int32)], 255)
    elif shape == "cross":  # a plus sign, arms a third of the box thick
        mask[h // 3: h - h // 3, :] = 255
        mask[:, w // 3: w - w // 3] = 255
    elif shape == "frame":  # a square ring, a fifth of the box thick
        mask[:] = 255
        mask[h // 5: h - h // 5, w // 5: w - w // 5] = 0
    elif shape == "diamond":
        pts = [[(w - 1) // 2, 0], [w - 1, (h - 1) // 2], [(w - 1) // 2, h - 1], [0, (h - 1) // 2]]
        cv2.fillPoly(mask, [np.array(pts, np.int32)], 255)
    else:
        raise ValueError(f"unknown shape {shape!r}; choose from {SHAPES}")
    return cv2.resize(mask, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def _background(photo: np.ndarray, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A random crop of ``photo`` with the target aspect ratio (30-100 % of the largest such crop),
    randomly mirrored, resized to ``width x height``."""
    ph, pw = photo.shape[:2]
    aspect = width / height
    full_w = min(pw, ph * aspect)
    scale = rng.uniform(0.3, 1.0) ** 0.5
    cw = max(8, int(full_w * scale))
    ch = max(8, min(ph, int(round(cw / aspect))))
    x0, y0 = int(rng.integers(0, pw - cw + 1)), int(rng.integers(0, ph - ch + 1))
    crop = photo[y0: y0 + ch, x0: x0 + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    interp = cv2.INTER_AREA if cw > width else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(crop), (width, height), interpolation=interp)


def _place(sizes: list[tuple[int, int]], width: int, height: int, rng: np.random.Generator,
           gap: int = 4, tries: int = 50) -> list[tuple[int, int, int, int]]:
    """Non-overlapping positions (``gap`` px apart) for boxes of the given sizes; a box that does not
    fit after ``tries`` draws is left out."""
    placed: list[tuple[int, int, int, int]] = []
    for w, h in sizes:
        for _ in range(tries):
            x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            if all(x + w + gap <= a or a + c + gap <= x or y + h + gap <= b or b + d + gap <= y
                   for a, b, c, d in placed):
                placed.append((x, y, w, h))
                break
    return placed


def draw_image(photo: np.ndarray, config: ShapesConfig, rng: np.random.Generator
               ) -> tuple[np.ndarray, list[tuple[int, list[float]]]]:
    """One image: a background from ``photo`` with shapes painted on it.

    Returns ``(image np.ndarray[H, W, 3] uint8 RGB, [(class index 0..K-1, [x1, y1, x2, y2]), ...])``.
    """
    width = int(rng.integers(config.width[0], config.width[1] + 1))
    height = int(rng.integers(config.height[0], config.height[1] + 1))
    image = _background(photo, width, height, rng).astype(np.float32)
    n = int(rng.integers(config.min_shapes, config.max_shapes + 1))
    sizes, classes = [], []
    for _ in range(n):
        longer = float(np.exp(rng.uniform(np.log(config.min_size), np.log(config.max_size))))
        aspect = float(np.exp(rng.uniform(-np.log(config.max_aspect), np.log(config.max_aspect))))
        w, h = (longer, longer / aspect) if aspect >= 1 else (longer * aspect, longer)
        sizes.append((max(8, round(w)), max(8, round(h))))
        classes.append(int(rng.integers(len(config.classes))))
    objects = []
    for (x, y, w, h), cls in zip(_place(sizes, width, height, rng), classes):
        mask = shape_mask(config.classes[cls], w, h)
        under = image[y: y + h, x: x + w][mask > 0.5].mean(axis=0)
        colour = rng.uniform(0, 255, 3)
        for _ in range(30):  # a colour that stands out from what lies under the shape
            if np.linalg.norm(colour - under) >= config.min_contrast:
                break
            colour = rng.uniform(0, 255, 3)
        region = image[y: y + h, x: x + w]
        region[:] = region * (1 - mask[:, :, None]) + colour * mask[:, :, None]
        ys, xs = np.nonzero(mask >= 0.5)
        objects.append((cls, [float(x + xs.min()), float(y + ys.min()), float(x + xs.max() + 1),
                              float(y + ys.max() + 1)]))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), objects


# ----------------------------------------------------------------------------------------------------
# The data set


def split_photos(backgrounds: Sequence[Background], config: ShapesConfig) -> tuple[list[Background], list[Background]]:
    """Seeded split of the photographs into (train, test); each side gets at least one."""
    if len(backgrounds) < 2:
        raise ValueError(f"need at least 2 background photographs (train and test differ), got {len(backgrounds)}")
    order = np.random.default_rng([config.seed, 0xB6]).permutation(len(backgrounds))
    n_test = min(len(backgrounds) - 1, max(1, round(len(backgrounds) * config.test_photo_fraction)))
    return [backgrounds[i] for i in order[n_test:]], [backgrounds[i] for i in order[:n_test]]


def _write_split(out: Path, name: str, photos: list[Background], count: int, config: ShapesConfig,
                 split_seed: int, progress: bool) -> ShapesSplit:
    from tqdm import tqdm

    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([config.seed, split_seed])
    cache: dict[int, np.ndarray] = {}
    images, annotations = [], []
    for i in tqdm(range(count), desc=f"drawing {name}", unit="img", disable=not progress, leave=False):
        p = int(rng.integers(len(photos)))
        if p not in cache:
            cache[p] = photos[p][1]()
        image, objects = draw_image(cache[p], config, rng)
        file_name = f"{name}_{i:05d}.jpg"
        ok, data = cv2.imencode(".jpg", image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality])
        if not ok:
            raise RuntimeError(f"could not encode {file_name}")
        with atomic_path(folder / file_name) as tmp:
            tmp.write_bytes(data.tobytes())
        images.append({"id": i + 1, "file_name": file_name, "width": image.shape[1], "height": image.shape[0],
                       "photo": photos[p][0]})
        for cls, (x1, y1, x2, y2) in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": cls + 1,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    coco = {"info": {"description": f"synthetic shapes on photographs ({name} split)", "config": config.to_dict()},
            "images": images, "annotations": annotations,
            "categories": [{"id": k + 1, "name": c, "supercategory": "shape"} for k, c in enumerate(config.classes)]}
    path = out / f"{name}.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(coco))
    return ShapesSplit(path, folder, len(images), len(annotations), tuple(sorted({ph[0] for ph in photos})))


def make_shapes(out: str | os.PathLike, backgrounds: Sequence[Background], config: ShapesConfig = ShapesConfig(),
                *, progress: bool = False) -> tuple[ShapesSplit, ShapesSplit]:
    """Write the train and test splits under ``out`` (see the module docstring) and return them.

    ``backgrounds``: photographs to draw on (:func:`skimage_backgrounds`, :func:`folder_backgrounds`);
    a seeded :data:`ShapesConfig.test_photo_fraction` of them is used by the test split only.
    """
    out = Path(out)
    train_photos, test_photos = split_photos(backgrounds, config)
    train = _write_split(out, "train", train_photos, config.train_images, config, 1, progress)
    test = _write_split(out, "test", test_photos, config.test_images, config, 2, progress)
    log.info("shapes set: %d train images (%d boxes, %d photos), %d test images (%d boxes, %d photos) in %s",
             train.num_images, train.num_boxes, len(train_photos), test.num_images, test.num_boxes,
             len(test_photos), out)
    return train, test


__all__ = ("SHAPES", "SCRATCH_RECIPE", "ShapesConfig", "ShapesSplit", "make_shapes", "draw_image", "shape_mask",
           "skimage_backgrounds", "folder_backgrounds", "split_photos")
