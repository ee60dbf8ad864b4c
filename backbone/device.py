"""Choosing the torch device from a ``--device`` option (one rule for training and inference)."""

from __future__ import annotations

import torch

from backbone.errors import InputError


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None -> CUDA when available, else CPU.

    Raises:
        InputError: a string torch does not know as a device, or a CUDA device that is not there.
    """
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise InputError(None, f"--device {device!r} is not a device (expected auto, cpu, cuda, cuda:1 ...)") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(None, f"--device {device}: no CUDA device is available; use --device cpu")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise InputError(None, f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
    return resolved
