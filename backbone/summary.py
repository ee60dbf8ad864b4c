"""Per-layer summary of a GoogLeNet beside Table 1 of the paper (arXiv 1409.4842, section 5).

Mult-adds are counted with forward hooks on every ``Conv2d`` and ``Linear``: for a convolution,
``output elements x in_channels / groups x kh x kw``; for a linear layer, ``out x in``. Pools, LRN,
ReLU and BatchNorm count no mult-adds (as in Table 1). Parameters are all of a layer's parameters
(weights, biases, BatchNorm scales and shifts). The auxiliary heads are listed apart and left out of
the totals: they exist only in training (as in Table 1, which omits them).

Table 1's figures are kept here as data (``TABLE1``), exactly as printed: parameters in K with
K = 1024 (e.g. conv 3x3: 4,096 + 110,592 = 114,688 = 112K) and mult-adds in M with M = 10^6
(inception 3a: 163,328 weights x 28 x 28 = 128.0M). Where the table disagrees with its own layer
widths, see the README ("Table 1 findings").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from backbone.googlenet import GoogLeNet


@dataclass(frozen=True)
class PaperRow:
    """One row of Table 1 as printed: output ``(H, W, C)``, params in K (1024), mult-adds in M (10^6)."""

    output: tuple[int, int, int]
    params_k: float | None
    mult_adds_m: float | None


#: Table 1 rows (name as printed) -> (our top-level modules that make the row, the paper's figures).
TABLE1: list[tuple[str, tuple[str, ...], PaperRow]] = [
    ("conv 7x7/2", ("conv1",), PaperRow((112, 112, 64), 2.7, 34)),
    ("max pool 3x3/2", ("maxpool1", "lrn1"), PaperRow((56, 56, 64), None, None)),
    ("conv 3x3/1 (1x1 reduce)", ("conv2", "conv3", "lrn2"), PaperRow((56, 56, 192), 112, 360)),
    ("max pool 3x3/2", ("maxpool2",), PaperRow((28, 28, 192), None, None)),
    ("inception (3a)", ("inception3a",), PaperRow((28, 28, 256), 159, 128)),
    ("inception (3b)", ("inception3b",), PaperRow((28, 28, 480), 380, 304)),
    ("max pool 3x3/2", ("maxpool3",), PaperRow((14, 14, 480), None, None)),
    ("inception (4a)", ("inception4a",), PaperRow((14, 14, 512), 364, 73)),
    ("inception (4b)", ("inception4b",), PaperRow((14, 14, 512), 437, 88)),
    ("inception (4c)", ("inception4c",), PaperRow((14, 14, 512), 463, 100)),
    ("inception (4d)", ("inception4d",), PaperRow((14, 14, 528), 580, 119)),
    ("inception (4e)", ("inception4e",), PaperRow((14, 14, 832), 840, 170)),
    ("max pool 3x3/2", ("maxpool4",), PaperRow((7, 7, 832), None, None)),
    ("inception (5a)", ("inception5a",), PaperRow((7, 7, 832), 1072, 54)),
    ("inception (5b)", ("inception5b",), PaperRow((7, 7, 1024), 1388, 71)),
    ("avg pool 7x7/1", ("avgpool",), PaperRow((1, 1, 1024), None, None)),
    ("dropout (40%)", ("dropout",), PaperRow((1, 1, 1024), None, None)),
    ("linear", ("fc",), PaperRow((1, 1, 1000), 1000, 1)),
]



@dataclass(frozen=True)
class LayerRow:
    """One summary row: ``output`` is ``(C, H, W)`` of the row's last module for a batch of one."""

    name: str
    modules: tuple[str, ...]
    output: tuple[int, ...]
    params: int
    mult_adds: int
    paper: PaperRow | None


@dataclass(frozen=True)
class Summary:
    """Rows of the main path, totals over them, and the auxiliary heads apart (training only)."""

    variant: str
    input_size: int
    rows: list[LayerRow]
    aux_rows: list[LayerRow]

    @property
    def total_params(self) -> int:
        return sum(r.params for r in self.rows)

    @property
    def total_mult_adds(self) -> int:
        return sum(r.mult_adds for r in self.rows)


def _macs(module: nn.Module, out: torch.Tensor) -> int:
    """Mult-adds of one Conv2d/Linear call for the first sample of the batch."""
    per_sample = out[0].numel()
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return per_sample * (module.in_channels // module.groups) * kh * kw
    return per_sample * module.in_features  # nn.Linear: out_features x in_features per sample


def summarize(model: GoogLeNet, input_size: int = 224) -> Summary:
    """Run one zero image of ``input_size`` x ``input_size`` through ``model`` and count per layer.

    The model is put in eval mode for the pass and restored afterwards; counts are per image.
    """
    top = dict(model.named_children())
    shapes: dict[str, tuple[int, ...]] = {}
    macs: dict[str, int] = {name: 0 for name in top}
    handles = []
    for name, child in top.items():
        handles.append(child.register_forward_hook(
            lambda m, i, o, name=name: shapes.__setitem__(name, tuple(o.shape[1:]))))
        for sub in child.modules():
            if isinstance(sub, (nn.Conv2d, nn.Linear)):
                handles.append(sub.register_forward_hook(
                    lambda m, i, o, name=name: macs.__setitem__(name, macs[name] + _macs(m, o))))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            device = next(model.parameters()).device
            model.forward_train(torch.zeros(1, 3, input_size, input_size, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    def params(names: tuple[str, ...]) -> int:
        return sum(p.numel() for n in names for p in top[n].parameters())

    rows = [LayerRow(label, names, shapes[names[-1] if names[-1] in shapes else names[0]], params(names),
                     sum(macs[n] for n in names), paper) for label, names, paper in TABLE1]
    aux_rows = [LayerRow(f"{n} (training only)", (n,), shapes[n], params((n,)), macs[n], None)
                for n in ("aux1", "aux2") if getattr(model, n) is not None]
    return Summary(model.variant, input_size, rows, aux_rows)


def _si(value: float, units: tuple[tuple[float, str], ...]) -> str:
    for scale, suffix in units:
        if value >= scale:
            v = value / scale
            return f"{v:.1f}{suffix}" if v < 100 else f"{v:.0f}{suffix}"
    return f"{value:.0f}"


def format_params(n: float) -> str:
    """Parameters in K = 1024 as in Table 1 (114,688 -> "112K"; 1,444,080 -> "1410K")."""
    return _si(n, ((1024.0, "K"),))


def format_mult_adds(n: float) -> str:
    """Mult-adds with M = 10^6 and G = 10^9 as in Table 1 (128,049,152 -> "128M")."""
    return _si(n, ((1e9, "G"), (1e6, "M"), (1e3, "K")))


def format_summary(summary: Summary) -> str:
    """A fixed-width text table: ours (output C x H x W, params, mult-adds) and Table 1's beside them."""
    head = (f"{'layer':<26}{'output':>16}{'params':>9}{'mult-adds':>11}   "
            f"{'Table 1 output':>15}{'params':>8}{'mult-adds':>10}")
    lines = [f"GoogLeNet ({summary.variant} variant), input 3 x {summary.input_size} x {summary.input_size}",
             head, "-" * len(head)]

    def line(r: LayerRow) -> str:
        out = " x ".join(str(v) for v in r.output)
        s = f"{r.name:<26}{out:>16}{format_params(r.params) if r.params else '':>9}"
        s += f"{format_mult_adds(r.mult_adds) if r.mult_adds else '':>11}"
        if r.paper is not None:
            h, w, c = r.paper.output
            pp = "" if r.paper.params_k is None else f"{r.paper.params_k:g}K"
            pm = "" if r.paper.mult_adds_m is None else f"{r.paper.mult_adds_m:g}M"
            s += f"   {f'{h}x{w}x{c}':>15}{pp:>8}{pm:>10}"
        return s

    lines += [line(r) for r in summary.rows]
    lines.append("-" * len(head))
    lines.append(f"total without aux heads: {summary.total_params:,} parameters "
                 f"({summary.total_params / 1e6:.2f}M), {summary.total_mult_adds / 1e9:.3f}G mult-adds; "
                 f"Table 1 / section 5: ~6.8M parameters, ~1.5G mult-adds")
    lines += [line(r) for r in summary.aux_rows]
    return "\n".join(lines)
