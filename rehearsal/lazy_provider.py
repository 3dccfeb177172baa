"""Lazy subpackages of pulumi_aws for offline runs (rehearsals and tests).

Each pulumi_aws subpackage's generated __init__.py imports every module it has (`from .instance import *` for all of
EC2's 200-odd resources and data sources), and defining their classes is most of a rehearsal's import time. Offline,
the subpackage is created from the same __init__.py without those star imports, and a name is imported from its module
the first time the program asks for it (PEP 562 module __getattr__). The classes are the provider's own, unchanged;
only when they are defined moves. `pulumi up` never loads this module: the real CLI runs __main__.py as it is.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

PROVIDER = "pulumi_aws"
STAR_IMPORT = re.compile(r"^from \.(\w+) import \*$", re.MULTILINE)
EXPORTS = re.compile(r"^__all__ = \[(.*?)\]", re.MULTILINE | re.DOTALL)
NAME = re.compile(r"'([A-Za-z_][A-Za-z0-9_]*)'")


def exported_names(module_file: Path) -> list[str]:
    """A generated module's __all__, read from its source without running it."""
    found = EXPORTS.search(module_file.read_text(encoding="utf-8"))
    if not found:
        raise ImportError(f"{module_file}: no __all__ to import lazily")
    return NAME.findall(found.group(1))


class _LazySubpackageLoader(importlib.abc.Loader):
    def __init__(self, init_file: Path) -> None:
        self._init_file = init_file

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None  # the default module object

    def exec_module(self, module: ModuleType) -> None:
        source = self._init_file.read_text(encoding="utf-8")
        origin: dict[str, str] = {}  # exported name -> the submodule defining it
        for submodule in STAR_IMPORT.findall(source):
            for name in exported_names(self._init_file.parent / f"{submodule}.py"):
                origin.setdefault(name, submodule)  # first star import wins, as in the original order
        package = module.__name__

        def __getattr__(name: str) -> Any:  # noqa: N807 (PEP 562)
            submodule = origin.get(name)
            if submodule is None:
                raise AttributeError(f"module {package!r} has no attribute {name!r}")
            value = getattr(importlib.import_module(f"{package}.{submodule}"), name)
            setattr(module, name, value)
            return value

        module.__getattr__ = __getattr__  # type: ignore[method-assign]
        module.__lazy_exports__ = origin  # type: ignore[attr-defined]
        # Everything else of the generated __init__ (its `from . import outputs`, registrations) runs as written.
        exec(compile(STAR_IMPORT.sub("", source), str(self._init_file), "exec"), module.__dict__)  # noqa: S102


class _LazySubpackageFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(f"{PROVIDER}.") or fullname.count(".") != 1:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.origin is None or not spec.submodule_search_locations:
            return None  # a plain module (pulumi_aws._utilities): as usual
        init_file = Path(spec.origin)
        if not STAR_IMPORT.search(init_file.read_text(encoding="utf-8")):
            return None
        spec.loader = _LazySubpackageLoader(init_file)
        return spec


def install() -> None:
    """From now on, pulumi_aws subpackages not yet loaded load lazily (idempotent). pulumi_aws's own __init__ names
    its subpackages with Pulumi's lazy_import, which found each one's spec already: those still unloaded get the lazy
    loader in their spec, which Pulumi's lazy module calls on first use."""
    if not any(isinstance(finder, _LazySubpackageFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _LazySubpackageFinder())
    for name, module in list(sys.modules.items()):
        if not name.startswith(f"{PROVIDER}.") or name.count(".") != 1 or type(module) is ModuleType:
            continue  # not a subpackage, or loaded already
        spec = ModuleType.__getattribute__(module, "__spec__")  # without triggering the lazy module's load
        if spec is None or spec.origin is None or isinstance(spec.loader, _LazySubpackageLoader):
            continue
        init_file = Path(spec.origin)
        if init_file.name == "__init__.py" and STAR_IMPORT.search(init_file.read_text(encoding="utf-8")):
            spec.loader = _LazySubpackageLoader(init_file)
