"""Where a cell writes: the write-outside-job rule of the scanner.

A job's only writable place is its own directory (cwd); weights leave through
``rapha.save()``. A write to an absolute or ``../`` path is either an attempt to plant
something on the edge or a bug that would fail in the sandbox's read-only view, so the
scanner names it before the job ships. Paths are judged from their literal prefix:
``open(f"/tmp/{x}", "w")`` is as absolute as ``open("/tmp/x", "w")``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable

from . import scan_rules as R

Verdict = tuple[str, str, str]  # rule, severity, what
_PATH_MAKERS = frozenset({"pathlib.Path", "pathlib.PurePath", "pathlib.PosixPath", "os.path.join",
                          "os.path.abspath", "os.path.realpath", "os.path.normpath"})
_DRIVE = re.compile(r"^[A-Za-z]:")


def const_str(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def outside_job(text: str) -> bool:
    """Absolute, home-relative or climbing out of the job directory."""
    if text.startswith(("/", "~", "\\")) or _DRIVE.match(text):
        return True
    return ".." in re.split(r"[\\/]", text)


class PathJudge:
    def __init__(self, resolve: Callable[[ast.AST], str | None], assigned: dict[str, ast.expr]) -> None:
        self.resolve = resolve
        self.assigned = assigned

    def judge_call(self, node: ast.Call, func: str | None) -> list[Verdict]:
        if func == "builtins.open":
            return self._open(node, node.args[0] if node.args else None, mode_index=1)
        if func and R.SHUTIL_WRITERS.match(func):
            return self._shutil(node, func)
        if func and R.OS_WRITERS.match(func):
            return self._os(node, func)
        if func is None and isinstance(node.func, ast.Attribute):
            return self._path_method(node, node.func)
        return []

    def _open(self, node: ast.Call, target: ast.AST | None, mode_index: int) -> list[Verdict]:
        if target is None or not _write_mode(node, mode_index):
            return []
        text = self.path_text(target)
        if text is not None and outside_job(text):
            return [("write-outside-job", R.HIGH, f"opens {text!r} for writing")]
        return []

    def _shutil(self, node: ast.Call, func: str) -> list[Verdict]:
        index = 1 if re.search(r"\.(copy\w*|move|unpack_archive)$", func) else 0
        keyword = {1: ("dst", "extract_dir")}.get(index, ("path", "base_name"))
        target = node.args[index] if len(node.args) > index else _keyword(node, keyword)
        text = self.path_text(target) if target is not None else None
        if text is not None and outside_job(text):
            return [("write-outside-job", R.HIGH, f"{func} writes to {text!r}")]
        if text is None:
            return [("write-outside-job", R.MEDIUM, f"{func} writes to a path the scan cannot read")]
        return []

    def _os(self, node: ast.Call, func: str) -> list[Verdict]:
        for arg in node.args[:2]:
            text = self.path_text(arg)
            if text is not None and outside_job(text):
                return [("write-outside-job", R.HIGH, f"{func} touches {text!r}")]
        return []

    def _path_method(self, node: ast.Call, func: ast.Attribute) -> list[Verdict]:
        if func.attr == "open":
            return self._open(node, func.value, mode_index=0)
        if func.attr not in R.FILE_WRITERS:
            return []
        if not self._is_path(func.value, 0):
            return []
        text = self.path_text(func.value)
        if text is not None and outside_job(text):
            return [("write-outside-job", R.HIGH, f"{func.attr} on {text!r}")]
        return []

    def _is_path(self, expr: ast.AST, depth: int) -> bool:
        """Only pathlib objects: ``str.replace`` and ``dict.replace`` are not writes."""
        if depth > 4:
            return False
        if isinstance(expr, ast.Call):
            if isinstance(expr.func, ast.Attribute) and expr.func.attr in ("joinpath", "with_name", "with_suffix"):
                return self._is_path(expr.func.value, depth + 1)
            return self.resolve(expr.func) in _PATH_MAKERS
        if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Div):
            return self._is_path(expr.left, depth + 1)
        if isinstance(expr, ast.Attribute) and expr.attr == "parent":
            return self._is_path(expr.value, depth + 1)
        if isinstance(expr, ast.Name) and expr.id in self.assigned:
            return self._is_path(self.assigned[expr.id], depth + 1)
        return False

    def path_text(self, expr: ast.AST, depth: int = 0) -> str | None:
        """The literal text a path expression starts with, or None when it is computed."""
        if depth > 6:
            return None
        text = const_str(expr)
        if text is not None:
            return text
        if isinstance(expr, ast.JoinedStr):
            return const_str(expr.values[0]) if expr.values else None
        if isinstance(expr, ast.BinOp) and isinstance(expr.op, (ast.Add, ast.Div)):
            return self._joined(expr, depth)
        if isinstance(expr, ast.Call):
            return self._call_text(expr, depth)
        if isinstance(expr, ast.Attribute) and expr.attr == "parent":
            base = self.path_text(expr.value, depth + 1)
            return f"{base}/.." if base is not None else None
        if isinstance(expr, ast.Name) and expr.id in self.assigned:
            return self.path_text(self.assigned[expr.id], depth + 1)
        return None

    def _joined(self, expr: ast.BinOp, depth: int) -> str | None:
        left = self.path_text(expr.left, depth + 1)
        right = self.path_text(expr.right, depth + 1)
        if isinstance(expr.op, ast.Div) and right is not None and outside_job(right):
            return right  # Path("x") / "/etc" is "/etc"; Path("x") / ".." climbs out
        if left is None:
            return None
        sep = "/" if isinstance(expr.op, ast.Div) else ""
        return left + sep + (right if right is not None else "x")

    def _call_text(self, expr: ast.Call, depth: int) -> str | None:
        func = self.resolve(expr.func)
        if func == "os.path.expanduser":
            return "~"
        if func in _PATH_MAKERS:
            parts = [self.path_text(arg, depth + 1) for arg in expr.args]
            for part in reversed(parts):  # a later absolute part replaces the earlier ones
                if part is not None and outside_job(part):
                    return part
            return parts[0] if parts else ""
        if isinstance(expr.func, ast.Attribute) and expr.func.attr in ("joinpath", "with_name", "with_suffix"):
            return self.path_text(expr.func.value, depth + 1)
        return None


def _write_mode(node: ast.Call, index: int) -> bool:
    mode = node.args[index] if len(node.args) > index else _keyword(node, ("mode",))
    text = const_str(mode) if mode is not None else "r"
    return text is None or any(flag in text for flag in "wax+")


def _keyword(node: ast.Call, names: tuple[str, ...]) -> ast.AST | None:
    for keyword in node.keywords:
        if keyword.arg in names:
            return keyword.value
    return None
