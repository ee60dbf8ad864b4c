"""Generate the bad-input corpus: odd-but-valid and broken images, ground truth, results and checkpoints.

Nothing here is committed as a binary: every file is written by :func:`build_corpus` into a folder
(the test session's ``tmp_path_factory``, see ``conftest.py``), in well under 5 s on one core.

Each entry is a :class:`Kind`: a name, the path it lives at, what it is (``"image"``, ``"coco"``,
``"results"``, ``"xml"``, ``"checkpoint"``) and whether a correct program must accept it (``valid``:
odd but legal input, a correct result expected) or refuse it with one line naming the file.

Run by hand to look at the files::

    python -m tests.corpus.make_corpus /tmp/corpus          # prints one line per kind
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Kind:
    """One corpus entry.

    Attributes:
        name: short identifier (test ids use it).
        path: the file (or folder, for kinds that are folders where a file is expected).
        what: ``image`` | ``coco`` | ``results`` | ``xml`` | ``checkpoint``.
        valid: True when a correct program must accept it and give a correct result.
        problem: for invalid kinds, a few words the error line must contain (case-insensitive), any of
            the alternatives separated by ``|``.
        note: what is odd about it.
        meta: kind-specific facts the tests check (e.g. the expected decoded size).
    """

    name: str
    path: Path
    what: str
    valid: bool
    problem: str = ""
    note: str = ""
    meta: dict = field(default_factory=dict)


def _photo(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """A small RGB test picture with structure (gradients + a block), ``uint8[H, W, 3]``."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) * 127 // max(w + h - 2, 1)], -1)
    img[h // 4: h // 2, w // 4: w // 2] = (220, 30, 40)
    img = img.astype(np.int16) + rng.integers(-8, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _uniform_png(path: Path, width: int, height: int) -> None:
    """A 1-bit grayscale PNG of ``width x height`` zeros, written by hand (Pillow would allocate it all).

    Each scanline is a filter byte + ceil(width / 8) zero bytes; zlib squeezes 20000x20000 into ~60 KB.
    """
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    row = b"\x00" * (1 + (width + 7) // 8)
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, grayscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def _jpeg_bytes(img: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90, **kwargs)
    return buf.getvalue()


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


class _Evil:
    """A pickle payload that would create ``marker`` when unpickled (``weights_only`` must refuse it)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


# ------------------------------------------------------------------------------------------------ images
def make_images(root: Path) -> list[Kind]:
    """Image kinds under ``root/images`` (one file each, except the folder kind)."""
    d = root / "images"
    d.mkdir(parents=True, exist_ok=True)
    photo = _photo()
    pil = Image.fromarray(photo)
    kinds: list[Kind] = []

    def add(name, filename, data, valid, problem="", note="", **meta):
        p = d / filename
        if data is not None:
            p.write_bytes(data)
        kinds.append(Kind(name, p, "image", valid, problem, note, meta))
        return p

    jpg, png = _jpeg_bytes(pil), _png_bytes(pil)
    add("empty_jpg", "empty.jpg", b"", False, "empty", "zero-byte file")
    add("truncated_jpg", "truncated.jpg", jpg[: len(jpg) // 2], False, "truncated|corrupt", "first half of a JPEG")
    add("truncated_png", "truncated.png", png[: len(png) // 2], False, "truncated|corrupt", "first half of a PNG")
    add("jpeg_header_only", "header_only.jpg", jpg[:20], False, "truncated|corrupt|not a readable",
        "SOI + APP0 only")
    add("text_as_jpg", "notes.jpg", b"this is not an image\n" * 3, False, "not a readable|corrupt",
        "a text file named .jpg")
    add("html_as_png", "page.png", b"<!doctype html><html><body>404</body></html>\n", False,
        "not a readable|corrupt", "an HTML error page saved as .png")
    folder = d / "folder.jpg"
    folder.mkdir(exist_ok=True)
    kinds.append(Kind("folder_as_image", folder, "image", False, "folder", "a directory named like an image"))
    add("missing", "does_not_exist.jpg", None, False, "no such file", "path that does not exist")
    dangling = d / "dangling.jpg"
    if not dangling.is_symlink():
        dangling.symlink_to(d / "nowhere.jpg")
    kinds.append(Kind("dangling_symlink", dangling, "image", False, "no such file", "symlink to nothing"))
    p = add("no_permission", "locked.jpg", jpg, False, "permission", "chmod 000 (root reads it anyway)")
    p.chmod(0)

    h, w = photo.shape[:2]
    add("grayscale_png", "gray.png", _png_bytes(pil.convert("L")), True, note="8-bit grayscale", size=(h, w))
    add("grayscale_jpg", "gray_lum.jpg", _jpeg_bytes(pil.convert("L")), True, note="1-channel JPEG", size=(h, w))
    add("rgba_png", "rgba.png", _png_bytes(pil.convert("RGBA")), True, note="alpha channel", size=(h, w))
    add("palette_png", "palette.png", _png_bytes(pil.convert("P", palette=Image.Palette.ADAPTIVE)), True,
        note="palette (P mode)", size=(h, w))
    deep = (photo[..., 0].astype(np.uint16) * 257)
    add("gray16_png", "gray16.png", _png_bytes(Image.fromarray(deep)), True, note="16-bit grayscale",
        size=(h, w))
    import cv2  # 16-bit RGB PNG: Pillow cannot write one, OpenCV can
    ok, buf = cv2.imencode(".png", photo[..., ::-1].astype(np.uint16) * 257)
    assert ok
    add("rgb16_png", "rgb16.png", buf.tobytes(), True, note="16-bit RGB", size=(h, w),
        expect=photo.tolist())
    add("cmyk_jpg", "cmyk.jpg", _jpeg_bytes(pil.convert("CMYK")), True, note="CMYK JPEG", size=(h, w))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    add("exif_rotated_jpg", "exif6.jpg", _jpeg_bytes(pil, exif=exif.tobytes()), True,
        note="EXIF orientation 6: displayed size is the stored size transposed", size=(w, h), stored=(h, w))
    add("one_pixel", "1x1.png", _png_bytes(Image.new("RGB", (1, 1), (10, 200, 30))), True, note="1x1",
        size=(1, 1))
    add("one_by_5000", "1x5000.png", _png_bytes(Image.new("RGB", (1, 5000), (90, 90, 200))), True,
        note="1 px wide, 5000 tall", size=(5000, 1))
    add("5000_by_1", "5000x1.png", _png_bytes(Image.new("RGB", (5000, 1), (90, 200, 90))), True,
        note="5000 px wide, 1 tall", size=(1, 5000))
    huge = d / "huge_20000x20000.png"
    _uniform_png(huge, 20000, 20000)
    kinds.append(Kind("huge_20000", huge, "image", False, "limit|MP", "400 MP uniform PNG (~60 KB on disk)",
                      {"size": (20000, 20000)}))
    odd = d / "ünïcødé 画像 dir"
    odd.mkdir(exist_ok=True)
    p = odd / "фото с пробелом.jpg"
    p.write_bytes(jpg)
    kinds.append(Kind("non_ascii_space_path", p, "image", True, note="non-ASCII folder and file name with spaces",
                      meta={"size": (h, w)}))
    add("wrong_suffix_png_as_jpg", "really_png.jpg", png, True, note="a PNG named .jpg", size=(h, w))
    add("jpeg_trailing_bytes", "trailing.jpg", jpg + b"\x00" * 300, True, size=(h, w),
        note="300 bytes after the end-of-image marker (some cameras append data)")
    add("png_trailing_bytes", "trailing_iend.png", png + b"extra" * 60, True, size=(h, w),
        note="300 bytes after the IEND chunk")
    big = _jpeg_bytes(Image.fromarray(_photo(120, 160, seed=1)))
    comment = b"\xff\xfe\x00\x06\xff\xd9\x00\x00"  # a COM segment holding an EOI-like pair (as thumbnails do)
    add("jpeg_cut_tail_with_early_eoi", "cut_tail.jpg", big[:2] + comment + big[2:-200], False,
        "truncated|corrupt", "last 200 bytes missing; an earlier segment holds the bytes FF D9")
    return kinds


# ------------------------------------------------------------------------------------------ COCO / XML
def _coco_base(image_file: str = "img.png", width: int = 64, height: int = 48) -> dict:
    return {
        "images": [{"id": 1, "file_name": image_file, "width": width, "height": height}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [8.0, 6.0, 20.0, 16.0],
                         "area": 320.0, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "thing"}, {"id": 2, "name": "other"}],
    }


def make_coco(root: Path) -> list[Kind]:
    """COCO instances files under ``root/coco`` (with one valid 64x48 image ``img.png`` beside them) and
    COCO results files checked against the valid one."""
    d = root / "coco"
    d.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_photo()).save(d / "img.png")
    kinds: list[Kind] = []

    def add(name, obj, valid, problem="", note="", what="coco", raw=None, **meta):
        p = d / f"{name}.json"
        if isinstance(raw, bytes):
            p.write_bytes(raw)
        else:
            p.write_text(raw if raw is not None else json.dumps(obj))
        kinds.append(Kind(name, p, what, valid, problem, note, meta))

    base = _coco_base()
    add("coco_valid", base, True, note="one image, one box")
    add("coco_not_json", None, False, "not valid JSON", raw="{'images': [", note="Python literal, cut off")
    add("coco_binary", None, False, "not valid JSON", raw=b"\xff\xfe\x00\x89garbage", note="not UTF-8")
    add("coco_list", [1, 2, 3], False, "not a COCO", note="a JSON list")
    for key in ("images", "annotations", "categories"):
        add(f"coco_no_{key}", {k: v for k, v in base.items() if k != key}, False, f"'{key}'",
            note=f"no '{key}' field")
    dup = json.loads(json.dumps(base))
    dup["images"].append(dict(dup["images"][0]))
    add("coco_duplicate_image_id", dup, False, "duplicate image id")
    dup = json.loads(json.dumps(base))
    dup["annotations"].append(dict(dup["annotations"][0]))
    add("coco_duplicate_annotation_id", dup, False, "duplicate annotation id")
    dup = json.loads(json.dumps(base))
    dup["categories"].append({"id": 1, "name": "again"})
    add("coco_duplicate_category_id", dup, False, "duplicate category id")
    bad = json.loads(json.dumps(base))
    bad["annotations"].append({"id": 2, "image_id": 1, "category_id": 7, "bbox": [1, 1, 5, 5]})
    add("coco_unknown_category", bad, False, "unknown category")
    bad = json.loads(json.dumps(base))
    bad["annotations"].append({"id": 2, "image_id": 99, "category_id": 1, "bbox": [1, 1, 5, 5]})
    add("coco_unknown_image", bad, False, "unknown image")
    # degenerate boxes are dropped with a warning (documented in detect.datasets): valid, with 1 box kept
    for name, bbox in (("coco_box_negative_size", [30, 30, -10, 5]), ("coco_box_zero_size", [10, 10, 0, 7]),
                       ("coco_box_outside_image", [100, 100, 20, 20])):
        deg = json.loads(json.dumps(base))
        deg["annotations"].append({"id": 2, "image_id": 1, "category_id": 2, "bbox": bbox, "iscrowd": 0})
        add(name, deg, True, note=f"extra bbox {bbox} (dropped with a warning)", boxes_kept=1)
    part = json.loads(json.dumps(base))
    part["annotations"].append({"id": 2, "image_id": 1, "category_id": 2, "bbox": [50, 40, 30, 30]})
    add("coco_box_partly_outside", part, True, note="bbox crossing the border (clipped)", boxes_kept=2,
        clipped=[50.0, 40.0, 64.0, 48.0])
    bad = json.loads(json.dumps(base))
    bad["annotations"][0]["bbox"] = [1, 2, "3", None]
    add("coco_bbox_not_numbers", bad, False, "bbox")
    bad = json.loads(json.dumps(base))
    bad["images"][0]["width"] = 0
    add("coco_zero_image_size", bad, False, "size")
    bad = json.loads(json.dumps(base))
    del bad["images"][0]["file_name"]
    add("coco_image_no_file_name", bad, False, "file_name")

    # results, checked against coco_valid.json
    good = [{"image_id": 1, "category_id": 1, "bbox": [8.0, 6.0, 20.0, 16.0], "score": 0.9}]
    add("results_valid", good, True, what="results", note="one perfect detection")
    add("results_unknown_category", [{**good[0], "category_id": 42}], False, "category_id", what="results")
    add("results_unknown_image", [{**good[0], "image_id": 5}], False, "image_id", what="results")
    add("results_nan_score", None, False, "score", what="results", note="NaN literal in JSON",
        raw='[{"image_id": 1, "category_id": 1, "bbox": [8, 6, 20, 16], "score": NaN}]')
    add("results_inf_bbox", None, False, "bbox", what="results",
        raw='[{"image_id": 1, "category_id": 1, "bbox": [8, 6, Infinity, 16], "score": 0.5}]')
    add("results_negative_box", [{**good[0], "bbox": [8, 6, -3, 16]}], False, "negative", what="results")
    add("results_missing_score", [{k: v for k, v in good[0].items() if k != "score"}], False, "score",
        what="results")
    add("results_not_list", {"image_id": 1}, False, "list", what="results")
    add("results_not_json", None, False, "not valid JSON", what="results", raw="[{")
    add("results_empty_list", [], True, what="results", note="no detections: AP 0 (or undefined), no crash")
    return kinds


def _xml(objects: str, size: str = "<size><width>64</width><height>48</height></size>") -> str:
    return f"<annotation><folder>val</folder><filename>a</filename>{size}{objects}</annotation>"


def make_xml(root: Path) -> list[Kind]:
    """ILSVRC/VOC-style XML folders under ``root/xml/<kind>/a.xml`` (one file each; image a.JPEG beside)."""
    obj = ("<object><name>n02691156</name><bndbox><xmin>9</xmin><ymin>7</ymin><xmax>28</xmax><ymax>22</ymax>"
           "</bndbox></object>")
    cases = {
        "xml_valid": (_xml(obj), True, ""),
        "xml_no_size": (_xml(obj, size=""), False, "size"),
        "xml_no_name": (_xml(obj.replace("<name>n02691156</name>", "")), False, "name"),
        "xml_no_bndbox": (_xml("<object><name>n02691156</name></object>"), False, "bndbox"),
        "xml_no_xmax": (_xml(obj.replace("<xmax>28</xmax>", "")), False, "xmax"),
        "xml_text_coord": (_xml(obj.replace("<xmin>9</xmin>", "<xmin>nine</xmin>")), False, "xmin"),
        "xml_unknown_wnid": (_xml(obj.replace("n02691156", "n99999999")), False, "n99999999|unknown"),
        "xml_not_xml": ("<annotation><object>", False, "XML|parse"),
        "xml_empty_file": ("", False, "XML|empty|parse"),
    }
    kinds = []
    img = Image.fromarray(_photo())
    results = root / "xml" / "results_a.json"  # one perfect detection of the valid file's box
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps([{"image_id": "a", "category_id": "n02691156", "bbox": [8, 6, 20, 16],
                                    "score": 0.9}]))
    for name, (text, valid, problem) in cases.items():
        d = root / "xml" / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "a.xml").write_text(text)
        img.save(d / "a.JPEG", format="JPEG")
        kinds.append(Kind(name, d, "xml", valid, problem, meta={"file": d / "a.xml", "results": results}))
    return kinds


# ------------------------------------------------------------------------------------------ checkpoints
def make_checkpoints(root: Path, valid_checkpoint: Path | None = None) -> list[Kind]:
    """Broken or foreign checkpoints under ``root/ckpt``. ``valid_checkpoint`` (a region classifier) is
    truncated for the truncated kind; without it that kind is left out."""
    import torch

    d = root / "ckpt"
    d.mkdir(parents=True, exist_ok=True)
    kinds = []

    def add(name, valid, problem, note="", data=None, obj=None, **meta):
        p = d / f"{name}.pt"
        if data is not None:
            p.write_bytes(data)
        else:
            torch.save(obj, p)
        kinds.append(Kind(name, p, "checkpoint", valid, problem, note, meta))
        return p

    add("ckpt_empty", False, "empty", data=b"", note="zero bytes")
    add("ckpt_text", False, "not a readable", data=b"hello, not a checkpoint\n", note="text file named .pt")
    marker = d / "PWNED_MARKER"
    buf = io.BytesIO()
    pickle.dump({"model": _Evil(marker)}, buf, protocol=2)
    add("ckpt_pickle_code_legacy", False, "refused", data=buf.getvalue(), marker=marker,
        note="legacy pickle whose __reduce__ calls os.system('touch marker')")
    p = d / "ckpt_pickle_code_zip.pt"
    torch.save({"model": _Evil(marker)}, p)  # torch's zip format, same payload
    kinds.append(Kind("ckpt_pickle_code_zip", p, "checkpoint", False, "refused",
                      "torch.save zip file carrying the same payload", {"marker": marker}))
    add("ckpt_raw_state_dict_other_arch", False, "not a goingdeeper checkpoint|format",
        obj={"conv.weight": torch.zeros(2, 3, 3, 3), "fc.weight": torch.zeros(4, 8)},
        note="a tiny foreign state dict")
    add("ckpt_other_arch_our_format", False, "architecture",
        obj={"format": "goingdeeper/1", "arch": "resnet50", "variant": "paper", "num_classes": 2,
             "class_names": ["a", "b"], "preprocessing": {}, "model_config": {}, "config": {}, "model": {}},
        note="our format, arch resnet50")
    add("ckpt_future_format", False, "format", obj={"format": "goingdeeper/99", "arch": "googlenet"})
    add("ckpt_list", False, "not a goingdeeper checkpoint|format", obj=[1, 2, 3], note="a pickled list")
    if valid_checkpoint is not None:
        data = Path(valid_checkpoint).read_bytes()
        add("ckpt_truncated", False, "not a readable|truncated", data=data[: len(data) // 3],
            note="first third of a real region-classifier checkpoint")
        add("ckpt_truncated_tail", False, "not a readable|truncated", data=data[:-200],
            note="a real checkpoint less its last 200 bytes")
    return kinds


def build_corpus(root: str | os.PathLike, *, valid_checkpoint: Path | None = None) -> dict[str, Kind]:
    """Write every kind under ``root``; return ``{name: Kind}``."""
    root = Path(root)
    kinds = [*make_images(root), *make_coco(root), *make_xml(root), *make_checkpoints(root, valid_checkpoint)]
    names = [k.name for k in kinds]
    assert len(names) == len(set(names)), "duplicate kind names"
    return {k.name: k for k in kinds}


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "corpus")
    for kind in build_corpus(out).values():
        print(f"{kind.name:32s} {kind.what:10s} {'valid' if kind.valid else 'invalid':8s} {kind.path}")
