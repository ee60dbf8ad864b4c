"""Our checkpoint files: one ``torch.save``d dict that holds everything to rebuild the model from the file.

Layout (``format`` ``"goingdeeper/1"``)::

    {"format": "goingdeeper/1", "arch": "googlenet", "variant": "paper" | "torchvision",
     "num_classes": int, "class_names": [str, ...], "preprocessing": Preprocessing.to_dict(),
     "model_config": GoogLeNetConfig.to_dict(), "config": {... the caller's run config ...},
     "model": state_dict, ...extra}

Only plain types and tensors, so :func:`load_checkpoint` reads it with ``torch.load(weights_only=True)``,
which refuses pickles that carry code. Files are written atomically (temp file + rename).

Reading is bounded before anything is allocated from a file's values (issue 13): only a regular file is
opened (never a FIFO or device); a zip whose records inflate past twice the file's size is refused unread;
every loaded tensor must own its elements (a stride-0 view of a 2 KB storage would expand to gigabytes when
used) and be finite; ``model_config`` is checked for types, a class count up to :data:`MAX_CLASSES` and
agreement with the classifier's weight shape before a model is built from it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from backbone.errors import InputError, escape, has_control, short_repr
from backbone.files import atomic_path
from backbone.googlenet import AUX_HEADS, GoogLeNet, GoogLeNetConfig
from backbone.preprocess import Preprocessing

log = logging.getLogger(__name__)

FORMAT = "goingdeeper/1"
ARCH = "googlenet"
RESERVED_KEYS = ("format", "arch", "variant", "num_classes", "class_names", "preprocessing", "model_config",
                 "config", "model")
#: Most classes a checkpoint may declare (ImageNet-21k has 21,841); 500,000 took 6.9 GB before the refusal.
MAX_CLASSES = 100_000
#: Largest checkpoint file read, and most bytes its zip records may inflate to (GoogLeNet is ~50 MB).
MAX_CHECKPOINT_BYTES = 4 << 30


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
    from backbone.safeio import regular_file

    p = Path(path)
    st = regular_file(p, max_bytes=MAX_CHECKPOINT_BYTES, what="checkpoint file")
    if st.st_size == 0:
        raise InputError(p, "empty file, not a checkpoint")
    _check_zip_sizes(p, st.st_size)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
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
            AttributeError, TypeError, UnicodeDecodeError, OverflowError, MemoryError, RecursionError):
        raise InputError(p, "not a readable checkpoint (truncated or corrupt, or not a PyTorch file)") from None
    check_tensors(obj, p)
    return obj


def _check_zip_sizes(p: Path, size: int) -> None:
    """Refuse a zip (torch's format) whose records inflate past ``2 * size + 1 MiB``: torch writes them
    uncompressed, so only a crafted file (a 1 GB record deflated to a few KB) does that."""
    if not zipfile.is_zipfile(p):
        return  # legacy (non-zip) torch files: torch.load reports what is wrong
    try:
        with zipfile.ZipFile(p) as z:
            total = sum(info.file_size for info in z.infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return  # torch.load names it as a damaged file
    if total > min(2 * size + (1 << 20), MAX_CHECKPOINT_BYTES):
        raise InputError(p, f"refused: its records inflate to {total / 1e6:.0f} MB from a {size / 1e6:.1f} MB file "
                            "(a compressed checkpoint; torch writes them uncompressed)")


def check_tensors(obj: Any, path: str | os.PathLike | None, *, finite: bool = True) -> None:
    """Raise InputError (naming ``path``) for a tensor in ``obj`` (dicts and lists walked) that does not own
    its elements (stride 0 or overlapping strides: it would grow when copied) or, with ``finite``, holds
    NaN or infinity."""
    stack: list[tuple[str, Any]] = [("", obj)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, dict):
            stack.extend((f"{where}.{k}" if where else str(k), v) for k, v in item.items())
        elif isinstance(item, (list, tuple)):
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(item))
        elif isinstance(item, torch.Tensor):
            name = escape(short_repr(where, 60)) if where else "a tensor"
            if item.is_sparse or item.layout != torch.strided:
                raise InputError(path, f"tensor {name} is not a dense tensor")
            if item.numel() > 0:
                owned = item.untyped_storage().nbytes() - item.storage_offset() * item.element_size()
                if any(st == 0 for st, n in zip(item.stride(), item.shape) if n > 1) or \
                        item.numel() * item.element_size() > owned:
                    raise InputError(path, f"tensor {name} of shape {list(item.shape)} is a view with stride "
                                           f"{list(item.stride())} over {owned} bytes; not a saved tensor")
            if finite and item.is_floating_point() and not bool(torch.isfinite(item).all()):
                raise InputError(path, f"tensor {name} holds NaN or infinite values")


def checked_model_config(d: Any, state: Any, path: str | os.PathLike | None) -> GoogLeNetConfig:
    """``GoogLeNetConfig.from_dict(d)`` after checking types and sizes, and that ``num_classes`` agrees with
    the classifier weight in ``state`` (when present): nothing is built from unchecked numbers."""
    if not isinstance(d, dict):
        raise InputError(path, f"bad model_config in checkpoint (a {type(d).__name__}, expected a dict)")
    n = d.get("num_classes", 1000)
    if type(n) is not int or not 0 <= n <= MAX_CLASSES:
        raise InputError(path, f"bad model_config in checkpoint: num_classes {short_repr(n)}, expected an integer "
                               f"0..{MAX_CLASSES}")
    for key in ("aux_logits", "transform_input"):
        if key in d and d[key] is not None and type(d[key]) is not bool:
            raise InputError(path, f"bad model_config in checkpoint: {key} {short_repr(d[key])}, expected true/false")
    for key in ("dropout", "dropout_aux"):
        value = d.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not 0 <= value < 1):
            raise InputError(path, f"bad model_config in checkpoint: {key} {short_repr(value)}, expected 0 <= p < 1")
    if not isinstance(d.get("variant", "paper"), str):
        raise InputError(path, f"bad model_config in checkpoint: variant {short_repr(d.get('variant'))}")
    if isinstance(state, dict) and isinstance(state.get("fc.weight"), torch.Tensor) and n > 0:
        rows = state["fc.weight"].shape[0] if state["fc.weight"].ndim == 2 else -1
        if rows != n:
            raise InputError(path, f"model_config says {n} classes but the classifier weight fc.weight has shape "
                                   f"{list(state['fc.weight'].shape)}")
    try:
        return GoogLeNetConfig.from_dict(d)
    except (TypeError, ValueError) as err:
        raise InputError(path, f"bad model_config in checkpoint ({err})") from None


#: Largest ``resize`` / ``crop`` a checkpoint's preprocessing may ask for (the paper's largest test scale
#: is 352; 2048 leaves room while a batch of crops stays far from the machine's memory).
MAX_PREPROCESS_SIDE = 2048


def checked_preprocessing(d: Any, path: str | os.PathLike | None) -> Preprocessing:
    """``Preprocessing.from_dict(d)`` after checking types and sizes (one InputError line otherwise)."""
    if not isinstance(d, dict):
        raise InputError(path, f"bad preprocessing in checkpoint (a {type(d).__name__}, expected a dict)")
    for key in ("resize", "crop"):
        if key in d and (type(d[key]) is not int or not 1 <= d[key] <= MAX_PREPROCESS_SIDE):
            raise InputError(path, f"bad preprocessing in checkpoint: {key} {short_repr(d[key])}, expected an "
                                   f"integer 1..{MAX_PREPROCESS_SIDE}")
    for key in ("mean", "std"):
        value = d.get(key, (0.0, 0.0, 1.0))
        if not (isinstance(value, (list, tuple)) and len(value) == 3 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < 1e6 and v == v for v in value)):
            raise InputError(path, f"bad preprocessing in checkpoint: {key} {short_repr(value)}, expected 3 numbers")
    if "interpolation" in d and not isinstance(d["interpolation"], str):
        raise InputError(path, f"bad preprocessing in checkpoint: interpolation {short_repr(d['interpolation'])}")
    try:
        return Preprocessing.from_dict(d)
    except (TypeError, ValueError) as err:
        raise InputError(path, f"bad preprocessing in checkpoint ({err})") from None


def checked_names(names: Any, path: str | os.PathLike | None, what: str = "class_names") -> list[str]:
    """``names`` as a list of strings (at most :data:`MAX_CLASSES`), or one InputError line."""
    if not isinstance(names, (list, tuple)) or len(names) > MAX_CLASSES + 1 or \
            not all(isinstance(c, str) for c in names):
        raise InputError(path, f"checkpoint {what} must be a list of at most {MAX_CLASSES} strings")
    bad = next((c for c in names if has_control(c)), None)
    if bad is not None:
        raise InputError(path, f"checkpoint {what} holds a name with control characters: {escape(short_repr(bad))}")
    return list(names)


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
    checked_names(obj["class_names"], path)
    if type(obj["num_classes"]) is not int or obj["num_classes"] != len(obj["class_names"]):
        raise InputError(path, f"checkpoint num_classes {short_repr(obj['num_classes'])} does not match its "
                               f"{len(obj['class_names'])} class names")


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
    return model_from_file(ckpt, path).eval(), ckpt


def model_from_file(obj: Any, path: str | os.PathLike | None, *, variant: str | None = None,
                    num_classes: int | None = None, aux_logits: bool | None = None, dropout: float | None = None,
                    transform_input: bool | None = None) -> GoogLeNet:
    """The one way a model is rebuilt from a loaded weights file (training mode, CPU): ``obj`` is one of our
    checkpoints or a raw state dict in torchvision's layout (paper or torchvision variant, told apart by its
    BatchNorm keys; the ``{"state_dict": ...}`` wrapper is unwrapped). Used by :func:`model_from_checkpoint`
    and by :func:`backbone.weights.build_with_weights` (``googlenet(weights=...)``).

    Args:
        obj: the file's contents, from :func:`read_torch_file`; ``path`` names it in errors.
        variant: refuse weights of another variant; None: the file's.
        num_classes: None: the file's. A checkpoint of ours with another count is refused; a raw state dict
            loads its trunk and gets a fresh classifier.
        aux_logits: None: as the checkpoint says, and its weights must fit exactly; True/False: auxiliary
            heads the weights lack are freshly initialised, those the model lacks are dropped. A raw state
            dict needs True or False.
        dropout, transform_input: None: the file's (a checkpoint) or the variant's default (a state dict).
    Raises:
        InputError: one line, for a file that is neither, is inconsistent, or does not fit the request.
    """
    if is_checkpoint(obj):
        check_checkpoint(obj, path)
        saved = checked_model_config(obj["model_config"], obj["model"], path)
        if saved.num_classes != obj["num_classes"]:
            raise InputError(path, f"model_config says {saved.num_classes} classes, the checkpoint "
                                   f"{obj['num_classes']}")
        if variant is not None and saved.variant != variant:
            raise InputError(path, f"checkpoint holds the {saved.variant!r} GoogLeNet variant, not {variant!r}")
        if num_classes is not None and saved.num_classes != num_classes:
            raise InputError(path, f"checkpoint has {saved.num_classes} classes, not {num_classes}; "
                                   "rebuild it with model_from_checkpoint and reset_classifier to change them")
        config = dataclasses.replace(
            saved, aux_logits=saved.aux_logits if aux_logits is None else aux_logits,
            dropout=saved.dropout if dropout is None else dropout,
            transform_input=saved.transform_input if transform_input is None else transform_input)
        model = GoogLeNet(config, init_weights=False)
        if aux_logits is None:
            load_state_dict_strict(model, obj["model"], path)
        else:
            _load_trunk_state(model, obj["model"], path)
        return model

    if aux_logits is None:
        raise ValueError("aux_logits (True or False) is needed to build a model from a raw state dict")
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict) and _is_state_dict(obj["state_dict"]):
        obj = obj["state_dict"]  # the common {"state_dict": ...} wrapper
    if not _is_state_dict(obj):
        raise InputError(path, "neither a goingdeeper checkpoint nor a state dict of tensors")
    found = _state_variant(obj)
    if variant is not None and found != variant:
        raise InputError(path, f"state dict is in the {found!r} GoogLeNet layout, not {variant!r}")
    if "fc.weight" not in obj:
        raise InputError(path, "state dict has no classifier (fc.weight); not a GoogLeNet state dict")
    fc = obj["fc.weight"]
    if fc.ndim != 2 or not 0 < fc.shape[0] <= MAX_CLASSES:
        raise InputError(path, f"state dict's classifier fc.weight has shape {list(fc.shape)}; expected "
                               f"[classes <= {MAX_CLASSES}, features]")
    saved_classes = int(fc.shape[0])
    config = GoogLeNetConfig(variant=found, num_classes=saved_classes, aux_logits=aux_logits, dropout=dropout,
                             transform_input=transform_input)
    model = GoogLeNet(config, init_weights=False)
    _load_trunk_state(model, obj, path)
    if num_classes is not None and num_classes != saved_classes:
        log.info("%s: trunk loaded; classifier reset from %d to %d classes", path, saved_classes, num_classes)
        model.reset_classifier(num_classes)
    return model


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _state_variant(state: dict[str, torch.Tensor]) -> str:
    """torchvision's layout has BatchNorm after every convolution; the paper's has conv biases instead."""
    return "torchvision" if "conv1.bn.weight" in state else "paper"


def _load_trunk_state(model: GoogLeNet, state: dict[str, torch.Tensor], path: str | os.PathLike | None) -> None:
    """Load ``state``; drop aux heads the model lacks and freshly initialise those the weights lack."""
    aux = tuple(f"{name}." for name in AUX_HEADS)
    state = {k: v for k, v in state.items() if model.aux1 is not None or not k.startswith(aux)}
    if model.aux1 is not None and not any(k.startswith(aux) for k in state):
        log.info("%s: no auxiliary heads in the weights; they are freshly initialised", path)
        model.initialize(model.aux1)
        model.initialize(model.aux2)
        state = {**state, **{k: v for k, v in model.state_dict().items() if k.startswith(aux)}}
    load_state_dict_strict(model, state, path)


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
