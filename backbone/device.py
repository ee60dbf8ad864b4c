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


def describe_device(requested: str | torch.device | None, resolved: torch.device) -> str:
    """One phrase for a start-up line: the device, and why it is the CPU when ``--device auto`` found no
    usable CUDA (no CUDA build of torch, a GPU torch cannot use, or no GPU)."""
    if resolved.type == "cuda":
        index = resolved.index if resolved.index is not None else torch.cuda.current_device()
        return f"{resolved} ({torch.cuda.get_device_name(index)})"
    if resolved.type != "cpu" or requested not in (None, "auto"):
        return str(resolved)
    if torch.version.cuda is None:
        import os

        gpu_present = os.path.exists("/dev/nvidia0") or os.path.exists("/proc/driver/nvidia/version")
        why = ("a GPU is present but this torch " + torch.__version__ + " is a CPU-only build"
               if gpu_present else "this torch is a CPU-only build and no GPU was found")
    else:
        why = f"no CUDA device is usable by torch {torch.__version__} (CUDA {torch.version.cuda})"
    return f"cpu ({why})"
