"""Detection data sets read into one form: :class:`DetectionDataset` of :class:`ImageRecord`.

Readers for the ground truth the detector is trained and evaluated on:

* COCO instances JSON (:func:`read_coco`): ``bbox`` is ``[x, y, w, h]`` in absolute pixels; it becomes
  ``(x1, y1, x2, y2) = (x, y, x + w, y + h)``. Categories keep their own ids (1..90 with gaps) in
  :attr:`DetectionDataset.category_ids`; labels are contiguous ``1..K`` in order of category id.
  ``iscrowd`` becomes :attr:`ImageRecord.ignore`.
* PASCAL-VOC-style XML, one file per image (:func:`read_voc_xml`), the layout of the ILSVRC DET devkit
  (WordNet ids as ``<name>``) and of PASCAL VOC. Their ``<bndbox>`` holds 1-based inclusive pixel
  coordinates; they become ``(x1, y1, x2, y2) = (xmin - 1, ymin - 1, xmax, ymax)``, so that a box's width
  ``x2 - x1`` equals the devkit's ``xmax - xmin + 1``. VOC's ``<difficult>`` becomes ``ignore``.

All readers treat degenerate boxes the same way: boxes are clipped to the image, boxes left with zero
or negative width or height are dropped, and one warning gives their count. Everything else that is wrong
with a file (not JSON, missing fields, duplicate or dangling ids, unknown class names) is an
:class:`~backbone.errors.InputError` naming the file. Image files are not opened here: ``file`` is where
the image should be, and whoever reads pixels gets ``read_image``'s error if it is not there.

Hostile files (issue 13) are refused before anything is allocated from their values: JSON through
:func:`backbone.safeio.load_json` (size, nesting and integer-digit limits), XML files above
:data:`MAX_XML_BYTES`, FIFOs and devices (never opened, so nothing blocks). Types are strict: ids are
integers or strings, never booleans, floats, lists or objects, and category ids are all integers or all
strings, as are image ids; ``iscrowd`` is 0 or 1; widths and heights are positive integers up to
:data:`MAX_SIDE`; names hold no control characters. A ``file_name`` must be a relative path that stays
inside the image folder (no ``..``, not absolute) unless ``allow_absolute_paths=True``.
"""

from __future__ import annotations

import logging
import math
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

import torch
from torch import Tensor

from backbone.errors import InputError, has_control, short_repr
from backbone.safeio import load_json, read_bytes
from detect.cocojson import check_fields, check_id, is_id, is_number, read_categories, require_list

log = logging.getLogger(__name__)

#: The 200 ILSVRC 2014 DET classes in the devkit's order (index, wnid, WordNet names), shipped with us.
ILSVRC_DET200 = Path(__file__).resolve().parent / "data" / "ilsvrc_det200.tsv"

#: PASCAL VOC's 20 classes in the devkit's order (used when ``read_voc_xml`` gets no class list).
VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor")

_WNID = re.compile(r"^n\d{8}$")

#: Largest XML annotation file read (ILSVRC/VOC files are a few KB; a 200 MB one took 5 GB to parse).
MAX_XML_BYTES = 16 * 1024 * 1024
#: Largest image-set or synset list read (ILSVRC's train image set is ~10 MB).
MAX_LIST_BYTES = 256 * 1024 * 1024
#: Largest image width or height accepted from annotations (int32; no real image comes near it).
MAX_SIDE = 2**31 - 1


@dataclass(frozen=True)
class ImageRecord:
    """Ground truth of one image.

    Attributes:
        image_id: the data set's own id, kept for output (COCO: image id; VOC/ILSVRC: file name without
            suffix as listed in the image set, e.g. ``ILSVRC2013_val_00000001``).
        file: absolute path where the image should be (not checked here).
        width, height: image size in pixels.
        boxes: ``Tensor[N, 4]`` float32 ``(x1, y1, x2, y2)``, absolute pixels, no ``+1``.
        labels: ``Tensor[N]`` int64, contiguous ``1..K``.
        ignore: ``Tensor[N]`` bool: COCO ``iscrowd`` / VOC ``difficult``.
    """

    image_id: int | str
    file: Path
    width: int
    height: int
    boxes: Tensor
    labels: Tensor
    ignore: Tensor

    def __post_init__(self) -> None:
        n = self.boxes.shape[0]
        if self.boxes.shape != (n, 4) or self.labels.shape != (n,) or self.ignore.shape != (n,):
            raise ValueError(f"inconsistent ground-truth shapes {tuple(self.boxes.shape)}, "
                             f"{tuple(self.labels.shape)}, {tuple(self.ignore.shape)}")


@dataclass(frozen=True)
class DetectionDataset:
    """A detection data set: records plus its class list.

    Attributes:
        records: one :class:`ImageRecord` per image, in the file's order (images without objects kept).
        class_names: ``class_names[k - 1]`` is the readable name of label ``k``.
        category_ids: the data set's own id of label ``k`` at ``k - 1`` (COCO category id; ILSVRC wnid;
            VOC class name).
        kind: ``"coco"``, ``"ilsvrc"`` or ``"voc"``.
        source: the annotation file or folder it was read from.
        image_index: ILSVRC devkit's 1-based image index per ``image_id``, from the image-set file's
            second column (``val.txt``/``test.txt``: ``name index``); empty when there was none or it is
            not a unique positive index (``train_N.txt`` holds 1/0/-1 labels there): then the index is the
            position in ``records`` + 1.
    """

    records: list[ImageRecord]
    class_names: list[str]
    category_ids: list[int | str]
    kind: str
    source: Path
    image_index: dict[int | str, int] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        """K, the number of foreground classes."""
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.records)


# --------------------------------------------------------------------------------------------- common
def _clip_and_filter(boxes: list[list[float]], width: int, height: int) -> tuple[Tensor, Tensor]:
    """Clip ``boxes`` (xyxy lists) to the image; return (clipped float32 boxes, keep mask)."""
    t = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    t[:, 0::2] = t[:, 0::2].clamp(0, width)
    t[:, 1::2] = t[:, 1::2].clamp(0, height)
    keep = (t[:, 2] > t[:, 0]) & (t[:, 3] > t[:, 1])
    return t, keep


def _warn_dropped(source: Path, dropped: int) -> None:
    if dropped:
        log.warning("%s: %d boxes of zero size or outside their image dropped (boxes are clipped to the image)",
                    source, dropped)


# ----------------------------------------------------------------------------------------------- COCO


def _check_side(path: Path, img: dict) -> tuple[int, int]:
    w, h = img["width"], img["height"]
    ok = all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_SIDE for v in (w, h))
    if not ok:
        raise InputError(path, f"image id {short_repr(img['id'])} has size {short_repr(w)}x{short_repr(h)}, "
                               f"expected positive integers up to {MAX_SIDE}")
    return w, h


def _check_file_name(path: Path, img: dict, allow_absolute: bool) -> str:
    """The image's ``file_name``: a string naming a file inside the image folder (see the module docstring)."""
    name = img["file_name"]
    ident = short_repr(img["id"])
    if not isinstance(name, str) or not name.strip() or has_control(name):
        raise InputError(path, f"image id {ident} has file_name {short_repr(name)}, expected a file name "
                               "(a non-empty string without control characters)")
    pure = PurePosixPath(name.replace("\\", "/"))
    if (pure.is_absolute() or Path(name).is_absolute()) and not allow_absolute:
        raise InputError(path, f"image id {ident} has an absolute file_name {short_repr(name)}; file names must be "
                               "relative to the image folder (allow_absolute_paths=True accepts them)")
    if ".." in pure.parts and not allow_absolute:
        raise InputError(path, f"image id {ident} has file_name {short_repr(name)}, which leaves the image folder")
    if any(len(part.encode("utf-8", "surrogatepass")) > 255 for part in pure.parts):
        raise InputError(path, f"image id {ident} has a file_name with a part longer than 255 bytes")
    return name


def read_coco(annotations: str | os.PathLike, images: str | os.PathLike | None = None, *,
              allow_absolute_paths: bool = False) -> DetectionDataset:
    """Read a COCO instances JSON file.

    Args:
        annotations: the ``instances_*.json`` file.
        images: folder holding the images' ``file_name``; default: the annotation file's folder.
        allow_absolute_paths: accept ``file_name`` values that are absolute or contain ``..`` (by default
            they are refused: a file's names must stay inside its image folder).

    Returns:
        A :class:`DetectionDataset` of kind ``"coco"``; records in the order of ``"images"``, images
        without annotations kept; labels ``1..K`` in order of category id.

    Raises:
        InputError: not JSON, missing ``images``/``annotations``/``categories`` or entry fields, duplicate
            image/annotation/category ids, an annotation with an unknown image or category id, a ``bbox``
            that is not four finite numbers, a non-positive image size, ids of the wrong type, an
            ``iscrowd`` other than 0/1, a ``file_name`` outside the image folder; and any file above the
            limits of :mod:`backbone.safeio`.
    """
    path = Path(annotations).resolve()
    data = load_json(path)
    if not isinstance(data, dict):
        raise InputError(path, "not a COCO instances file: expected a JSON object with 'images', "
                               "'annotations' and 'categories'")
    images_list = require_list(path, data, "images")
    anns = require_list(path, data, "annotations")
    cats = require_list(path, data, "categories")
    image_root = Path(images).resolve() if images is not None else path.parent

    categories: dict[int | str, str] = read_categories(path, cats)
    category_ids = sorted(categories)
    label_of = {cid: k + 1 for k, cid in enumerate(category_ids)}

    infos: dict[Any, dict] = {}
    for img in images_list:
        check_fields(path, "image", img, ("id", "file_name", "width", "height"))
        check_id(path, img["id"], "image id")
        if img["id"] in infos:
            raise InputError(path, f"duplicate image id {short_repr(img['id'])}")
        _check_side(path, img)
        _check_file_name(path, img, allow_absolute_paths)
        infos[img["id"]] = img
    if len({type(i) for i in infos}) > 1:
        raise InputError(path, "image ids mix integers and strings; use one kind in a file")

    per_image: dict[Any, tuple[list, list, list]] = {i: ([], [], []) for i in infos}
    seen_ann: set = set()
    for ann in anns:
        check_fields(path, "annotation", ann, ("id", "image_id", "category_id", "bbox"))
        ident = short_repr(check_id(path, ann["id"], "annotation id"))
        if ann["id"] in seen_ann:
            raise InputError(path, f"duplicate annotation id {ident}")
        seen_ann.add(ann["id"])
        if not is_id(ann["image_id"]) or ann["image_id"] not in per_image:
            raise InputError(path, f"annotation id {ident} refers to unknown image id {short_repr(ann['image_id'])}")
        if not is_id(ann["category_id"]) or ann["category_id"] not in label_of:
            raise InputError(path, f"annotation id {ident} refers to unknown category id "
                                   f"{short_repr(ann['category_id'])}")
        bbox = ann["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(is_number(v) for v in bbox)):
            raise InputError(path, f"annotation id {ident} has bbox {short_repr(bbox)}, expected [x, y, w, h] "
                                   "numbers")
        crowd_flag = ann.get("iscrowd", 0)
        if type(crowd_flag) is not int or crowd_flag not in (0, 1):
            raise InputError(path, f"annotation id {ident} has iscrowd {short_repr(crowd_flag)}, expected 0 or 1")
        x, y, w, h = bbox
        boxes, labels, crowd = per_image[ann["image_id"]]
        boxes.append([x, y, x + w, y + h])
        labels.append(label_of[ann["category_id"]])
        crowd.append(crowd_flag == 1)

    records = []
    dropped = 0
    for image_id, img in infos.items():
        boxes, labels, crowd = per_image[image_id]
        t, keep = _clip_and_filter(boxes, img["width"], img["height"])
        dropped += int((~keep).sum())
        records.append(ImageRecord(
            image_id=image_id, file=image_root / img["file_name"], width=img["width"], height=img["height"],
            boxes=t[keep], labels=torch.tensor(labels, dtype=torch.int64).reshape(-1)[keep],
            ignore=torch.tensor(crowd, dtype=torch.bool).reshape(-1)[keep]))
    _warn_dropped(path, dropped)
    log.debug("%s: %d images, %d boxes, %d classes", path, len(records), len(seen_ann) - dropped, len(categories))
    return DetectionDataset(records=records, class_names=[categories[c] for c in category_ids],
                            category_ids=list(category_ids), kind="coco", source=path)


# -------------------------------------------------------------------------------------- VOC / ILSVRC
def read_synsets(path: str | os.PathLike = ILSVRC_DET200) -> tuple[list[str], list[str]]:
    """Read a synset table (``index<TAB>wnid<TAB>names``, header line first).

    Returns:
        ``(wnids, names)`` in file order; ``names`` holds the first WordNet name of each synset.
    """
    p = Path(path)
    lines = _read_lines(p, "synset table")
    wnids, names = [], []
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 3 or not _WNID.match(parts[1]):
            raise InputError(p, f"line {lineno}: expected 'index<TAB>wnid<TAB>names'")
        wnids.append(parts[1])
        names.append(parts[2].split(",")[0].strip())
    if not wnids:
        raise InputError(p, "synset table is empty")
    return wnids, names


def _read_lines(path: Path, what: str) -> list[str]:
    """The UTF-8 lines of a regular file of at most :data:`MAX_LIST_BYTES`."""
    data = read_bytes(path, max_bytes=MAX_LIST_BYTES, what=what)
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise InputError(path, f"{what} is not UTF-8 text") from None


def _read_image_set(path: Path) -> list[tuple[str, int | None]]:
    """Lines ``name [index]`` of a devkit image-set file (VOC: name only; ILSVRC: name and 1-based index)."""
    lines = _read_lines(path, "image-set file")
    entries = []
    for lineno, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) > 2 or (len(parts) == 2 and not (parts[1].lstrip("-").isdigit() and len(parts[1]) <= 12)):
            raise InputError(path, f"line {lineno}: expected '<image name> [<index>]', got {short_repr(line.strip())}")
        pure = PurePosixPath(parts[0])
        if pure.is_absolute() or ".." in pure.parts:
            raise InputError(path, f"line {lineno}: image name {short_repr(parts[0])} leaves the annotation folder")
        entries.append((parts[0], int(parts[1]) if len(parts) == 2 else None))
    if not entries:
        raise InputError(path, "image-set file lists no images")
    return entries


def _xml_int(xml: Path, node: ET.Element, tag: str) -> float:
    child = node.find(tag)
    if child is None or child.text is None:
        raise InputError(xml, f"<{node.tag}> has no <{tag}>")
    text = child.text.strip()
    try:
        value = float(text)
    except ValueError:
        raise InputError(xml, f"<{tag}> is {short_repr(text)}, expected a number") from None
    if not math.isfinite(value) or abs(value) > MAX_SIDE:
        raise InputError(xml, f"<{tag}> is {short_repr(text)}, expected a finite number up to {MAX_SIDE}")
    return value


def _xml_root(xml: Path) -> ET.Element:
    """The root element of an XML file of at most :data:`MAX_XML_BYTES` (a regular file: never a FIFO)."""
    data = read_bytes(xml, max_bytes=MAX_XML_BYTES, what="XML file")
    try:
        return ET.fromstring(data)
    except ET.ParseError as err:
        raise InputError(xml, f"not valid XML ({err})") from None


def _parse_xml(xml: Path) -> tuple[int, int, list[tuple[str, list[float], bool]]]:
    """(width, height, [(name, [xmin, ymin, xmax, ymax] 1-based inclusive, difficult)]) of one XML file."""
    root = _xml_root(xml)
    size = root.find("size")
    if size is None:
        raise InputError(xml, "no <size> element")
    width, height = int(_xml_int(xml, size, "width")), int(_xml_int(xml, size, "height"))
    if width <= 0 or height <= 0:
        raise InputError(xml, f"<size> is {width}x{height}, expected positive")
    objects = []
    for obj in root.findall("object"):
        name = obj.findtext("name")
        if name is None or not name.strip():
            raise InputError(xml, "<object> has no <name>")
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise InputError(xml, f"<object> '{name.strip()}' has no <bndbox>")
        coords = [_xml_int(xml, bndbox, t) for t in ("xmin", "ymin", "xmax", "ymax")]
        difficult = (obj.findtext("difficult") or "0").strip() == "1"
        objects.append((name.strip(), coords, difficult))
    return width, height, objects


def _find_image(images_dir: Path | None, xml: Path, name: str, suffix: str) -> Path:
    if images_dir is None:
        return xml.with_suffix(suffix)
    for ext in (suffix, suffix.lower(), ".jpg", ".jpeg", ".png"):
        candidate = images_dir / f"{name}{ext}"
        if candidate.exists():
            return candidate
    return images_dir / f"{name}{suffix}"


def read_voc_xml(annotation_dir: str | os.PathLike, images_dir: str | os.PathLike | None = None, *,
                 image_set: str | os.PathLike | None = None, class_names: Sequence[str] | None = None,
                 kind: str = "ilsvrc", synsets: str | os.PathLike = ILSVRC_DET200) -> DetectionDataset:
    """Read PASCAL-VOC-style XML annotations (the ILSVRC DET devkit layout, or PASCAL VOC).

    Args:
        annotation_dir: folder of ``<name>.xml`` files (e.g. ``Annotations/DET/val``).
        images_dir: folder of the images (``<name>.JPEG`` for ILSVRC, ``<name>.jpg`` for VOC); default:
            beside each XML file.
        image_set: devkit image-set file (e.g. ``ImageSets/DET/val.txt``, lines ``name index``); default:
            every ``*.xml`` under ``annotation_dir``, sorted, ``name`` = path relative to it without suffix.
        class_names: the classes, in label order, as they appear in ``<name>`` (VOC default:
            :data:`VOC_CLASSES`; ILSVRC: ignored, the 200 wnids of ``synsets`` are used).
        kind: ``"ilsvrc"`` (``<name>`` is a WordNet id, readable names from ``synsets``) or ``"voc"``.
        synsets: ILSVRC synset table (default: the shipped ``detect/data/ilsvrc_det200.tsv``).

    Returns:
        A :class:`DetectionDataset`; boxes converted from 1-based inclusive ``(xmin, ymin, xmax, ymax)`` to
        ``(xmin - 1, ymin - 1, xmax, ymax)``, clipped to the image, empty ones dropped (one warning).

    Raises:
        InputError: naming the XML file when it has no ``<size>``, an object without ``<bndbox>``
            or ``<name>``, a name outside the class list; naming the folder/image set when empty.
    """
    if kind not in ("ilsvrc", "voc"):
        raise ValueError(f"kind must be 'ilsvrc' or 'voc', got {kind!r}")
    root = Path(annotation_dir).resolve()
    if not root.is_dir():
        raise InputError(root, "no such annotation folder")
    img_root = Path(images_dir).resolve() if images_dir is not None else None
    if kind == "ilsvrc":
        ids, names = read_synsets(synsets)
        category_ids: list[int | str] = list(ids)
        readable = names
        suffix = ".JPEG"
    else:
        category_ids = list(class_names if class_names is not None else VOC_CLASSES)
        readable = [str(c) for c in category_ids]
        suffix = ".jpg"
    label_of = {c: k + 1 for k, c in enumerate(category_ids)}

    if image_set is not None:
        entries = _read_image_set(Path(image_set).resolve())
    else:
        xmls = sorted(root.rglob("*.xml"))
        if not xmls:
            raise InputError(root, "no *.xml annotation files in folder")
        entries = [(x.relative_to(root).with_suffix("").as_posix(), None) for x in xmls]

    records, index = [], {}
    dropped = 0
    for name, idx in entries:
        xml = root / f"{name}.xml"
        if not os.path.lexists(xml):
            raise InputError(xml, "no such annotation file (listed in the image set)")
        width, height, objects = _parse_xml(xml)
        boxes, labels, difficult = [], [], []
        for obj_name, (x1, y1, x2, y2), diff in objects:
            if obj_name not in label_of:
                raise InputError(xml, f"object name '{obj_name}' is not one of the {len(label_of)} classes")
            boxes.append([x1 - 1, y1 - 1, x2, y2])
            labels.append(label_of[obj_name])
            difficult.append(diff)
        t, keep = _clip_and_filter(boxes, width, height)
        dropped += int((~keep).sum())
        records.append(ImageRecord(
            image_id=name, file=_find_image(img_root, xml, name, suffix), width=width, height=height,
            boxes=t[keep], labels=torch.tensor(labels, dtype=torch.int64).reshape(-1)[keep],
            ignore=torch.tensor(difficult, dtype=torch.bool).reshape(-1)[keep]))
        if idx is not None:
            index[name] = idx
    _warn_dropped(root, dropped)
    if len(index) != len(records) or len(set(index.values())) != len(index) or min(index.values(), default=1) < 1:
        index = {}  # not val.txt/test.txt indices (e.g. train_N.txt's 1/0/-1 labels): use positions
    if len({r.image_id for r in records}) != len(records):
        raise InputError(image_set or root, "an image is listed twice")
    return DetectionDataset(records=records, class_names=readable, category_ids=category_ids, kind=kind,
                            source=root, image_index=index)


def _looks_like_ilsvrc(folder: Path) -> bool:
    """True when the first XML file's first object name is a WordNet id (``n01234567``)."""
    for xml in sorted(folder.rglob("*.xml"))[:20]:
        try:
            names = [n.text or "" for n in _xml_root(xml).iter("name")]
        except InputError:
            continue
        if names:
            return bool(_WNID.match(names[0].strip()))
    return True


def read_dataset(annotations: str | os.PathLike, images: str | os.PathLike | None = None,
                 **kwargs: Any) -> DetectionDataset:
    """Read ground truth by its form: a ``.json`` file is COCO; a folder is VOC-style XML.

    For a folder, ``kind`` defaults to ``"ilsvrc"`` when object names are WordNet ids, else ``"voc"``;
    other keyword arguments go to :func:`read_voc_xml`. ``allow_absolute_paths`` goes to :func:`read_coco`
    (XML folders name their images by the annotation files' names).
    """
    path = Path(annotations)
    try:
        is_dir = path.is_dir()
    except (OSError, ValueError) as err:  # a name too long for the file system, a NUL byte
        raise InputError(path, f"cannot read ({getattr(err, 'strerror', None) or err})") from None
    allow_absolute = kwargs.pop("allow_absolute_paths", False)
    if is_dir:
        kwargs.setdefault("kind", "ilsvrc" if _looks_like_ilsvrc(path) else "voc")
        return read_voc_xml(path, images, **kwargs)
    if not os.path.lexists(path):
        raise InputError(path, "no such file or folder")
    if kwargs:
        raise InputError(path, f"options {sorted(kwargs)} apply only to a folder of XML annotations")
    return read_coco(path, images, allow_absolute_paths=allow_absolute)

