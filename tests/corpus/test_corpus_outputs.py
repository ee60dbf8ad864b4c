"""What the commands write: annotated copies for odd images and same-named inputs, and file modes."""

from __future__ import annotations

import json
import os
import stat

import pytest

from backbone.files import write_json
from backbone.images import read_image
from detect.cli import main as detect_main

from .conftest import digest, run_cli

VIS_KINDS = ["grayscale_png", "rgba_png", "gray16_png", "cmyk_jpg", "exif_rotated_jpg", "one_pixel", "one_by_5000",
             "non_ascii_space_path"]


def test_save_vis_for_odd_images_and_same_stems(corpus, tiny_checkpoint, tmp_path):
    """One annotated copy per input at the displayed size; inputs with one stem in several folders or with
    several suffixes do not overwrite each other's copies (regression: they were all written to <stem>.jpg)."""
    same = tmp_path / "same"
    for folder, kind in (("a", "grayscale_png"), ("b", "cmyk_jpg"), ("b", "rgba_png")):
        src = corpus[kind].path
        (same / folder).mkdir(parents=True, exist_ok=True)
        (same / folder / f"x{src.suffix}").write_bytes(src.read_bytes())
    paths = [corpus[k].path for k in VIS_KINDS]
    before = digest([*paths, same])
    vis, out = tmp_path / "vis", tmp_path / "d.json"
    outcome = run_cli(detect_main, ["run", *map(str, paths), str(same), "--weights", str(tiny_checkpoint), "--fast",
                                    "--workers", "0", "--device", "cpu", "--score-threshold", "0", "--quiet",
                                    "--save-vis", str(vis), "--out", str(out)])
    assert outcome.code == 0, outcome.err
    written = sorted(p.name for p in vis.iterdir())
    assert len(written) == len(paths) + 3, written
    assert {"x.jpg", "x_jpg.jpg", "x_png.jpg"} <= set(written)
    for kind in VIS_KINDS:
        copy = vis / f"{corpus[kind].path.stem}.jpg"
        assert read_image(copy).shape[:2] == tuple(corpus[kind].meta["size"]), kind
    assert len({r["image_id"] for r in json.loads(out.read_text())}) == len(paths) + 3
    assert digest([*paths, same]) == before


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_get_the_umask_mode(tmp_path, umask, mode):
    """Regression: atomic writes kept mkstemp's 0600, so results were unreadable to the rest of a team."""
    old = os.umask(umask)
    try:
        write_json(tmp_path / "x.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == mode
