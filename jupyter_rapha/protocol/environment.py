"""The site's environment: what a job at an edge can import, as the edge's signed catalog
lists it, and the checks a notebook makes against that list before a cell leaves.

The edge measures the listing from the interpreter its jobs run with (never from anything
a researcher sends) and signs it inside its catalog. Here it is parsed and read: which
distribution provides an import name, at which version, and which imports of a cell (and
of the files that travel with it) the edge lacks. Pure: dicts and source text in, no I/O.

A listing is ``complete`` when the edge lists everything installed; a hospital may list
only some distributions (``sandbox.listed_packages``), and then an import it does not list
may still be there, so it is a note, never a refusal.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import BadInput

# Listed by every edge that has them, whatever else it lists, and shown first.
KEY_PACKAGES = ("torch", "numpy", "monai", "pydicom", "safetensors")
# Bound by the runtime inside every job, not imported from the environment.
RUNTIME_MODULES = frozenset({"rapha"})
MAX_ENTRIES = 20_000  # a listing larger than this is not an environment, it is an attack on the reader
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,199}$")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+!_-]{0,99}$")


def canonical_name(distribution: str) -> str:
    """PEP 503's normalised name: ``PyYAML`` and ``pyyaml``, ``jupyter_server`` and
    ``jupyter-server`` are one distribution."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


@dataclass(frozen=True)
class Environment:
    python: str
    implementation: str
    complete: bool
    packages: Mapping[str, str]  # distribution name -> version
    modules: Mapping[str, tuple[str, ...]]  # top-level import name -> distributions providing it
    stdlib: frozenset[str]

    def to_dict(self) -> dict[str, Any]:
        return {"python": self.python, "implementation": self.implementation, "complete": self.complete,
                "packages": dict(sorted(self.packages.items())),
                "modules": {name: list(dists) for name, dists in sorted(self.modules.items())},
                "stdlib": sorted(self.stdlib)}

    def version(self, distribution: str) -> str | None:
        wanted = canonical_name(distribution)
        return next((v for name, v in self.packages.items() if canonical_name(name) == wanted), None)

    def providers(self, module: str) -> tuple[str, ...]:
        """The listed distributions that provide top-level import ``module``."""
        listed = self.modules.get(module)
        if listed:
            return listed
        # A distribution without a file list still provides the module named like itself.
        return (module,) if self.version(module) is not None else ()

    def has(self, module: str) -> bool:
        return module in RUNTIME_MODULES or module in self.stdlib or bool(self.providers(module))

    def key_packages(self) -> list[tuple[str, str]]:
        return [(name, version) for name in KEY_PACKAGES if (version := self.version(name)) is not None]

    def summary(self) -> str:
        """``Python 3.11.2, 214 packages: torch 2.13.0, numpy 2.3.1, ...`` (the key ones)."""
        keys = ", ".join(f"{name} {version}" for name, version in self.key_packages())
        count = f"{len(self.packages)} package{'' if len(self.packages) == 1 else 's'}"
        count += "" if self.complete else " listed (not all it has)"
        return f"Python {self.python}, {count}" + (f": {keys}" if keys else "")


def parse_environment(value: Any) -> Environment:
    """The ``environment`` section of a verified catalog. Raises ``BadInput`` naming what
    is malformed: a signed listing of the wrong shape is the edge's fault, not a fact."""
    if not isinstance(value, Mapping):
        raise BadInput("the environment listing is not an object")
    python, implementation = value.get("python"), value.get("implementation", "cpython")
    if not isinstance(python, str) or not _VERSION.match(python) or not isinstance(implementation, str):
        raise BadInput("the environment listing names no Python version")
    complete = value.get("complete")
    if not isinstance(complete, bool):
        raise BadInput("the environment listing does not say whether it is complete")
    return Environment(python=python, implementation=implementation, complete=complete,
                       packages=_packages(value.get("packages")), modules=_modules(value.get("modules")),
                       stdlib=frozenset(_names(value.get("stdlib", []), "stdlib", _MODULE)) or local_stdlib())


def _packages(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping) or len(value) > MAX_ENTRIES:
        raise BadInput("the environment listing's packages are not an object of versions")
    for name, version in value.items():
        if not (isinstance(name, str) and _NAME.match(name) and isinstance(version, str) and _VERSION.match(version)):
            raise BadInput(f"the environment listing has a malformed package entry {str(name)[:60]!r}")
    return dict(value)


def _modules(value: Any) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, Mapping) or len(value) > MAX_ENTRIES:
        raise BadInput("the environment listing's modules are not an object")
    modules: dict[str, tuple[str, ...]] = {}
    for module, dists in value.items():
        if not isinstance(module, str) or not _MODULE.match(module) or not isinstance(dists, list):
            raise BadInput(f"the environment listing has a malformed module entry {str(module)[:60]!r}")
        modules[module] = tuple(_names(dists, f"module {module}", _NAME))
    return modules


def _names(value: Any, what: str, pattern: re.Pattern[str]) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_ENTRIES or not all(
            isinstance(v, str) and pattern.match(v) for v in value):
        raise BadInput(f"the environment listing's {what} entry is not a list of names")
    return list(value)


@dataclass(frozen=True)
class CodeFile:
    """One piece of code that travels: the cell, or a file sent with it. ``first_line`` is
    the editor's number of its first line (2 under ``%%rapha_train``)."""

    name: str
    source: str
    first_line: int = 1

    def where(self, line: int) -> str:
        shown = line + self.first_line - 1
        return f"line {shown}" if self.name == "<cell>" else f"{self.name} line {shown}"


@dataclass(frozen=True)
class ImportedName:
    module: str  # the top-level name: ``monai`` for ``from monai.networks import nets``
    line: int
    optional: bool  # inside ``try: ... except ImportError`` (or a handler that catches it)


_CATCHES_IMPORT_ERROR = frozenset({"ImportError", "ModuleNotFoundError", "Exception", "BaseException"})


def imported_names(source: str) -> list[ImportedName]:
    """Every absolute import of ``source``, in order. Code that does not parse has none here
    (the scanner reports it). Relative imports name files that travel, not the environment."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError):
        return []
    found: list[ImportedName] = []
    _walk(tree, False, found)
    return found


def _walk(node: ast.AST, optional: bool, found: list[ImportedName]) -> None:
    if isinstance(node, ast.Import):
        found += [ImportedName(alias.name.split(".")[0], node.lineno, optional) for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
        found.append(ImportedName(node.module.split(".")[0], node.lineno, optional))
    if isinstance(node, ast.Try | ast.TryStar) and any(_catches_import_error(h) for h in node.handlers):
        for statement in node.body:
            _walk(statement, True, found)
        for other in [*node.handlers, *node.orelse, *node.finalbody]:
            _walk(other, optional, found)
        return
    for child in ast.iter_child_nodes(node):
        _walk(child, optional, found)


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    caught = handler.type
    names = caught.elts if isinstance(caught, ast.Tuple) else [caught]
    return caught is None or any(isinstance(n, ast.Name) and n.id in _CATCHES_IMPORT_ERROR for n in names)


@dataclass(frozen=True)
class ImportCheck:
    missing: tuple[str, ...]  # refusals: the edge lists everything and lacks these
    notes: tuple[str, ...]  # not refusals: optional imports, or a listing that is not complete


def check_imports(files: Sequence[CodeFile], environment: Environment, site: str = "the edge",
                  local_modules: frozenset[str] = frozenset()) -> ImportCheck:
    """What the edge lacks of what ``files`` import, each named with its file and line.
    ``local_modules`` are the top-level names the files themselves provide (modules that
    travel with the cell), so importing one of them is not asking the environment."""
    missing: list[str] = []
    notes: list[str] = []
    seen: set[str] = set()
    for code in files:
        for name in imported_names(code.source):
            if name.module in local_modules or environment.has(name.module) or name.module in seen:
                continue
            seen.add(name.module)
            what = f"{code.where(name.line)}: {site} has no module {name.module}"
            if name.optional:
                notes.append(f"{what} (the import is inside try/except ImportError, so the cell may cope)")
            elif not environment.complete:
                notes.append(f"{what} in the packages it lists (it lists only some; the job may still find it)")
            else:
                missing.append(f"{what}: remove the import or ask the hospital to install it "
                               f"(Python {environment.python} there)")
    return ImportCheck(tuple(missing), tuple(notes))


def version_differences(files: Sequence[CodeFile], environment: Environment, local: Mapping[str, str],
                        site: str = "the edge") -> list[str]:
    """One line per distribution imported by ``files`` whose version here (``local``:
    distribution name -> version, as installed in this kernel) differs from the edge's."""
    local_versions = {canonical_name(name): version for name, version in local.items()}
    lines: list[str] = []
    seen: set[str] = set()
    for code in files:
        for name in imported_names(code.source):
            for dist in environment.providers(name.module):
                key = canonical_name(dist)
                here, there = local_versions.get(key), environment.version(dist)
                if key in seen or here is None or there is None or here == there:
                    continue
                seen.add(key)
                lines.append(f"{dist} is {here} here but {there} at {site} (imported at {code.where(name.line)}): "
                             "the dry run may behave differently from the job")
    return lines


def local_stdlib() -> frozenset[str]:
    """This interpreter's standard library names, for a listing that carries none."""
    return frozenset(sys.stdlib_module_names)
