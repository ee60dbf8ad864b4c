"""Ground truth and results kinds of the corpus: COCO JSON, COCO results, ILSVRC/VOC XML.

Through the reader (``detect.datasets.read_dataset``), ``detect eval`` (both as ground truth and as results)
and the commands that read annotations (``detect proposals --annotations``, ``detect train``,
``detect multibox train``): broken files are one line naming the file with exit code 2, degenerate boxes
are dropped with a warning and evaluation still gives pycocotools' numbers.
"""

from __future__ import annotations

import json

import pytest

from backbone.errors import InputError
from detect.cli import main as detect_main
from detect.datasets import read_dataset

from .conftest import assert_refused, digest, run_cli

COCO_INVALID = ["coco_not_json", "coco_binary", "coco_list", "coco_no_images", "coco_no_annotations",
                "coco_no_categories", "coco_duplicate_image_id", "coco_duplicate_annotation_id",
                "coco_duplicate_category_id", "coco_unknown_category", "coco_unknown_image", "coco_bbox_not_numbers",
                "coco_zero_image_size", "coco_image_no_file_name"]
COCO_DEGENERATE = ["coco_box_negative_size", "coco_box_zero_size", "coco_box_outside_image",
                   "coco_box_partly_outside"]
RESULTS_INVALID = ["results_unknown_category", "results_unknown_image", "results_nan_score", "results_inf_bbox",
                   "results_negative_box", "results_missing_score", "results_not_list", "results_not_json"]
XML_INVALID = ["xml_no_size", "xml_no_name", "xml_no_bndbox", "xml_no_xmax", "xml_text_coord", "xml_unknown_wnid",
               "xml_not_xml", "xml_empty_file"]


def _file(kind):
    return kind.meta.get("file", kind.path)


@pytest.mark.parametrize("name", COCO_INVALID + XML_INVALID)
def test_reader_refuses_broken_ground_truth(corpus, name):
    kind = corpus[name]
    with pytest.raises(InputError) as err:
        read_dataset(kind.path)
    line = str(err.value)
    assert "\n" not in line and _file(kind).name in line
    assert any(p.lower() in line.lower() for p in kind.problem.split("|")), line


@pytest.mark.parametrize("name", COCO_DEGENERATE)
def test_reader_drops_or_clips_degenerate_boxes(corpus, name, caplog):
    kind = corpus[name]
    dataset = read_dataset(kind.path)
    (record,) = dataset.records
    assert len(record.boxes) == kind.meta["boxes_kept"]
    assert (record.boxes[:, 2] > record.boxes[:, 0]).all() and (record.boxes[:, 3] > record.boxes[:, 1]).all()
    assert (record.boxes[:, 0::2] <= record.width).all() and (record.boxes[:, 1::2] <= record.height).all()
    if "clipped" in kind.meta:
        assert record.boxes[-1].tolist() == kind.meta["clipped"]
    else:
        assert "dropped" in caplog.text


@pytest.mark.parametrize("name", COCO_INVALID + XML_INVALID)
def test_detect_eval_refuses_broken_ground_truth(corpus, tmp_path, name):
    kind = corpus[name]
    results = kind.meta.get("results", corpus["results_valid"].path)
    inputs = [kind.path, results]
    before = digest(inputs)
    out = tmp_path / "ev"
    outcome = run_cli(detect_main, ["eval", "--annotations", str(kind.path), "--results", str(results),
                                    "--out", str(out)])
    assert_refused(outcome, "detect", kind, names=_file(kind), outputs=[out / "summary.json"])
    assert outcome.out == ""
    assert digest(inputs) == before


@pytest.mark.parametrize("name", RESULTS_INVALID)
def test_detect_eval_refuses_broken_results(corpus, tmp_path, name):
    kind = corpus[name]
    gt = corpus["coco_valid"].path
    before = digest([kind.path, gt])
    out = tmp_path / "ev"
    outcome = run_cli(detect_main, ["eval", "--annotations", str(gt), "--results", str(kind.path), "--out", str(out)])
    assert_refused(outcome, "detect", kind, outputs=[out / "summary.json"])
    assert digest([kind.path, gt]) == before


@pytest.mark.parametrize("name", ["results_valid", "results_empty_list"])
def test_detect_eval_valid_results(corpus, tmp_path, name):
    out = tmp_path / "ev"
    outcome = run_cli(detect_main, ["eval", "--annotations", str(corpus["coco_valid"].path), "--results",
                                    str(corpus[name].path), "--out", str(out)])
    assert outcome.code == 0, outcome.err
    summary = json.loads((out / "summary.json").read_text())
    ap = summary["metrics"]["AP"]
    assert ap == pytest.approx(1.0 if name == "results_valid" else 0.0)


def test_detect_eval_xml_ground_truth(corpus, tmp_path):
    kind = corpus["xml_valid"]
    out = tmp_path / "ev"
    outcome = run_cli(detect_main, ["eval", "--annotations", str(kind.path), "--results", str(kind.meta["results"]),
                                    "--out", str(out)])
    assert outcome.code == 0, outcome.err
    summary = json.loads((out / "summary.json").read_text())
    assert "mAP" in json.dumps(summary)


@pytest.mark.parametrize("name", COCO_DEGENERATE)
def test_detect_eval_with_degenerate_ground_truth_boxes(corpus, tmp_path, name):
    """Degenerate ground-truth boxes (and annotations without COCO's optional 'area'/'iscrowd') must not crash
    the evaluation; the perfect detection of the one real box still scores AP 1 where that box is the only
    one pycocotools counts."""
    out = tmp_path / "ev"
    outcome = run_cli(detect_main, ["eval", "--annotations", str(corpus[name].path), "--results",
                                    str(corpus["results_valid"].path), "--out", str(out)])
    assert outcome.code == 0, outcome.err
    assert "Traceback" not in outcome.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["per_class_AP"]["thing"] == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["coco_not_json", "coco_duplicate_image_id", "coco_unknown_category"])
def test_annotation_readers_of_other_commands(corpus, tmp_path, name):
    """`detect proposals --annotations`, `detect train` and `detect multibox train` read ground truth with
    the same reader: the same one line, and no output folder content."""
    kind = corpus[name]
    images = kind.path.parent
    cases = [
        (["proposals", "--annotations", str(kind.path), "--images", str(images), "--out", str(tmp_path / "p.json")],
         [tmp_path / "p.json"]),
        (["train", "--annotations", str(kind.path), "--images", str(images), "--weights", "none", "--crop-size", "64",
          "--out", str(tmp_path / "rc")], [tmp_path / "rc" / "model.pt", tmp_path / "rc" / "last.pt"]),
        (["multibox", "train", "--annotations", str(kind.path), "--images", str(images), "--out",
          str(tmp_path / "mb")], [tmp_path / "mb" / "model.pt", tmp_path / "mb" / "last.pt"]),
    ]
    for argv, outputs in cases:
        outcome = run_cli(detect_main, argv)
        assert_refused(outcome, "detect", kind, outputs=outputs)


def test_detect_eval_mixed_image_id_types(tmp_path):
    """COCO image ids that mix numbers and strings: one rule for the file whoever reads it (issue 13: ids one
    kind per file) — `detect eval` refuses it in one line, as detect.datasets.read_coco does (it once kept
    the file's order in the evaluator while the data-set reader refused it)."""
    from PIL import Image

    gt = {"images": [{"id": "img-A", "file_name": "a.png", "width": 64, "height": 48},
                     {"id": 2, "file_name": "b.png", "width": 64, "height": 48}],
          "annotations": [{"id": 1, "image_id": "img-A", "category_id": 5, "bbox": [1, 1, 20, 20]},
                          {"id": 2, "image_id": 2, "category_id": 5, "bbox": [5, 5, 20, 20]}],
          "categories": [{"id": 5, "name": "thing"}]}
    results = [{"image_id": "img-A", "category_id": 5, "bbox": [1, 1, 20, 20], "score": 0.9},
               {"image_id": 2, "category_id": 5, "bbox": [5, 5, 20, 20], "score": 0.8}]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(results))
    for name in ("a.png", "b.png"):
        Image.new("RGB", (64, 48)).save(tmp_path / name)
    for extra in ([], ["--metric", "ilsvrc"]):  # the evaluator's own reader, and the data-set reader
        outcome = run_cli(detect_main, ["eval", "--annotations", str(tmp_path / "gt.json"), "--results",
                                        str(tmp_path / "res.json"), "--out", str(tmp_path / "ev"), *extra])
        line = assert_refused(outcome, "detect", names=tmp_path / "gt.json",
                              outputs=[tmp_path / "ev" / "summary.json"])
        assert "image ids mix integers and strings" in line


def test_proposal_cache_keeps_ids_that_differ_only_in_unsafe_characters(tmp_path):
    """XML ground truth names images by file name: 'a b' and 'a_b' are two images. Regression: their
    cache entries were both 'a_b.pt', so one image silently got the other's proposals."""
    from PIL import Image

    from proposals.cache import load_cached

    from .make_corpus import _photo

    folder = tmp_path / "xml"
    folder.mkdir()
    sizes = {"a b": (40, 60), "a_b": (90, 30)}
    for name, (h, w) in sizes.items():
        (folder / f"{name}.xml").write_text(
            f"<annotation><size><width>{w}</width><height>{h}</height></size><object><name>n02691156</name>"
            "<bndbox><xmin>2</xmin><ymin>2</ymin><xmax>20</xmax><ymax>20</ymax></bndbox></object></annotation>")
        Image.fromarray(_photo(h, w, seed=len(name) + w)).save(folder / f"{name}.JPEG")
    cache = tmp_path / "cache"
    outcome = run_cli(detect_main, ["proposals", "--annotations", str(folder), "--cache", str(cache),
                                    "--out", str(tmp_path / "p.json")])
    assert outcome.code == 0, outcome.err
    (entries,) = [d for d in cache.iterdir() if d.is_dir()]
    assert len(list(entries.glob("*.pt"))) == 2
    for name, (h, w) in sizes.items():
        boxes = load_cached(entries, name).boxes
        assert float(boxes[:, 2].max()) == w and float(boxes[:, 3].max()) == h, name  # the whole image is a box
