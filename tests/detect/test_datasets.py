"""Data-set readers: COCO JSON and VOC/ILSVRC XML into DetectionDataset, and their errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from backbone.errors import InputError
from detect.datasets import ILSVRC_DET200, read_coco, read_dataset, read_synsets, read_voc_xml


def tiny_coco() -> dict:
    """Two images (one without objects), categories with gaps, one crowd box."""
    return {
        "images": [{"id": 7, "file_name": "a.jpg", "width": 100, "height": 50},
                   {"id": 3, "file_name": "b.jpg", "width": 40, "height": 40}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 18, "bbox": [10, 5, 20, 10], "iscrowd": 0, "area": 200},
            {"id": 2, "image_id": 7, "category_id": 1, "bbox": [0, 0, 5, 5], "iscrowd": 1, "area": 25},
        ],
        "categories": [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}, {"id": 90, "name": "brush"}],
    }


def write(tmp_path: Path, obj: object, name: str = "ann.json") -> Path:
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p


def test_read_coco_tiny(tmp_path: Path) -> None:
    ds = read_coco(write(tmp_path, tiny_coco()), tmp_path / "imgs")
    assert ds.kind == "coco" and ds.class_names == ["person", "dog", "brush"] and ds.category_ids == [1, 18, 90]
    assert [r.image_id for r in ds.records] == [7, 3]
    a, b = ds.records
    assert a.file == (tmp_path / "imgs" / "a.jpg").resolve() and (a.width, a.height) == (100, 50)
    assert torch.equal(a.boxes, torch.tensor([[10.0, 5, 30, 15], [0, 0, 5, 5]]))
    assert a.boxes.dtype == torch.float32 and a.labels.tolist() == [2, 1] and a.ignore.tolist() == [False, True]
    assert b.boxes.shape == (0, 4) and b.labels.dtype == torch.int64 and b.ignore.dtype == torch.bool


def test_read_coco_clips_and_drops_degenerate_boxes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = tiny_coco()
    data["annotations"] += [
        {"id": 3, "image_id": 3, "category_id": 1, "bbox": [30, 30, 20, 20]},   # clipped to 30..40
        {"id": 4, "image_id": 3, "category_id": 1, "bbox": [10, 10, 0, 5]},     # zero width: dropped
        {"id": 5, "image_id": 3, "category_id": 1, "bbox": [50, 50, 5, 5]},     # outside: dropped
    ]
    with caplog.at_level(logging.WARNING):
        ds = read_coco(write(tmp_path, data))
    assert torch.equal(ds.records[1].boxes, torch.tensor([[30.0, 30, 40, 40]]))
    assert "2 boxes of zero size or outside" in caplog.text


@pytest.mark.parametrize("mutate, problem", [
    (lambda d: "{not json", "not valid JSON"),
    (lambda d: [1, 2], "expected a JSON object"),
    (lambda d: {k: v for k, v in d.items() if k != "categories"}, "no 'categories' field"),
    (lambda d: {**d, "images": d["images"] + [d["images"][0]]}, "duplicate image id 7"),
    (lambda d: {**d, "annotations": d["annotations"] + [{**d["annotations"][0]}]}, "duplicate annotation id 1"),
    (lambda d: {**d, "annotations": [{**d["annotations"][0], "image_id": 99}]}, "unknown image id 99"),
    (lambda d: {**d, "annotations": [{**d["annotations"][0], "category_id": 2}]}, "unknown category id 2"),
    (lambda d: {**d, "annotations": [{**d["annotations"][0], "bbox": [1, 2, 3]}]}, "expected [x, y, w, h]"),
    (lambda d: {**d, "annotations": [{"id": 1, "image_id": 7, "bbox": [1, 2, 3, 4]}]}, "no 'category_id'"),
    (lambda d: {**d, "images": [{"id": 7, "file_name": "a.jpg", "width": 0, "height": 5}]}, "expected positive"),
])
def test_read_coco_errors_are_one_line(tmp_path: Path, mutate, problem: str) -> None:
    path = write(tmp_path, mutate(tiny_coco()))
    with pytest.raises(InputError) as err:
        read_coco(path)
    assert problem in str(err.value) and str(err.value).startswith(str(path.resolve()))
    assert "\n" not in str(err.value)


def test_read_coco_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_dataset(tmp_path / "nope.json")


def test_read_coco128(coco128: dict[str, Path]) -> None:
    ds = read_dataset(coco128["annotations"], coco128["images"])
    raw = json.loads(coco128["annotations"].read_text())
    assert len(ds) == 128 and ds.num_classes == 80 and ds.category_ids == sorted(c["id"] for c in raw["categories"])
    assert sum(len(r.boxes) for r in ds.records) == len(raw["annotations"])  # no degenerate boxes there
    assert all(r.file.exists() for r in ds.records)
    first = raw["annotations"][0]
    rec = next(r for r in ds.records if r.image_id == first["image_id"])
    x, y, w, h = first["bbox"]
    assert any(torch.allclose(b, torch.tensor([x, y, x + w, y + h], dtype=torch.float32)) for b in rec.boxes)
    assert ds.class_names[ds.category_ids.index(first["category_id"])] == \
        next(c["name"] for c in raw["categories"] if c["id"] == first["category_id"])


# ------------------------------------------------------------------------------------------ VOC / ILSVRC
def xml(name: str, objects: list[tuple[str, tuple[int, int, int, int]]], size: tuple[int, int] | None = (50, 40),
        difficult: bool = False) -> str:
    size_xml = "" if size is None else f"<size><width>{size[0]}</width><height>{size[1]}</height></size>"
    objs = "".join(
        f"<object><name>{n}</name><difficult>{int(difficult)}</difficult><bndbox><xmin>{b[0]}</xmin>"
        f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for n, b in objects)
    return f"<annotation><filename>{name}</filename>{size_xml}{objs}</annotation>"


def ilsvrc_tree(tmp_path: Path) -> Path:
    ann = tmp_path / "Annotations"
    ann.mkdir()
    (ann / "val_1.xml").write_text(xml("val_1", [("n02691156", (1, 1, 10, 20)), ("n02672831", (5, 6, 50, 40))]))
    (ann / "val_2.xml").write_text(xml("val_2", []))
    (tmp_path / "val.txt").write_text("val_1 1\nval_2 2\n")
    return ann


def test_shipped_synsets_match_team_data(synsets: dict[str, Path]) -> None:
    assert ILSVRC_DET200.read_text() == synsets["det200"].read_text()
    wnids, names = read_synsets()
    assert len(wnids) == 200 and wnids[0] == "n02672831" and names[:2] == ["accordion", "airplane"]


def test_read_ilsvrc_xml_converts_one_based_inclusive(tmp_path: Path) -> None:
    ann = ilsvrc_tree(tmp_path)
    ds = read_voc_xml(ann, tmp_path / "imgs", image_set=tmp_path / "val.txt")
    assert ds.kind == "ilsvrc" and len(ds.class_names) == 200 and ds.category_ids[1] == "n02691156"
    assert ds.image_index == {"val_1": 1, "val_2": 2}
    r = ds.records[0]
    assert r.image_id == "val_1" and r.file == (tmp_path / "imgs" / "val_1.JPEG").resolve()
    assert torch.equal(r.boxes, torch.tensor([[0.0, 0, 10, 20], [4, 5, 50, 40]]))  # x1-1, y1-1, x2, y2
    assert r.labels.tolist() == [2, 1] and not r.ignore.any()
    assert ds.records[1].boxes.shape == (0, 4)
    assert read_dataset(ann).kind == "ilsvrc"  # detected from the wnid names, no image set: sorted XMLs


def test_read_voc_xml_difficult_and_class_list(tmp_path: Path) -> None:
    ann = tmp_path / "ann"
    ann.mkdir()
    (ann / "000001.xml").write_text(xml("000001", [("dog", (10, 10, 20, 20))], difficult=True))
    ds = read_dataset(ann)
    assert ds.kind == "voc" and ds.class_names[ds.records[0].labels[0] - 1] == "dog"
    assert ds.records[0].ignore.tolist() == [True] and ds.image_index == {}


@pytest.mark.parametrize("content, problem", [
    (xml("x", [("n02691156", (1, 1, 5, 5))], size=None), "no <size> element"),
    (xml("x", [("n99999999", (1, 1, 5, 5))]), "not one of the 200 classes"),
    ("<annotation><size><width>5</width><height>5</height></size><object><name>n02691156</name></object>"
     "</annotation>", "has no <bndbox>"),
    ("<annotation><size><width>5</width></size></annotation>", "has no <height>"),
    ("<annotation>", "not valid XML"),
])
def test_read_ilsvrc_xml_errors_name_the_file(tmp_path: Path, content: str, problem: str) -> None:
    ann = tmp_path / "ann"
    ann.mkdir()
    (ann / "bad.xml").write_text(content)
    with pytest.raises(InputError) as err:
        read_voc_xml(ann, kind="ilsvrc")
    assert str(err.value).startswith(str((ann / "bad.xml").resolve())) and problem in str(err.value)


def test_read_voc_xml_image_set_lists_missing_file(tmp_path: Path) -> None:
    ann = ilsvrc_tree(tmp_path)
    (tmp_path / "val.txt").write_text("val_1 1\nval_3 3\n")
    with pytest.raises(InputError, match="val_3.xml: no such annotation file"):
        read_voc_xml(ann, image_set=tmp_path / "val.txt")


def test_image_set_labels_are_not_indices(tmp_path: Path) -> None:
    ann = ilsvrc_tree(tmp_path)
    (tmp_path / "train_1.txt").write_text("val_1 1\nval_2 -1\n")  # devkit train lists: name and 1/0/-1 label
    assert read_voc_xml(ann, image_set=tmp_path / "train_1.txt").image_index == {}
