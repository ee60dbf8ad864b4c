"""`detect run` inputs and outputs (issue 12 parts 2-4, issue 13 items 1, 5, 9): globs, list files, URLs from
a local HTTP server, --classes, --save-txt, the display vs keep thresholds, the start line, option errors
before any model is loaded, outputs refused before any work, and --workers capped at the cores."""

from __future__ import annotations

import functools
import http.server
import json
import threading
from pathlib import Path

import pytest

import detect.pipeline
from detect.cli import main
from tests.detect.test_run_streaming import FAST, checkpoint, small_photos  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    small_photos(root / "a", 2)
    (root / "a" / "sub").mkdir()
    small_photos(root / "a" / "sub", 1)[0].rename(root / "a" / "sub" / "000000000009.png")
    (root / "a" / "notes.txt").write_text("not an image, never picked by a glob")
    return root


@pytest.fixture()
def no_model(monkeypatch):
    """Fail the test if a model is loaded (checks that must come before it)."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(detect.pipeline, "load_detector", refuse)


def _names(out: str) -> list[str]:
    return [line.split()[0] for line in out.splitlines() if line and not line.startswith(" ")]


def test_quoted_globs(checkpoint, photos, capsys, monkeypatch):
    monkeypatch.chdir(photos)
    assert main(["run", "a/*.jpg", "--weights", str(checkpoint), *FAST]) == 0
    assert _names(capsys.readouterr().out) == ["a/000000000001.jpg", "a/000000000002.jpg"]
    assert main(["run", "a/**/*.png", "--weights", str(checkpoint), *FAST, "--quiet"]) == 0
    assert _names(capsys.readouterr().out) == ["a/sub/000000000009.png"]
    assert main(["run", "a/*", "--weights", str(checkpoint), *FAST, "--quiet"]) == 0  # images only
    assert _names(capsys.readouterr().out) == ["a/000000000001.jpg", "a/000000000002.jpg"]
    assert main(["run", "a/*.gif", "--weights", str(checkpoint), *FAST]) == 2
    assert "a/*.gif: no image file matches this pattern" in capsys.readouterr().err


def test_list_files(checkpoint, photos, tmp_path, capsys):
    listing = tmp_path / "list.txt"
    listing.write_text(f"# val images\n{photos / 'a' / '000000000002.jpg'}\n\n{photos / 'a' / 'sub'}\n")
    assert main(["run", f"@{listing}", "--weights", str(checkpoint), *FAST, "--quiet"]) == 0
    assert [Path(n).name for n in _names(capsys.readouterr().out)] == ["000000000002.jpg", "000000000009.png"]
    relative = photos / "rel.txt"  # relative lines are taken from the list's folder
    relative.write_text("a/000000000001.jpg\n")
    assert main(["run", "--source", str(relative), "--weights", str(checkpoint), *FAST, "--quiet"]) == 0
    assert _names(capsys.readouterr().out) == [str(photos / "a" / "000000000001.jpg")]
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    assert main(["run", f"@{empty}", "--weights", str(checkpoint), *FAST]) == 2
    assert "empty.txt: list file names no images" in capsys.readouterr().err


@pytest.fixture()
def server(photos):
    handler = functools.partial(_QuietHandler, directory=str(photos / "a"))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_url_from_a_local_server(checkpoint, server, tmp_path, capsys):
    url = f"{server}/000000000002.jpg"
    out = tmp_path / "dets.json"
    rc = main(["run", url, f"{server}/missing.jpg", "--weights", str(checkpoint), *FAST, "--out", str(out),
               "--save-txt", str(tmp_path / "txt")])
    captured = capsys.readouterr()
    assert rc == 1  # one of two skipped
    assert _names(captured.out) == [url]  # the URL as given, not folded to http:/
    assert f"detect: error: {server}/missing.jpg: download failed (HTTP 404" in captured.err
    rows = json.loads(out.read_text())
    assert rows and {r["file_name"] for r in rows} == {"000000000002.jpg"} and {r["image_id"] for r in rows} == {2}
    assert (tmp_path / "txt" / "000000000002.txt").exists()
    assert not list(tmp_path.glob("**/detect-url-*")), "downloads are temporary"


def test_url_unreachable_is_one_line(checkpoint, tmp_path, capsys):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["run", f"http://127.0.0.1:{port}/x.jpg", "--weights", str(checkpoint), *FAST]) == 2
    err = [l for l in capsys.readouterr().err.splitlines() if l.startswith("detect: error")]
    assert len(err) == 1 and "cannot download" in err[0] and "offline?" in err[0]


def test_url_size_limit(photos, monkeypatch, server):
    from backbone import inputs
    from backbone.errors import InputError

    with pytest.raises(InputError, match="above the 0 MB limit|larger than"):
        with inputs.local_file(f"{server}/000000000001.jpg", max_bytes=100):
            pass


def test_classes_by_name_and_id(checkpoint, photos, tmp_path, capsys):
    out = tmp_path / "d.json"
    base = ["run", str(photos / "a"), "--weights", str(checkpoint), *FAST, "--out", str(out)]
    assert main([*base, "--classes", "CAT"]) == 0
    rows = json.loads(out.read_text())
    assert rows and {r["category_id"] for r in rows} == {17}
    assert "keeping cat" in capsys.readouterr().err
    assert main([*base, "--classes", "90", "person"]) == 0
    assert {r["category_id"] for r in json.loads(out.read_text())} <= {1, 90}
    assert main([*base, "--classes", "dog"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--classes 'dog': not a class name or category id of this model (person, cat, rocket)" in err


def test_save_txt_and_thresholds(checkpoint, photos, tmp_path, capsys):
    out = tmp_path / "d.json"
    assert main(["run", str(photos / "a"), "--weights", str(checkpoint), "--fast", "--device", "cpu",
                 "--out", str(out), "--save-txt", str(tmp_path / "txt"), "--show-threshold", "0.45"]) == 0
    table = capsys.readouterr().out
    rows = json.loads(out.read_text())
    # --out keeps everything above the keep threshold (0.01), the display threshold only hides table rows
    assert min(r["score"] for r in rows) < 0.45 and all(r["score"] >= 0.01 for r in rows)
    shown = [l for l in table.splitlines() if l.startswith("  ") and not l.strip().startswith("class")]
    assert shown and all(float(l.split()[-5]) >= 0.45 for l in shown)
    assert "below 0.45)" in table
    lines = (tmp_path / "txt" / "000000000001.txt").read_text().splitlines()
    mine = [r for r in rows if r["image_id"] == 1]
    assert len(lines) == len(mine) > 0
    for line, row in zip(lines, mine):
        cat, x1, y1, x2, y2, score = line.split()
        x, y, w, h = row["bbox"]
        assert int(cat) == row["category_id"] and abs(float(score) - row["score"]) < 1e-5
        assert [round(float(v), 1) for v in (x1, y1, x2, y2)] == pytest.approx([x, y, x + w, y + h], abs=0.1)
    assert main(["run", str(photos / "a"), "--weights", str(checkpoint), *FAST, "--score-threshold", "0.45",
                 "--quiet"]) == 0  # the old name still works


def test_start_line_says_what_runs(checkpoint, photos, capsys):
    assert main(["run", str(photos / "a" / "000000000001.jpg"), "--weights", str(checkpoint), "--fast",
                 "--device", "auto", "--quiet"]) == 0
    (line,) = [l for l in capsys.readouterr().err.splitlines() if l.startswith("detect run:")]
    assert "1 image |" in line and "rc.pt, 3 classes" in line and "fast mode" in line
    assert "device cpu (" in line  # auto on a machine without usable CUDA says why
    assert "no --multibox-weights" in line and "--weights for" not in line
    from detect.classifier import cpu_has_native_bf16

    assert ("fast mode, bf16" if cpu_has_native_bf16() else "fast mode, fp32") in line


def test_fp32_flag_turns_autocast_off(checkpoint, photos, tmp_path, capsys):
    out = tmp_path / "d.json"
    assert main(["run", str(photos / "a" / "000000000001.jpg"), "--weights", str(checkpoint), "--fast",
                 "--device", "cpu", "--quiet", "--fp32", "--out", str(out)]) == 0
    assert json.loads(out.with_suffix(".run.json").read_text())["config"]["amp"] is False
    assert "fast mode, fp32" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--proposals", "multibox", "--fast"], "--proposals multibox needs --multibox-weights"),
    (["--resume"], "--resume needs --out"),
    (["--workers", "-1"], "--workers must be >= 0"),
    (["--show-threshold", "2"], "--show-threshold must be in [0, 1]"),
    (["--keep-threshold", "-1"], "--keep-threshold must be in [0, 1]"),
    (["--multibox-weights", "nothere.pt"], "nothere.pt: no such file"),
])
def test_option_errors_before_any_model(checkpoint, photos, capsys, no_model, extra, message):
    assert main(["run", str(photos / "a"), "--weights", str(checkpoint), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("target", ["weights", "multibox", "image", "folder", "sys", "devnull", "readonly"])
def test_unwritable_or_input_output_refused_before_work(checkpoint, photos, tmp_path, capsys, no_model, target):
    import os

    ckpt = tmp_path / "rc.pt"
    ckpt.write_bytes(checkpoint.read_bytes())
    mb = tmp_path / "mb.pt"
    mb.write_bytes(b"multibox stand-in")
    image = photos / "a" / "000000000001.jpg"
    readonly = tmp_path / "ro"
    readonly.mkdir()
    readonly.chmod(0o500)
    out = {"weights": ckpt, "multibox": mb, "image": image, "folder": tmp_path, "sys": Path("/sys/d.json"),
           "devnull": Path("/dev/null"), "readonly": readonly / "d.json"}[target]
    if target == "readonly" and os.access(readonly, os.W_OK):
        pytest.skip("running as a user who can write anywhere (root)")
    before = {p: p.read_bytes() for p in (ckpt, mb, image)}
    rc = main(["run", str(image), "--weights", str(ckpt), "--multibox-weights", str(mb), "--fast",
               "--device", "cpu", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("detect: error: "), err
    assert {p: p.read_bytes() for p in before} == before


def test_save_dirs_refused_before_work(checkpoint, photos, tmp_path, capsys, no_model):
    afile = tmp_path / "file"
    afile.write_text("x")
    assert main(["run", str(photos / "a"), "--weights", str(checkpoint), *FAST, "--save-txt", str(afile)]) == 2
    assert "--save-txt: not a folder" in capsys.readouterr().err


def test_workers_capped_at_the_cores(monkeypatch, caplog):
    from detect import runloop as run

    monkeypatch.setattr(run, "_cores", lambda: 2)
    with caplog.at_level("INFO"):
        assert run.capped_workers(16) == 2
    assert "--workers 16 capped at 2" in caplog.text
    assert run.capped_workers(1) == 1
