"""The AST walk behind the scanner: resolve names to dotted module paths, then apply the
rule tables of ``scan_rules`` to imports, attribute chains and calls.

Two passes: the first learns what each local name stands for (``import os as o``,
``from os import system as s``, ``run = o.system``), the second judges every node with
that knowledge, so an alias or a re-export cannot hide a call.
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Callable
from itertools import pairwise

from . import scan_rules as R
from .scan_paths import PathJudge, const_str

Raw = tuple[str, int, int, str, str]
_BUILTINS = frozenset(dir(builtins))


class CellAnalysis:
    def __init__(self, tree: ast.Module, allowed: frozenset[str] | None,
                 nested: Callable[[str], list[Raw]]) -> None:
        self.tree = tree
        self.allowed = allowed
        self.nested = nested
        self.aliases: dict[str, str] = {}
        self.assigned: dict[str, ast.expr] = {}
        self.found: list[Raw] = []
        self.call_funcs: set[int] = set()
        self.paths = PathJudge(self.resolve, self.assigned)

    def run(self) -> list[Raw]:
        nodes = sorted((n for n in ast.walk(self.tree) if hasattr(n, "lineno")),
                       key=lambda n: (getattr(n, "lineno", 0), getattr(n, "col_offset", 0)))
        self._learn(nodes)
        self.call_funcs = {id(n.func) for n in nodes if isinstance(n, ast.Call)}
        for node in nodes:
            self._judge(node)
        return self.found

    # -- pass one: what names stand for -------------------------------------------

    def _learn(self, nodes: list[ast.AST]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    local = alias.asname or alias.name.split(".")[0]
                    self.aliases[local] = alias.name if alias.asname else local
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for alias in node.names:
                    if alias.name != "*":
                        self.aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        for node in nodes:
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Name):
                        self.assigned[target.id] = node.value
                        resolved = self.resolve(node.value)
                        if resolved:
                            self.aliases[target.id] = resolved

    def resolve(self, node: ast.AST, depth: int = 0) -> str | None:
        """The dotted path an expression stands for (``o.system`` -> ``os.system``), or None."""
        if depth > 50:
            return None
        if isinstance(node, ast.Name):
            if node.id in self.aliases:
                return self.aliases[node.id]
            return f"builtins.{node.id}" if node.id in _BUILTINS and node.id not in self.assigned else None
        if isinstance(node, ast.Attribute):
            base = self.resolve(node.value, depth + 1)
            return f"{base}.{node.attr}" if base else None
        if isinstance(node, ast.Call):
            return self._resolve_call(node, depth)
        if isinstance(node, ast.Subscript) and self.resolve(node.value, depth + 1) == "sys.modules":
            return const_str(node.slice)
        return None

    def _resolve_call(self, node: ast.Call, depth: int) -> str | None:
        func = self.resolve(node.func, depth + 1)
        first = const_str(node.args[0]) if node.args else None
        if func == "builtins.getattr" and len(node.args) >= 2:
            base, name = self.resolve(node.args[0], depth + 1), const_str(node.args[1])
            return f"{base}.{name}" if base and name else None
        if func in R.DYNAMIC_IMPORT and first:
            return first
        return None

    # -- pass two: judging ----------------------------------------------------------

    def _add(self, rule: str, node: ast.AST, severity: str, what: str) -> None:
        self.found.append((rule, getattr(node, "lineno", 1), getattr(node, "col_offset", 0), severity, what))

    def _judge(self, node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                self._module(alias.name, node)
        elif isinstance(node, ast.ImportFrom):
            self._import_from(node)
        elif isinstance(node, ast.Call):
            self._call(node)
        elif isinstance(node, (ast.Attribute, ast.Name)):
            self._reference(node)
        elif isinstance(node, ast.Subscript):
            self._subscript(node)
        elif isinstance(node, ast.BinOp):
            if _count_chr(node, self.resolve) >= 2:
                self._add("obfuscation", node, R.HIGH, "text assembled from chr() codes")

    def _import_from(self, node: ast.ImportFrom) -> None:
        if node.level or not node.module:
            self._add("module-not-allowed", node, R.MEDIUM, "relative import in a cell")
            return
        self._module(node.module, node)
        for alias in node.names:
            if alias.name != "*":
                full = f"{node.module}.{alias.name}"
                if full in R.ESCAPE_MODULES:
                    self._add("escape-import", node, R.HIGH, f"imports {full}")
                self._qualified(full, node)

    def _module(self, name: str, node: ast.AST) -> None:
        parts = name.split(".")
        prefixes = {".".join(parts[: i + 1]) for i in range(len(parts))}
        if prefixes & R.NETWORK_MODULES:
            self._add("net-import", node, R.HIGH, f"imports network module {name}")
        if prefixes & R.ESCAPE_MODULES:
            self._add("escape-import", node, R.HIGH, f"imports {name}")
        if self.allowed is not None and parts[0] not in self.allowed:
            self._add("module-not-allowed", node, R.MEDIUM, f"module {parts[0]} is not on the edge's allowlist")

    def _qualified(self, path: str, node: ast.AST) -> None:
        parts = path.split(".")
        if R.OS_EXEC.match(path):
            self._add("os-exec", node, R.HIGH, f"reaches {path}")
            return
        root = parts[0]
        if root == "builtins" or root in R.NETWORK_MODULES or root in R.ESCAPE_MODULES:
            return  # flagged at the import or by the dynamic-code rules
        pairs = set(pairwise(parts))
        if set(parts[1:]) & R.REACH_ATTRS or pairs & R.REACH_PAIRS:
            self._add("reach-through", node, R.HIGH, f"reaches {path} through another module")

    def _reference(self, node: ast.Attribute | ast.Name) -> None:
        if isinstance(node, ast.Name) and node.id in R.DANGEROUS_NAMES:
            self._add("reach-through", node, R.HIGH, f"uses {node.id}")
            return
        path = self.resolve(node)
        if not path:
            return
        if path in R.DYNAMIC_CODE | R.DYNAMIC_IMPORT and id(node) not in self.call_funcs:
            self._add("dynamic-code", node, R.HIGH, f"passes {path.split('.')[-1]} around as a value")
        self._qualified(path, node)

    def _subscript(self, node: ast.Subscript) -> None:
        if isinstance(node.value, ast.Call) and self.resolve(node.value.func) in R.NAMESPACE_CALLS:
            key = const_str(node.slice)
            if key is None:
                self._add("obfuscation", node, R.HIGH, "looks a name up in globals()/vars() by a computed key")
            elif key in R.DANGEROUS_NAMES or key in R.REACH_ATTRS:
                self._add("reach-through", node, R.HIGH, f"reaches {key} through the namespace")
        path = self.resolve(node)
        if path:  # sys.modules["x"] imports x as surely as an import statement
            self._module(path, node)

    def _call(self, node: ast.Call) -> None:
        func = self.resolve(node.func)
        if func is None:
            self._method_call(node)
            return
        if func in R.DYNAMIC_CODE:
            self._dynamic_code(node, func)
        elif func in R.DYNAMIC_IMPORT:
            self._dynamic_import(node, func)
        elif func in R.REFLECTION:
            self._reflection(node)
        elif func == "builtins.chr":
            return
        else:
            self._deserialise(node, func)
            for rule, severity, what in self.paths.judge_call(node, func):
                self._add(rule, node, severity, what)
        resolved = self.resolve(node)
        if resolved and func == "builtins.getattr":
            self._qualified(resolved, node)

    def _method_call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Attribute) and node.func.attr == "join" and _count_chr(node, self.resolve) >= 1:
            self._add("obfuscation", node, R.HIGH, "text joined from chr() codes")
        for rule, severity, what in self.paths.judge_call(node, None):
            self._add(rule, node, severity, what)

    def _dynamic_code(self, node: ast.Call, func: str) -> None:
        name = func.split(".")[-1]
        if not node.args:
            return
        source = node.args[0]
        text = const_str(source)
        if text is not None:
            for rule, _line, _col, severity, what in self.nested(text):
                self._add(rule, node, severity, f"in the code string passed to {name}: {what}")
            return
        if self._decoded(source, 0):
            self._add("decode-exec", node, R.HIGH, f"{name} runs text produced by a decoder")
        elif self._assembled(source, 0):
            self._add("obfuscation", node, R.HIGH, f"{name} runs code assembled from strings")
        self._add("dynamic-code", node, R.HIGH, f"{name} with a computed argument")

    def _dynamic_import(self, node: ast.Call, func: str) -> None:
        name = const_str(node.args[0]) if node.args else None
        if name is not None:
            self._module(name, node)
            return
        if node.args and self._assembled(node.args[0], 0):
            self._add("obfuscation", node, R.HIGH, "imports a module whose name is assembled from strings")
        self._add("dynamic-code", node, R.HIGH, f"{func.split('.')[-1]} with a computed module name")

    def _reflection(self, node: ast.Call) -> None:
        if len(node.args) < 2 or const_str(node.args[1]) is not None:
            return
        target = self.resolve(node.args[0])
        if self._assembled(node.args[1], 0):
            self._add("obfuscation", node, R.HIGH, "attribute name assembled from strings")
        elif target is not None:
            self._add("obfuscation", node, R.HIGH, f"computed attribute name on module {target}")
        else:
            self._add("obfuscation", node, R.MEDIUM, "computed attribute name (use an explicit dict instead)")

    def _deserialise(self, node: ast.Call, func: str) -> None:
        if func in R.PICKLE_LOADS:
            self._add("pickle-load", node, R.HIGH, f"{func} can run code hidden in the file")
        elif func in R.WEIGHTS_ONLY_LOADS and not _keyword_true(node, "weights_only"):
            self._add("pickle-load", node, R.HIGH, f"{func} without weights_only=True unpickles arbitrary objects")
        elif func == "numpy.load" and _keyword_true(node, "allow_pickle"):
            self._add("pickle-load", node, R.HIGH, "numpy.load with allow_pickle=True unpickles arbitrary objects")

    def _decoded(self, expr: ast.AST, depth: int) -> bool:
        """Does the text come out of base64/hex/zlib/codecs decoding (seen through names)?"""
        if depth > 4:
            return False
        for sub in ast.walk(expr):
            if isinstance(sub, ast.Call) and self._is_decoder(sub):
                return True
            if isinstance(sub, ast.Name) and sub.id in self.assigned:
                if self._decoded(self.assigned[sub.id], depth + 1):
                    return True
        return False

    def _is_decoder(self, call: ast.Call) -> bool:
        path = self.resolve(call.func) or ""
        last = call.func.attr if isinstance(call.func, ast.Attribute) else path.split(".")[-1]
        return last in R.DECODERS or path.startswith("codecs.")

    def _assembled(self, expr: ast.AST, depth: int) -> bool:
        """Is this text built at run time from string pieces (concatenation, f-string,
        join, format, chr)?"""
        if depth > 4:
            return False
        if isinstance(expr, ast.JoinedStr):
            return True
        if isinstance(expr, ast.BinOp) and isinstance(expr.op, (ast.Add, ast.Mod)):
            return True
        if isinstance(expr, ast.Call):
            func = expr.func
            if isinstance(func, ast.Attribute) and func.attr in ("join", "format", "replace", "decode"):
                return True
            return self.resolve(func) in ("builtins.chr", "builtins.str", "builtins.bytes")
        if isinstance(expr, ast.Name) and expr.id in self.assigned:
            return self._assembled(self.assigned[expr.id], depth + 1)
        return False


def _count_chr(node: ast.AST, resolve: Callable[[ast.AST], str | None]) -> int:
    return sum(1 for sub in ast.walk(node)
               if isinstance(sub, ast.Name) and sub.id == "chr" and resolve(sub) == "builtins.chr")


def _keyword_true(node: ast.Call, name: str) -> bool:
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is True
               for k in node.keywords)
