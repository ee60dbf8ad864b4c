"""Hostile ground truth (issue 13): COCO JSON and ILSVRC/VOC XML that would exhaust memory, hang on a pipe,
crash with a traceback, be silently misread, or reach outside the image folder.

Through ``detect.datasets.read_dataset`` (every command that reads annotations uses it) and, for a few,
``detect proposals --annotations`` as a user runs it. Files are generated here; large ones are sparse.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from backbone.errors import InputError
from backbone.safeio import load_json
from detect.cli import main as detect_main
from detect.datasets import read_dataset

from .conftest import assert_refused, run_cli
from .make_corpus import _coco_base, _xml

REPO = Path(__file__).resolve().parents[2]


def _coco(tmp_path: Path, edit, name: str = "gt.json") -> Path:
    """``_coco_base()`` changed by ``edit(data)`` (which may return raw text instead), written to ``name``."""
    data = _coco_base()
    raw = edit(data)
    path = tmp_path / name
    path.write_text(raw if isinstance(raw, str) else json.dumps(data))
    return path


def _set(*keys_and_value):
    """An edit that sets ``data[k1][k2]...[kn] = value``."""
    *keys, value = keys_and_value

    def edit(data):
        target = data
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
    return edit


COCO_REFUSED = {  # name -> (edit, words the one line must hold)
    "nested_100000": (lambda d: '{"images": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deep"),
    "nested_100": (lambda d: '{"images": [], "annotations": [], "categories": [], "x": ' + "[" * 100
                   + "]" * 100 + "}", "nested too deep"),
    "int_400_digits": (lambda d: json.dumps(_coco_base()).replace('"width": 64', '"width": ' + "9" * 400), "digits"),
    "int_5000_digits": (lambda d: json.dumps(_coco_base()).replace('"id": 1,', '"id": ' + "7" * 5000 + ",", 1),
                        "digits"),
    "list_as_image_id": (_set("images", 0, "id", [1, 2]), "integer or a string"),
    "dict_as_category_id": (_set("categories", 0, "id", {"a": 1}), "integer or a string"),
    "list_as_annotation_image_id": (_set("annotations", 0, "image_id", [1]), "unknown image id"),
    "dict_as_annotation_category_id": (_set("annotations", 0, "category_id", {"x": 1}), "unknown category id"),
    "bool_as_image_id": (_set("images", 0, "id", True), "integer or a string"),
    "bool_as_width": (_set("images", 0, "width", True), "size"),
    "float_as_height": (_set("images", 0, "height", 48.0), "size"),
    "huge_width": (_set("images", 0, "width", 10**15), "size"),
    "mixed_image_id_types": (lambda d: d["images"].append({"id": "b", "file_name": "b.png", "width": 9,
                                                           "height": 9}), "mix"),
    "mixed_category_id_types": (lambda d: d["categories"].__setitem__(1, {"id": "two", "name": "other"}), "mix"),
    "iscrowd_string": (_set("annotations", 0, "iscrowd", "0"), "iscrowd"),
    "iscrowd_bool": (_set("annotations", 0, "iscrowd", True), "iscrowd"),
    "iscrowd_2": (_set("annotations", 0, "iscrowd", 2), "iscrowd"),
    "file_name_number": (_set("images", 0, "file_name", 12), "file_name"),
    "file_name_empty": (_set("images", 0, "file_name", ""), "file_name"),
    "file_name_dotdot": (_set("images", 0, "file_name", "../../etc/passwd"), "leaves the image folder"),
    "file_name_absolute": (_set("images", 0, "file_name", "/etc/passwd"), "absolute"),
    "file_name_300_bytes": (_set("images", 0, "file_name", "é" * 150 + ".png"), "255 bytes"),
    "category_name_list": (_set("categories", 0, "name", ["thing"]), "name"),
    "category_name_ansi": (_set("categories", 0, "name", "thing\x1b[31m\nerror: forged"), "control characters"),
    "file_name_newline": (_set("images", 0, "file_name", "a.png\nerror: forged"), "control characters"),
    "huge_list_as_id": (_set("images", 0, "id", list(range(100_000))), "integer or a string"),
}


@pytest.mark.parametrize("name", sorted(COCO_REFUSED))
def test_coco_refused_with_one_line(tmp_path, name):
    edit, words = COCO_REFUSED[name]
    path = _coco(tmp_path, edit)
    with pytest.raises(InputError) as err:
        read_dataset(path)
    line = str(err.value)
    assert "\n" not in line and path.name in line and words in line, line
    assert len(line) < 400, f"{len(line)} characters"  # a 100,000-element id is not quoted whole


def test_valid_odd_coco_values_read_correctly(tmp_path):
    """Strict is not stricter than COCO: string ids, iscrowd 1, file names in sub-folders; and with
    ``allow_absolute_paths`` an absolute file_name is taken as it is."""
    def edit(data):
        data["images"][0].update(id="img-1", file_name="sub/dir/img.png")
        data["annotations"][0].update(image_id="img-1", iscrowd=1)
        data["annotations"].append({"id": 2, "image_id": "img-1", "category_id": 2, "bbox": [1, 1, 5, 5]})
    dataset = read_dataset(_coco(tmp_path, edit))
    (record,) = dataset.records
    assert record.image_id == "img-1" and record.file == tmp_path / "sub" / "dir" / "img.png"
    assert record.ignore.tolist() == [True, False] and record.labels.tolist() == [1, 2]
    absolute = _coco(tmp_path, _set("images", 0, "file_name", "/data/img.png"), name="abs.json")
    (record,) = read_dataset(absolute, allow_absolute_paths=True).records
    assert record.file == Path("/data/img.png")


def test_string_category_ids_are_one_kind(tmp_path):
    def edit(data):
        data["categories"] = [{"id": "b", "name": "B"}, {"id": "a", "name": "A"}]
        data["annotations"][0]["category_id"] = "b"
    dataset = read_dataset(_coco(tmp_path, edit))
    assert dataset.category_ids == ["a", "b"] and dataset.records[0].labels.tolist() == [2]


def test_json_limits_in_the_loader(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("[" * 65 + "]" * 65)
    with pytest.raises(InputError, match="nested too deep"):
        load_json(path)
    path.write_text("[" * 64 + "]" * 64)
    assert load_json(path) is not None
    path.write_text('{"a": NaN, "b": -12345678901234567890}')  # NaN parses (callers check), 20 digits is fine
    assert load_json(path)["b"] == -12345678901234567890
    with open(tmp_path / "big.json", "wb") as f:  # sparse: no disk or memory used
        f.truncate((1 << 30) + 1)
    with pytest.raises(InputError, match="MB limit"):
        load_json(tmp_path / "big.json")


# ------------------------------------------------------------------------------- pipes and devices
def test_fifo_and_devices_as_ground_truth_do_not_hang(tmp_path):
    fifo = tmp_path / "gt.json"
    os.mkfifo(fifo)
    for path, words in ((fifo, "pipe"), (Path("/dev/zero"), "device")):
        with pytest.raises(InputError, match=words):
            read_dataset(path)
    folder = tmp_path / "xml"
    folder.mkdir()
    os.mkfifo(folder / "a.xml")
    with pytest.raises(InputError, match="pipe"):
        read_dataset(folder)


# ----------------------------------------------------------------------------------------------- XML
def _xml_folder(tmp_path: Path, text: str | None = None, size: int | None = None) -> Path:
    folder = tmp_path / "ann"
    folder.mkdir()
    xml = folder / "a.xml"
    if size is not None:
        with open(xml, "wb") as f:  # sparse
            f.truncate(size)
    else:
        xml.write_text(text)
    return folder


@pytest.mark.parametrize("text,words", [
    (_xml("", size="<size><width>1e20</width><height>48</height></size>"), "width"),
    (_xml("", size="<size><width>inf</width><height>48</height></size>"), "width"),
    (_xml("<object><name>n02691156</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>1e300</xmax><ymax>9</ymax>"
          "</bndbox></object>"), "xmax"),
])
def test_xml_numbers_out_of_range_are_one_line(tmp_path, text, words):
    with pytest.raises(InputError) as err:
        read_dataset(_xml_folder(tmp_path, text), kind="ilsvrc")
    assert words in str(err.value) and "a.xml" in str(err.value)


def test_xml_of_200_mb_is_refused_unread(tmp_path):
    with pytest.raises(InputError, match="MB limit"):
        read_dataset(_xml_folder(tmp_path, size=200 * 1024 * 1024), kind="ilsvrc")


def test_image_set_names_stay_inside_the_folder(tmp_path):
    folder = _xml_folder(tmp_path, _xml(""))
    image_set = tmp_path / "val.txt"
    image_set.write_text("../../etc/passwd 1\n")
    with pytest.raises(InputError, match="leaves the annotation folder"):
        read_dataset(folder, image_set=image_set, kind="ilsvrc")


# ---------------------------------------------------------------------------------------- through CLI
def test_cli_lines_for_hostile_ground_truth(tmp_path):
    """`detect proposals --annotations`: one escaped line for a forged file_name, a FIFO, a long name."""
    forged = _coco(tmp_path, _set("images", 0, "file_name", "x.png\ndetect: error: forged\x1b[2J"), name="f.json")
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    long_name = tmp_path / ("g" * 300 + ".json")
    for path in (forged, fifo, long_name):
        out = tmp_path / "p.json"
        outcome = run_cli(detect_main, ["proposals", "--annotations", str(path), "--out", str(out)])
        line = assert_refused(outcome, "detect", outputs=[out])
        assert "\x1b" not in outcome.err and "forged" not in outcome.err.replace(line, ""), outcome.err


_PEAKS = r"""
import resource, sys
from backbone.errors import InputError
from detect.datasets import read_dataset
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for arg in sys.argv[1:]:
    try:
        read_dataset(arg)
        print("STEP", arg, "accepted", flush=True)
    except InputError as err:
        print("STEP", arg, "refused", flush=True)
print("GROWN", (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)
print("PEAK", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def test_data_bombs_peak_memory(tmp_path):
    """A 200 MB XML (5.1 GB before), a 100,000-deep JSON, a 1 GB+ JSON and /dev/zero (MemoryError before) in
    one child: all refused, RSS grows by < 100 MB, the child stays under 2 GB."""
    deep = _coco(tmp_path, COCO_REFUSED["nested_100000"][0], name="deep.json")
    xml_dir = _xml_folder(tmp_path, size=200 * 1024 * 1024)
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(3 << 30)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", _PEAKS, str(xml_dir), str(deep), str(big), "/dev/zero"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    steps = [ln.split() for ln in proc.stdout.splitlines() if ln.startswith("STEP")]
    assert [s[2] for s in steps] == ["refused"] * 4, proc.stdout + proc.stderr
    assert float(proc.stdout.split("GROWN")[1].split()[0]) < 100, proc.stdout
    assert float(proc.stdout.split("PEAK")[1]) < 2048, proc.stdout
