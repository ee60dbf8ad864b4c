"""Hostile images (issue 13): decompression bombs in every accepted format and in refused ones, pipes and
devices, long thin images, names that would forge terminal lines.

Every file is generated here (no binaries committed). Bombs are only ever refused from their headers, so
the peak-memory test (one child process, each step measured) stays far below the machine's memory.
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backbone import images as images_module
from backbone.errors import InputError, escape
from backbone.images import FORMATS, read_image, sniff_format
from detect.cli import main as detect_main

from .conftest import assert_refused, run_cli
from .make_corpus import _photo, _uniform_png

REPO = Path(__file__).resolve().parents[2]


def _radiance_hdr(path: Path, width: int, height: int) -> None:
    """A Radiance HDR header announcing ``width x height`` (+ 100 KB of zeros): OpenCV decodes it through a
    temporary file and allocated 1.2 GB (4.8 GB at 25 MB of real data) before failing."""
    path.write_bytes(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n" + f"-Y {height} +X {width}\n".encode()
                     + b"\x00" * 100_000)


def _jpeg_with_size(width: int, height: int) -> bytes:
    """A small real JPEG whose SOF0 marker is patched to announce ``width x height``."""
    buf = io.BytesIO()
    Image.fromarray(_photo()).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5: sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _bmp_header(width: int, height: int) -> bytes:
    """A 24-bit BMP header announcing ``width x height`` with 1 KB of pixels."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54 + 1024, 0, 0, 54) + info + b"\x00" * 1024


def _encoded(fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_photo()).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


# ----------------------------------------------------------------------------------- refused by header
BOMBS = {  # name -> (file name, bytes maker, words the line must hold)
    "hdr_20000_named_png": ("hdr.png", lambda p: _radiance_hdr(p, 20000, 20000), "Radiance HDR"),
    "jpeg_65000_sof": ("huge.jpg", lambda p: p.write_bytes(_jpeg_with_size(65000, 65000)), "65000x65000"),
    "bmp_30000": ("huge.bmp", lambda p: p.write_bytes(_bmp_header(30000, 30000)), "30000x30000"),
    "png_30000": ("huge.png", lambda p: _uniform_png(p, 30000, 30000), "30000x30000"),
    "jpeg2000": ("photo.jp2", lambda p: p.write_bytes(_encoded("JPEG2000")), "JPEG 2000"),
    "pfm_named_jpg": ("pfm.jpg", lambda p: p.write_bytes(b"PF\n30000 30000\n-1.0\n" + b"\x00" * 4096), "PFM"),
    "pam_p7": ("x.ppm", lambda p: p.write_bytes(b"P7\nWIDTH 30000\nHEIGHT 30000\nDEPTH 3\nMAXVAL 255\n"
                                                 b"ENDHDR\n" + b"\x00" * 64), "PAM"),
}


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_bombs_and_refused_formats_are_one_line(tmp_path, name):
    filename, make, words = BOMBS[name]
    path = tmp_path / filename
    make(path)
    with pytest.raises(InputError) as err:
        read_image(path)
    line = str(err.value)
    assert "\n" not in line and filename in line and words in line, line
    assert "limit" in line or "not accepted" in line, line


@pytest.mark.parametrize("fmt,kwargs", [("GIF", {}), ("WEBP", {"lossless": True}), ("TIFF", {}), ("BMP", {}),
                                        ("PPM", {}), ("PNG", {})])
def test_every_accepted_format_decodes_correctly(tmp_path, fmt, kwargs):
    path = tmp_path / f"x.{fmt.lower()}"
    path.write_bytes(_encoded(fmt, **kwargs))
    assert sniff_format(path.read_bytes()[:16]) in FORMATS
    img = read_image(path)
    assert img.shape == (48, 64, 3) and img.dtype == np.uint8
    tolerance = 40 if fmt == "GIF" else 0  # GIF: 256-colour palette
    assert np.abs(img.astype(int) - _photo().astype(int)).mean() <= max(tolerance, 0.01), fmt


def test_file_above_the_byte_limit_is_refused_before_reading(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * (images_module.max_file_bytes(10) + 1))
    with pytest.raises(InputError, match="MB limit"):
        read_image(path, max_pixels=10)


def test_truncated_files_of_each_format_print_no_library_warnings(tmp_path, capfd):
    """OpenCV/libpng/libtiff/libwebp messages go straight to fd 2: none may add a line beside ours."""
    for fmt, kwargs in (("PNG", {}), ("TIFF", {"compression": "tiff_deflate"}), ("WEBP", {}), ("GIF", {}),
                        ("JPEG", {})):
        data = _encoded(fmt, **kwargs)
        path = tmp_path / f"cut.{fmt.lower()}"
        path.write_bytes(data[: len(data) * 2 // 3])
        with pytest.raises(InputError):
            read_image(path)
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == "", captured.err


# ------------------------------------------------------------------------------------ pipes, devices
def test_dev_zero_is_refused_after_its_first_bytes():
    with pytest.raises(InputError, match="not a readable image"):
        read_image("/dev/zero")


def test_fifo_without_writer_does_not_hang(tmp_path, monkeypatch):
    monkeypatch.setattr(images_module, "PIPE_TIMEOUT_S", 0.3)
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="empty|no data"):
        read_image(fifo)


def test_fifo_whose_writer_is_silent_times_out(tmp_path, monkeypatch):
    monkeypatch.setattr(images_module, "PIPE_TIMEOUT_S", 0.3)
    fifo = tmp_path / "silent.png"
    os.mkfifo(fifo)
    done = threading.Event()

    def writer():  # opens the pipe and writes nothing until the reader has given up
        with open(fifo, "wb"):
            done.wait(10)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        with pytest.raises(InputError, match="no data"):
            read_image(fifo)
    finally:
        done.set()
        _release_writer(fifo, thread)


def _release_writer(fifo: Path, thread: threading.Thread) -> None:
    """A writer still blocked in open() returns once some reader opens the FIFO."""
    if thread.is_alive():
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        thread.join(5)
        os.close(fd)


def test_image_through_a_pipe_is_read(tmp_path):
    fifo = tmp_path / "photo.png"
    os.mkfifo(fifo)
    data = _encoded("PNG")
    thread = threading.Thread(target=lambda: fifo.write_bytes(data), daemon=True)
    thread.start()
    try:
        img = read_image(fifo)
    finally:
        _release_writer(fifo, thread)
    assert (img == _photo()).all()


# ---------------------------------------------------------------------------------------- names
def test_names_with_control_characters_cannot_forge_lines(tmp_path):
    name = "a\nprog: error: forged\x1b[31m.jpg"
    (tmp_path / name).write_bytes(b"not an image at all")
    with pytest.raises(InputError) as err:
        read_image(tmp_path / name)
    line = str(err.value)
    assert "\n" not in line and "\x1b" not in line and escape(name) in line
    outcome = run_cli(detect_main, ["proposals", str(tmp_path / name), "--out", str(tmp_path / "p.json")])
    refused = assert_refused(outcome, "detect")
    assert "\x1b" not in outcome.err and "\\x1b[31m" in refused


def test_name_longer_than_255_bytes_is_one_line(tmp_path):
    path = tmp_path / ("x" * 300 + ".jpg")
    with pytest.raises(InputError, match="too long|cannot read"):
        read_image(path)


def test_name_longer_than_255_bytes_on_the_command_line(tmp_path):
    path = tmp_path / ("x" * 300 + ".jpg")
    for argv in (["proposals", str(path), "--out", str(tmp_path / "p.json")], ["run", str(path), "--fast"]):
        line = assert_refused(run_cli(detect_main, argv), "detect")
        assert "too long" in line.lower(), line


# ------------------------------------------------------------------------------------- long and thin
def test_selective_search_bounds_the_working_image_whatever_the_config():
    from proposals.selective_search import MAX_WORK_PIXELS, MAX_WORK_SIDE, SelectiveSearchConfig, working_size

    for config in (SelectiveSearchConfig(), SelectiveSearchConfig(width=None), SelectiveSearchConfig(upscale=False)):
        for h, w in ((200000, 500), (500, 200000), (1, 10**8), (30000, 30000)):
            wh, ww = working_size(h, w, config)
            assert max(wh, ww) <= MAX_WORK_SIDE and wh * ww <= MAX_WORK_PIXELS * 1.01, (config, h, w, wh, ww)
    assert working_size(480, 640, SelectiveSearchConfig(width=None)) == (480, 640)  # small images kept


_PEAKS = r"""
import glob, os, resource, sys
import numpy as np
from backbone.errors import InputError
from backbone.images import read_image
from detect.cli import build_parser, main as detect_main
from proposals.selective_search import SelectiveSearchConfig, selective_search
build_parser()
def grown(base):
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for path in sys.argv[1:-2]:
    try:
        read_image(path)
        print("STEP", path, "accepted", grown(base), flush=True)
    except InputError as err:
        print("STEP", path, "refused", grown(base), str(err), flush=True)
code = detect_main(["run", sys.argv[1], "--fast", "--device", "cpu", "--weights", sys.argv[-2], "--out", sys.argv[-1]])
print("STEP detect-run", code, grown(base), flush=True)
tall = np.zeros((200000, 100, 3), np.uint8)
tall[::50] = 255
props = selective_search(tall, SelectiveSearchConfig(width=None))
print("STEP tall-ss", len(props), grown(base), flush=True)
print("PEAK", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def test_bombs_peak_memory_and_no_temporary_files(tmp_path, tiny_checkpoint):
    """In one child process: HDR (named .png), 30000x30000 PNG through /dev/stdin, a 65000x65000 JPEG and a
    30000x30000 BMP are refused from their headers (each step grows RSS by < 100 MB; before: 1.2-6.7 GB),
    `detect run` on the HDR file is one line, selective search on a 200000 x 100 image with ``width=None``
    works on at most 1 MP; the whole child stays under 2 GB and leaves nothing in its temp folder."""
    files = {}
    for name in ("hdr_20000_named_png", "jpeg_65000_sof", "bmp_30000"):
        filename, make, _ = BOMBS[name]
        files[name] = tmp_path / filename
        make(files[name])
    stdin_png = tmp_path / "stdin.png"
    _uniform_png(stdin_png, 30000, 30000)
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "TMPDIR": str(temp)}
    out = tmp_path / "d.json"
    with open(stdin_png, "rb") as stdin:
        proc = subprocess.run([sys.executable, "-c", _PEAKS, str(files["hdr_20000_named_png"]), "/dev/stdin",
                               str(files["jpeg_65000_sof"]), str(files["bmp_30000"]), str(tiny_checkpoint), str(out)],
                              stdin=stdin, capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    steps = [ln.split() for ln in proc.stdout.splitlines() if ln.startswith("STEP")]
    assert len(steps) == 6, proc.stdout + proc.stderr
    for step in steps[:4]:
        assert step[2] == "refused" and float(step[3]) < 100, step
    assert steps[4][2] == "2" and float(steps[4][3]) < 300, steps[4]
    errors = [ln for ln in proc.stderr.splitlines() if ": error: " in ln]
    assert len(errors) == 1 and "Radiance HDR" in errors[0] and "Traceback" not in proc.stderr, proc.stderr
    assert float(steps[5][3]) < 600, steps[5]
    peak = float(proc.stdout.split("PEAK")[1])
    assert peak < 2048, f"child peak {peak:.0f} MB"
    assert not out.exists()
    assert list(temp.iterdir()) == [], "a temporary file was left behind"
