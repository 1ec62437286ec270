"""The one rule that turns a receipt's checks into its headline.

The receipt widget uses it; the side panel (labextension/src/model.ts, ``verdict``) has
a TypeScript copy, held to this one by the shared cases in
labextension/test/verdict_cases.json, which tests/researcher/test_verdict.py writes from
this function and ``npm test`` replays against the copy.

    any check failed (or skipped where skips are not allowed) -> "not verified: ..."   red
    else the anchor still pending -> "signature verified, anchor pending"            amber
    else any warning (or allowed skip) -> "verified, with warnings: ..."            orange
    else -> "verified"                                                               green

A skipped check never gives the green headline: offline, it is a named warning; online,
a failure. A status this rule does not know is a failure (fail closed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from collections.abc import Iterable

COLOURS = {"pass": "#1a7f37", "warn": "#bc4c00", "pending": "#9a6700", "fail": "#cf222e"}
MARKS = {"pass": "PASS", "fail": "FAIL", "pending": "WAIT", "warn": "WARN", "skipped": "SKIP"}
KNOWN = ("pass", "fail", "skipped", "pending", "warn")


@dataclass(frozen=True)
class Verdict:
    kind: str  # "pass" | "warn" | "pending" | "fail"
    label: str
    named: tuple[str, ...] = ()  # the checks the label names

    @property
    def colour(self) -> str:
        return COLOURS[self.kind]

    @property
    def verified(self) -> bool:
        """Every check that decides passed: green, or orange with its warnings named."""
        return self.kind in ("pass", "warn")


def _item(name: str, status: str, detail: str) -> str:
    if status == "skipped":
        return f"{name} not checked"
    if status not in KNOWN:
        return f"{name} (unknown status)"
    return f"{name} (UNSAFE)" if "UNSAFE" in detail else name


def decide(checks: Iterable[tuple[str, str, str]], skips_allowed: bool = False) -> Verdict:
    """``checks``: (name, status, detail) in report order; ``skips_allowed``: offline."""
    listed = [(str(n), str(s), str(d)) for n, s, d in checks]
    if not listed:
        return Verdict("fail", "not verified: nothing was checked")
    bad = [c for c in listed if c[1] == "fail" or c[1] not in KNOWN or (c[1] == "skipped" and not skips_allowed)]
    if bad:
        named = tuple(_item(*c) for c in bad)
        return Verdict("fail", "not verified: " + ", ".join(named), named)
    if any(c[1] == "pending" for c in listed):
        return Verdict("pending", "signature verified, anchor pending")
    warned = tuple(_item(*c) for c in listed if c[1] in ("warn", "skipped"))
    if warned:
        return Verdict("warn", "verified, with warnings: " + ", ".join(warned), warned)
    return Verdict("pass", "verified")


def verdict_of(verification: Any) -> Verdict:
    """The verdict of a ``Verification`` (or a ``VerificationReport``: offline allows skips)."""
    if verification is None:
        return Verdict("fail", "not verified: nothing was checked")
    return decide(((c.name, c.status, c.detail) for c in verification.checks),
                  skips_allowed=bool(getattr(verification, "offline", False)))
