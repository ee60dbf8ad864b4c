"""Package faces that import their public names on first use (PEP 562), so that ``import backbone.x`` and the
console scripts' ``--help`` do not pay for torch unless they need it, while ``from backbone import X`` works
as usual. Used by the ``__init__.py`` of ``backbone``, ``proposals`` and ``detect``."""

from __future__ import annotations

import importlib
import sys
import types


class _Face(types.ModuleType):
    """Where a public name is also its module's name (``googlenet``, ``preprocess``, ``selective_search``,
    ``postprocess``), importing that module must not replace the name on the package with the module (as
    eager imports in ``__init__`` never did): the import system's ``setattr`` stores the name's object, or
    nothing when the name is defined in another module (it is then imported from there on first use)."""

    def __setattr__(self, name: str, value: object) -> None:
        where = self.__dict__.get("_WHERE", {})
        if isinstance(value, types.ModuleType) and name in where:
            if value.__name__ != where[name]:
                return  # the name lives elsewhere (backbone.googlenet, the builder, is in backbone.weights)
            value = getattr(value, name)
        super().__setattr__(name, value)


def lazy_face(package: str, where: dict[str, str]) -> None:
    """Make the package ``package`` import each name of ``where`` (public name -> defining module) on
    first access; ``dir()`` lists them."""
    module = sys.modules[package]
    module._WHERE = where

    def __getattr__(name: str):
        if name in where:
            value = getattr(importlib.import_module(where[name]), name)
            setattr(module, name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(vars(module)) | set(where))

    module.__getattr__ = __getattr__
    module.__dir__ = __dir__
    module.__class__ = _Face
