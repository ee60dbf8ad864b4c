"""Our checkpoint files: one ``torch.save``d dict that holds everything to rebuild the model from the file.

Layout (``format`` ``"goingdeeper/1"``)::

    {"format": "goingdeeper/1", "arch": "googlenet", "variant": "paper" | "torchvision",
     "num_classes": int, "class_names": [str, ...], "preprocessing": Preprocessing.to_dict(),
     "model_config": GoogLeNetConfig.to_dict(), "config": {... the caller's run config ...},
     "model": state_dict, ...extra}

Only plain types and tensors, so :func:`load_checkpoint` reads it with ``torch.load(weights_only=True)``,
which refuses pickles that carry code. Files are written atomically (temp file + rename).
"""

from __future__ import annotations

import logging
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from backbone.errors import InputError
from backbone.files import atomic_path
from backbone.googlenet import GoogLeNet, GoogLeNetConfig
from backbone.preprocess import Preprocessing

log = logging.getLogger(__name__)

FORMAT = "goingdeeper/1"
ARCH = "googlenet"
RESERVED_KEYS = ("format", "arch", "variant", "num_classes", "class_names", "preprocessing", "model_config",
                 "config", "model")


def save_checkpoint(path: str | os.PathLike, model: GoogLeNet, *, class_names: list[str],
                    preprocessing: Preprocessing, config: dict[str, Any],
                    extra: dict[str, Any] | None = None) -> None:
    """Write ``model`` and what rebuilds it to ``path`` atomically (see the module docstring).

    ``config`` and ``extra`` must hold plain types (numbers, strings, lists, dicts) or tensors, so that
    the file loads with ``weights_only=True``; ``extra`` may not reuse a reserved key.
    Raises ValueError for any of these, or when ``class_names`` does not match ``model.num_classes``.
    """
    if len(class_names) != model.num_classes:
        raise ValueError(f"{len(class_names)} class names for a model with {model.num_classes} classes")
    clash = sorted(set(extra or {}) & set(RESERVED_KEYS))
    if clash:
        raise ValueError(f"extra may not set reserved checkpoint keys {clash}")
    _check_plain(config, "config")
    _check_plain(extra or {}, "extra")
    obj: dict[str, Any] = {
        "format": FORMAT,
        "arch": ARCH,
        "variant": model.variant,
        "num_classes": model.num_classes,
        "class_names": [str(c) for c in class_names],
        "preprocessing": preprocessing.to_dict(),
        "model_config": model.config.to_dict(),
        "config": dict(config),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **(extra or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    log.info("saved checkpoint %s", path)


_PLAIN = (str, int, float, bool, type(None), torch.Tensor)


def _check_plain(obj: Any, where: str) -> None:
    """Refuse values that ``torch.load(weights_only=True)`` would refuse later (a Path, a dataclass, ...)."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, (str, int)):
                raise ValueError(f"{where}: key {key!r} is not a string or int")
            _check_plain(value, f"{where}.{key}")
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            _check_plain(value, f"{where}[{i}]")
    elif not isinstance(obj, _PLAIN):
        raise ValueError(f"{where} is a {type(obj).__name__}; checkpoints hold plain types only "
                         "(str, int, float, bool, None, list, dict, tensor) so that they load with "
                         "weights_only=True — convert it (e.g. str(path), dataclasses.asdict(cfg))")


def read_torch_file(path: str | os.PathLike) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with one-line InputErrors.

    Raises InputError for a missing file, a folder, a truncated or corrupt file, and a pickle that
    carries code (``weights_only`` refuses it).
    """
    p = Path(path)
    if not p.exists():
        raise InputError(p, "no such file")
    if p.is_dir():
        raise InputError(p, "is a folder, expected a checkpoint file")
    if p.stat().st_size == 0:
        raise InputError(p, "empty file, not a checkpoint")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # weights_only names the callable or class it would not import ("Unsupported global: GLOBAL
        # print ...", or for a blocked module "unsupported GLOBAL posix.system whose module posix is
        # blocked"); any other unpickling failure (e.g. "Unsupported operand") is a damaged file.
        text = str(err).lower()
        if any(s in text for s in ("unsupported global", "allowed global", "unsupported class")):
            raise InputError(p, "refused: not a plain-tensor checkpoint (it carries code or objects "
                                "that torch.load(weights_only=True) will not run)") from None
        raise InputError(p, "not a readable checkpoint (truncated or corrupt, or not a PyTorch file)") from None
    except PermissionError:
        raise InputError(p, "permission denied") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError, IndexError,
            AttributeError, TypeError, UnicodeDecodeError):
        raise InputError(p, "not a readable checkpoint (truncated or corrupt, or not a PyTorch file)") from None


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read one of our checkpoints (``format`` ``"goingdeeper/1"``), safely (``weights_only=True``).

    Raises:
        InputError: one line, for a missing, truncated, corrupt or code-carrying file, or one that is
            not in our format (e.g. a raw state dict: pass it as ``googlenet(weights=path)`` instead).
    """
    obj = read_torch_file(path)
    check_checkpoint(obj, path)
    return obj


def is_checkpoint(obj: Any) -> bool:
    """True for a dict in our format (as opposed to, e.g., a raw state dict)."""
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def check_checkpoint(obj: Any, path: str | os.PathLike | None) -> None:
    """Raise InputError (naming ``path``) unless ``obj`` is a complete checkpoint of ours."""
    if not isinstance(obj, dict) or "format" not in obj:
        raise InputError(path, f"not a goingdeeper checkpoint (no 'format' key; expected {FORMAT!r})")
    if obj["format"] != FORMAT:
        raise InputError(path, f"checkpoint format {obj['format']!r} not supported (expected {FORMAT!r})")
    if obj.get("arch") != ARCH:
        raise InputError(path, f"checkpoint architecture {obj.get('arch')!r}, expected {ARCH!r}")
    missing = [k for k in RESERVED_KEYS if k not in obj]
    if missing:
        raise InputError(path, f"incomplete checkpoint, missing {', '.join(missing)}")
    if not isinstance(obj["model"], dict):
        raise InputError(path, "checkpoint 'model' is not a state dict")


def model_from_checkpoint(ckpt: dict[str, Any] | str | os.PathLike, *, expect_variant: str | None = None,
                          expect_num_classes: int | None = None) -> tuple[GoogLeNet, dict[str, Any]]:
    """Rebuild the model a checkpoint describes and load its weights (evaluation mode, CPU).

    Args:
        ckpt: a checkpoint dict from :func:`load_checkpoint`, or a path to one.
        expect_variant / expect_num_classes: refuse a checkpoint that does not match (InputError).
    Returns:
        ``(model, ckpt)``.
    """
    path = None
    if not isinstance(ckpt, dict):
        path = ckpt
        ckpt = load_checkpoint(ckpt)
    else:
        check_checkpoint(ckpt, None)
    if expect_variant is not None and ckpt["variant"] != expect_variant:
        raise InputError(path, f"checkpoint holds the {ckpt['variant']!r} GoogLeNet variant, "
                               f"expected {expect_variant!r}")
    if expect_num_classes is not None and ckpt["num_classes"] != expect_num_classes:
        raise InputError(path, f"checkpoint has {ckpt['num_classes']} classes, expected {expect_num_classes}")
    try:
        config = GoogLeNetConfig.from_dict(ckpt["model_config"])
    except (TypeError, ValueError) as err:
        raise InputError(path, f"bad model_config in checkpoint ({err})") from None
    model = GoogLeNet(config, init_weights=False)
    load_state_dict_strict(model, ckpt["model"], path)
    return model.eval(), ckpt


def load_state_dict_strict(model: GoogLeNet, state: dict[str, Any], path: str | os.PathLike | None) -> None:
    """``model.load_state_dict(state)`` with mismatches turned into one InputError line."""
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatch
        first = str(err).split("\n\t")[1] if "\n\t" in str(err) else str(err)
        raise InputError(path, f"weights do not fit the {model.variant} GoogLeNet: {first}") from None
    problems = []
    if result.missing_keys:
        problems.append(f"{len(result.missing_keys)} missing (e.g. {result.missing_keys[0]})")
    if result.unexpected_keys:
        problems.append(f"{len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[0]})")
    if problems:
        raise InputError(path, f"weights do not fit the {model.variant} GoogLeNet: "
                               f"{'; '.join(problems)} parameters")
