"""The compliance scanner: a researcher's cell in, a report of network- and
escape-capable code out.

Pure (source text in, report out, no I/O) so that the notebook preflight and the edge's
scan gate run the very same rules and a researcher sees a refusal before shipping.
The report is canonical JSON; its SHA-256 is the scan gate's evidence in the receipt.

This is defence in depth. A determined author can hide intent from any static check;
the sandbox (S1: no network namespace, seccomp, read-only filesystem) is the guarantee.
The scan exists to refuse the obvious early, with a message that says what to change,
and to put on record what the hospital was shown.
"""

from __future__ import annotations

import ast
import hashlib
from dataclasses import dataclass
from typing import Any
from collections.abc import Iterable

from .canonical import canonical_json
from .scan_rules import ADVICE, DEFAULT_ALLOWED_MODULES, HIGH, LOW, MEDIUM
from .scan_visitor import CellAnalysis

SCANNER_VERSION = "rapha-scan/1"
__all__ = ["DEFAULT_ALLOWED_MODULES", "SCANNER_VERSION", "Finding", "ScanReport", "scan_source"]
SEVERITIES = (HIGH, MEDIUM, LOW)


@dataclass(frozen=True)
class Finding:
    rule: str
    line: int
    col: int
    severity: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "line": self.line, "col": self.col,
                "severity": self.severity, "message": self.message}


@dataclass(frozen=True)
class ScanReport:
    findings: tuple[Finding, ...]
    scanner_version: str = SCANNER_VERSION

    @property
    def counts(self) -> dict[str, int]:
        counts = {severity: 0 for severity in SEVERITIES}
        for finding in self.findings:
            counts[finding.severity] += 1
        return counts

    @property
    def high(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == HIGH)

    def rules(self) -> set[str]:
        return {f.rule for f in self.findings}

    def to_dict(self) -> dict[str, Any]:
        return {"scanner_version": self.scanner_version,
                "findings": [f.to_dict() for f in self.findings], "counts": self.counts}

    @property
    def sha256(self) -> str:
        return hashlib.sha256(canonical_json(self.to_dict())).hexdigest()


def scan_source(source: str, *, allowed_modules: Iterable[str] | None = DEFAULT_ALLOWED_MODULES) -> ScanReport:
    """Scan one cell. ``allowed_modules`` is the edge's runtime allowlist of top-level
    module names; ``None`` turns the allowlist rule off (the other rules still apply)."""
    allowed = frozenset(allowed_modules) if allowed_modules is not None else None
    try:
        raw = _analyse(source, allowed, depth=0)
    except RecursionError:
        # Too deep to analyse is too deep to review: refuse rather than guess (S4).
        raw = [("syntax-error", 1, 0, HIGH, "the cell is nested too deeply to analyse")]
    return ScanReport(_finalise(raw))


def _analyse(source: str, allowed: frozenset[str] | None, depth: int) -> list[tuple[str, int, int, str, str]]:
    try:
        tree = ast.parse(source, filename="<cell>", mode="exec")
    except SyntaxError as exc:
        return [("syntax-error", exc.lineno or 1, max((exc.offset or 1) - 1, 0), HIGH,
                 f"the cell does not parse ({exc.msg})")]
    except ValueError:  # e.g. NUL bytes, which ast refuses before parsing
        return [("syntax-error", 1, 0, HIGH, "the cell holds bytes Python cannot parse (NUL)")]
    analysis = CellAnalysis(tree, allowed, nested=lambda text: _nested(text, allowed, depth))
    return analysis.run()


def _nested(text: str, allowed: frozenset[str] | None, depth: int) -> list[tuple[str, int, int, str, str]]:
    """Findings inside a literal string passed to exec/eval/compile: hidden code is
    scanned like visible code, three levels deep at most."""
    if depth >= 3:
        return [("obfuscation", 1, 0, HIGH, "code strings nested more than three levels deep")]
    found = _analyse(text, allowed, depth + 1)
    if len(found) == 1 and found[0][0] == "syntax-error":
        try:
            ast.parse(text, mode="eval")
            return []
        except (SyntaxError, ValueError):
            return found
    return found


def _finalise(raw: list[tuple[str, int, int, str, str]]) -> tuple[Finding, ...]:
    seen: dict[tuple[str, int, int], Finding] = {}
    for rule, line, col, severity, what in raw:
        key = (rule, line, col)
        if key not in seen:
            seen[key] = Finding(rule, line, col, severity, f"{what}: {ADVICE[rule]}")
    return tuple(sorted(seen.values(), key=lambda f: (f.line, f.col, f.rule)))
