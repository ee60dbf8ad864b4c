"""Field checks of COCO JSON shared by the two readers of it: :func:`detect.datasets.read_coco` (tensors,
for training and detection) and :mod:`detect.evaluation.coco` (numpy, for the evaluator). Torch-free, so
``detect eval --results`` imports no torch. One rule each: ids are ints (not bools) or strings, numbers are
finite ints or floats (not bools), every entry is an object with its fields."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from backbone.errors import InputError, has_control, short_repr


def is_number(value: Any) -> bool:
    """A finite int or float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def require_list(path: Path, data: dict, key: str) -> list:
    """``data[key]``, which must be a list (InputError naming ``path`` otherwise)."""
    if key not in data:
        raise InputError(path, f"not a COCO instances file: no '{key}' field")
    if not isinstance(data[key], list):
        raise InputError(path, f"'{key}' must be a list")
    return data[key]


def check_fields(path: Path, kind: str, item: Any, fields: Sequence[str]) -> None:
    """``item`` (an entry of ``kind + 's'``) is an object holding every name in ``fields``."""
    if not isinstance(item, dict):
        raise InputError(path, f"each entry of '{kind}s' must be an object, got {type(item).__name__}")
    for name in fields:
        if name not in item:
            ident = f" id {short_repr(item['id'])}" if "id" in item else ""
            raise InputError(path, f"{kind}{ident} has no '{name}' field")


def is_id(value: Any) -> bool:
    """An id is an int (not a bool) or a string."""
    return (isinstance(value, int) and not isinstance(value, bool)) or isinstance(value, str)


def check_id(path: Path, value: Any, what: str) -> Any:
    """``value`` if it is an id (:func:`is_id`), else InputError naming ``what``."""
    if not is_id(value):
        raise InputError(path, f"{what} {short_repr(value)} is a {type(value).__name__}, expected an integer or "
                               "a string")
    return value


def read_categories(path: Path, cats: list) -> dict[Any, str]:
    """COCO ``categories`` -> ``{id: name}``, checked: ids unique and of one kind (all integers or all
    strings), names strings without control characters."""
    names: dict[Any, str] = {}
    for cat in cats:
        check_fields(path, "category", cat, ("id", "name"))
        check_id(path, cat["id"], "category id")
        if cat["id"] in names:
            raise InputError(path, f"duplicate category id {short_repr(cat['id'])}")
        if not isinstance(cat["name"], str) or has_control(cat["name"]):
            raise InputError(path, f"category id {short_repr(cat['id'])} has name {short_repr(cat['name'])}, "
                                   "expected a string without control characters")
        names[cat["id"]] = cat["name"]
    if len({type(c) for c in names}) > 1:
        raise InputError(path, "category ids mix integers and strings; use one kind in a file")
    return names
