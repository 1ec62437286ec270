"""The scan of a whole job: the cell and each file it includes, by the same scanner.

Findings in an included file carry its path (``"file": "helpers.py"``), so every refusal
names the file and the line. The included files' own module names count as allowed
imports (the cell's ``import helpers`` is to code the scan has seen). A job without
included files gets exactly the cell's report, byte for byte, so its evidence digest is
what it always was.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any
from collections.abc import Iterable

from .canonical import canonical_json
from .job_inputs import IncludedFile
from .scan import DEFAULT_ALLOWED_MODULES, Finding, ScanReport, scan_source
from .scan_rules import HIGH


@dataclass(frozen=True)
class JobScan:
    cell: ScanReport
    files: tuple[tuple[str, ScanReport], ...] = ()

    def located(self) -> list[tuple[str, Finding]]:
        """Every finding with its file ("" for the cell)."""
        return [("", f) for f in self.cell.findings] + [(path, f) for path, report in self.files
                                                        for f in report.findings]

    @property
    def high(self) -> list[tuple[str, Finding]]:
        return [(path, f) for path, f in self.located() if f.severity == HIGH]

    def to_dict(self) -> dict[str, Any]:
        report = self.cell.to_dict()
        if not self.files:
            return report
        counts = dict(report["counts"])
        for _, other in self.files:
            for severity, count in other.counts.items():
                counts[severity] = counts.get(severity, 0) + count
        findings = report["findings"] + [{**f.to_dict(), "file": path} for path, r in self.files for f in r.findings]
        return {**report, "findings": findings, "counts": counts, "files": [path for path, _ in self.files]}

    @property
    def sha256(self) -> str:
        return hashlib.sha256(canonical_json(self.to_dict())).hexdigest()


def place(path: str, line: int) -> str:
    """Where a finding is, as refusals say it: ``cell line 3`` or ``helpers.py line 3``."""
    return f"{path} line {line}" if path else f"cell line {line}"


def scan_job(code: str, includes: tuple[IncludedFile, ...],
             allowed_modules: Iterable[str] | None = DEFAULT_ALLOWED_MODULES) -> JobScan:
    allowed = None if allowed_modules is None else frozenset(allowed_modules) | {f.top_module for f in includes}
    cell = scan_source(code, allowed_modules=allowed)
    files = tuple((f.path, scan_source(f.code, allowed_modules=allowed))
                  for f in sorted(includes, key=lambda f: f.path))
    return JobScan(cell, files)
