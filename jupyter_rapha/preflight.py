"""Notebook preflight: before a cell ships, run the edge's scanner, check its imports (and
those of the files that travel with it) against the environment the edge's signed catalog
lists, and dry-run the edge's published policy; explain any refusal in plain words with
the cell line.

The edge still decides. The dry run cannot know the edge's attestation, air-gap evidence
or consented cohort, so unless the caller passes what it knows, it assumes the edge is
healthy (verified hardware attestation, sealed air-gap, a cohort at the dataset's limit)
and reports only what the researcher can change in the cell or its arguments.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Iterable, Mapping, Sequence
from pathlib import PurePosixPath

from jupyter_rapha.protocol.cellinfo import metric_name_problems
from jupyter_rapha.protocol.environment import CodeFile, Environment, ImportCheck, check_imports
from jupyter_rapha.protocol.policy import Decision, PolicyBundle, evaluate, load_engine
from jupyter_rapha.protocol.private import job_mode
from jupyter_rapha.protocol.scan import DEFAULT_ALLOWED_MODULES, ScanReport, scan_source

_SEVERITY_WORDS = {"high": "will be refused", "medium": "may be refused", "low": "note"}


@dataclass(frozen=True)
class Preflight:
    scan: ScanReport
    decision: Decision | None  # None when no policy was published to dry-run
    explanations: tuple[str, ...] = field(default=())
    # metric names the edge refuses at submission (the contract's rule): refused here too
    metric_names_refused: tuple[str, ...] = field(default=())
    # imports the edge's listed environment lacks (only from a complete listing)
    imports_missing: tuple[str, ...] = field(default=())

    @property
    def likely_allowed(self) -> bool:
        return (not self.scan.high and not self.metric_names_refused and not self.imports_missing
                and (self.decision is None or self.decision.allowed))


def preflight(source: str, *, job: Mapping[str, Any] | None = None, policy: PolicyBundle | None = None,
              researcher: Mapping[str, Any] | None = None, dataset: Mapping[str, Any] | None = None,
              edge: Mapping[str, Any] | None = None, attestation: Mapping[str, Any] | None = None,
              allowed_modules: Iterable[str] | None = DEFAULT_ALLOWED_MODULES, first_line: int = 1,
              environment: Environment | None = None, files: Sequence[CodeFile] = (),
              site: str = "the edge") -> Preflight:
    """Scan ``source`` and its metric names; with ``policy`` (the edge's published bundle),
    dry-run it on ``job`` (the job spec fields without the code) and the edge facts given;
    with ``environment`` (the edge's signed listing), check the imports of the cell and of
    ``files`` (code that travels with it) against it. Lines are named as the editor numbers
    them: ``first_line`` is the editor's number of the cell's first line (2 under
    ``%%rapha_train``)."""
    report = scan_source(source, allowed_modules=allowed_modules)
    names_refused = tuple(metric_name_problems(source, first_line))
    lines = [_explain_finding(f.line, f.severity, f.message, source, first_line) for f in report.findings]
    lines += names_refused
    imports = ImportCheck((), ())
    if environment is not None:
        imports = check_imports([CodeFile("<cell>", source, first_line), *files], environment, site,
                                local_modules=frozenset(module_names(files)))
        lines += [*imports.missing, *imports.notes]
    decision = None
    if policy is not None:
        # the mode the edge reads from the same cell (rapha.fit_private is DP mode)
        doc = dry_run_input(report, {**(job or {}), "mode": job_mode(source)}, researcher, dataset, edge, attestation)
        decision = evaluate(policy, doc, engine=_torch_first_engine)
        lines += [_explain_reason(reason, report, source, first_line) for reason in decision.deny
                  if not _repeats_scan(reason, report)]
    return Preflight(report, decision, tuple(lines), names_refused, imports.missing)


def module_names(files: Sequence[CodeFile]) -> list[str]:
    """The top-level module names files that travel with a cell provide (``helpers.py``:
    ``helpers``; ``pkg/__init__.py`` and ``pkg/x.py``: ``pkg``)."""
    return [PurePosixPath(f.name).parts[0].removesuffix(".py") for f in files if f.name != "<cell>"]


def dry_run_input(report: ScanReport, job: Mapping[str, Any], researcher: Mapping[str, Any] | None,
                  dataset: Mapping[str, Any] | None, edge: Mapping[str, Any] | None,
                  attestation: Mapping[str, Any] | None = None) -> dict[str, Any]:
    budget = job.get("budget", {}) if isinstance(job.get("budget"), Mapping) else {}
    assumed_dataset = {"name": job.get("dataset"), "fields": list(job.get("fields", [])),
                       # not assumed special-category: that would refuse every standard cell in the dry
                       # run; the edge's catalog gives the real class (dispatch passes it)
                       "sensitivity": "unknown", "cohort_size": budget.get("max_records"),
                       "max_records": budget.get("max_records"), "price": "0"}
    return {
        "job": {k: v for k, v in job.items() if k != "code"},
        "scan": report.to_dict(),
        "attestation": dict(attestation or {"backend": "tdx", "outcome": "pass", "report_data_binding": "ok"}),
        "airgap": {"sealed": True},
        "dataset": {**assumed_dataset, **(dataset or {})},
        "researcher": dict(researcher or {"name": "", "key_id": "", "roles": [], "purposes": []}),
        "edge": dict(edge or {"demo": False, "unsafe": []}),
    }


def _torch_first_engine() -> Any:
    # regopy loaded before torch aborts the kernel when torch loads later; a notebook
    # kernel is exactly where both meet, so torch (if installed) goes first.
    if importlib.util.find_spec("torch") is not None:
        import torch  # noqa: F401
    return load_engine()


def _explain_finding(line: int, severity: str, message: str, source: str, first_line: int = 1) -> str:
    shown = line + first_line - 1
    return f"line {shown} ({_SEVERITY_WORDS.get(severity, severity)}): {message}{_quote(line, source, shown)}"


def _explain_reason(reason: str, report: ScanReport, source: str, first_line: int = 1) -> str:
    for finding in report.findings:
        if finding.message in reason:
            shown = finding.line + first_line - 1
            return (f"line {shown}: the edge's policy refuses this: {finding.message}"
                    f"{_quote(finding.line, source, shown)}")
    return f"the edge's policy would refuse the job: {reason}"


def _repeats_scan(reason: str, report: ScanReport) -> bool:
    return any(f.message in reason for f in report.findings)


def _quote(line: int, source: str, shown: int | None = None) -> str:
    lines = source.splitlines()
    if 1 <= line <= len(lines) and lines[line - 1].strip():
        return f"\n    {shown or line} | {lines[line - 1].strip()[:120]}"
    return ""
