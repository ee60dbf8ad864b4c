"""Summary arithmetic: hook-counted mult-adds and parameters against closed forms, Table 1 and torchvision."""

from __future__ import annotations

import logging

import pytest
import torchvision

from backbone.cli import main as backbone_main
from backbone.googlenet import INCEPTION_WIDTHS
from backbone.weights import googlenet
from backbone.summary import TABLE1, format_mult_adds, format_params, format_summary, summarize




@pytest.fixture()
def restore_logging():
    """The CLI's logging set-up binds a handler to the captured stderr; drop it after the test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="module")
def paper():
    return summarize(googlenet(variant="paper"), 224)


@pytest.fixture(scope="module")
def tv():
    return summarize(googlenet(variant="torchvision"), 224)


def _row(summary, name):
    (row,) = [r for r in summary.rows if r.name == name]
    return row


def _inception_weights(widths, k5=5):
    """Weights (no biases) of one inception block from its Table 1 widths."""
    cin, c1, r3, c3, r5, c5, pp = widths
    return cin * c1 + cin * r3 + r3 * c3 * 9 + cin * r5 + r5 * c5 * k5 * k5 + cin * pp


def test_inception_3a_and_3b_mult_adds(paper):
    assert _row(paper, "inception (3a)").mult_adds == 128_049_152  # 163,328 weights x 28 x 28
    assert _row(paper, "inception (3b)").mult_adds == 304_267_264
    assert format_mult_adds(128_049_152) == "128M" and format_mult_adds(304_267_264) == "304M"


def test_every_row_matches_closed_form(paper):
    side = {"3": 28, "4": 14, "5": 7}
    for name, widths in INCEPTION_WIDTHS.items():
        row = _row(paper, f"inception ({name[-2:]})")
        weights = _inception_weights(widths)
        biases = sum(widths[1:])
        assert row.params == weights + biases
        assert row.mult_adds == weights * side[name[-2]] ** 2
    conv1 = _row(paper, "conv 7x7/2")
    assert conv1.params == 7 * 7 * 3 * 64 + 64 and conv1.mult_adds == 7 * 7 * 3 * 64 * 112 * 112
    conv3 = _row(paper, "conv 3x3/1 (1x1 reduce)")
    assert conv3.mult_adds == (64 * 64 + 3 * 3 * 64 * 192) * 56 * 56
    assert format_params(64 * 64 + 3 * 3 * 64 * 192) == "112K"  # Table 1 counts K = 1024
    assert _row(paper, "linear").mult_adds == 1024 * 1000


def test_output_shapes_are_table_1(paper):
    for row in paper.rows:
        h, w, c = row.paper.output
        assert row.output in ((c, h, w), (c,)), row.name  # (c,) after flattening, for dropout and linear


def test_totals_without_aux_heads(paper, tv):
    assert paper.total_params == 6_998_552  # 6.98M weights + 17K biases; Table 1's rows sum to 6.8M
    side = {"3": 28, "4": 14, "5": 7}
    closed_form = (7 * 7 * 3 * 64 * 112 * 112 + (64 * 64 + 9 * 64 * 192) * 56 * 56 + 1024 * 1000
                   + sum(_inception_weights(w) * side[n[-2]] ** 2 for n, w in INCEPTION_WIDTHS.items()))
    assert paper.total_mult_adds == closed_form == 1_582_671_872  # 1.58G; Table 1's rows sum to 1.50G
    assert abs(paper.total_mult_adds / 1.5e9 - 1) < 0.06
    assert sum(r.paper.mult_adds_m or 0 for r in paper.rows) == 1502  # the paper's own rows: ~1.5G
    assert round(sum(r.paper.params_k or 0 for r in paper.rows)) == 6798  # ... and ~6.8M parameters
    meta = torchvision.models.GoogLeNet_Weights.IMAGENET1K_V1.meta  # an independent count
    assert tv.total_params == meta["num_params"] == 6_624_904
    assert round(tv.total_mult_adds / 1e9, 3) == meta["_ops"] == 1.498
    assert [r.name for r in paper.aux_rows] == ["aux1 (training only)", "aux2 (training only)"]
    assert all(r.params > 3_000_000 for r in paper.aux_rows)


def test_where_table_1_disagrees_with_its_widths(paper):
    """Mult-adds agree to the printed precision on every row but conv1 and 5a (see the README)."""
    off = []
    for row in paper.rows:
        if row.paper.mult_adds_m is not None and abs(row.mult_adds / 1e6 - row.paper.mult_adds_m) >= 1:
            off.append(row.name)
    assert off == ["conv 7x7/2", "inception (5a)"]
    assert round(_row(paper, "inception (5a)").mult_adds / 1e6, 1) == 51.1  # Table 1: 54M


def test_summary_table_and_cli(paper, capsys, restore_logging):
    text = format_summary(paper)
    assert "inception (3a)" in text and "128M" in text and "1,582,937,344" not in text
    assert "6,998,552 parameters" in text
    assert backbone_main(["summary", "--input-size", "64"]) == 0
    out = capsys.readouterr().out
    assert "input 3 x 64 x 64" in out and "inception (5b)" in out and "1024 x 2 x 2" in out
    assert backbone_main(["summary", "--input-size", "8"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("backbone: error:") and "--input-size 8" in err and "\n" not in err


def test_table1_data_covers_every_module():
    model = googlenet(variant="paper")
    covered = {m for _, names, _ in TABLE1 for m in names}
    assert covered | {"aux1", "aux2"} == set(dict(model.named_children()))
