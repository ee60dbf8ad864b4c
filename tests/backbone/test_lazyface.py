"""The lazy package faces (backbone/lazyface.py): names import on first use, submodules stay reachable as
attributes, and a public name that is also its module's name stays the function. Run in a fresh interpreter
so the import order is the one under test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys
import backbone, detect, proposals
assert "torch" not in sys.modules, "importing the package faces must not import torch"
import proposals.structures
import proposals.config, proposals.merge
assert proposals.config.MULTIBOX_TOP_K == 200 and proposals.merge.METHODS  # attributes set on the package
import backbone.googlenet, backbone.preprocess, detect.postprocess, proposals.selective_search
assert callable(backbone.googlenet) and backbone.googlenet.__name__ == "googlenet"  # the function, not the module
assert backbone.preprocess.__name__ == "preprocess" and detect.postprocess.__name__ == "postprocess"
assert proposals.selective_search.__name__ == "selective_search"
from detect import Detector, DetectorConfig
from proposals import Proposals
assert Detector.__module__ == "detect.pipeline" and Proposals.__module__ == "proposals.structures"
assert set(backbone.__all__) <= set(dir(backbone))
try:
    backbone.no_such_name
except AttributeError as err:
    assert "no_such_name" in str(err)
else:
    raise AssertionError("unknown names must raise AttributeError")
print("ok")
"""


def test_lazy_faces_import_on_first_use_and_keep_submodules_reachable():
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
