"""What a verifier answers: named checks, each with a status and a detail a reviewer can
read. Shared by the receipt verifier, its attestation re-check and the quote verifier."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Check:
    name: str
    # "pass", "warn" (holds, but a reviewer must know: the unsafe attestation stand-in),
    # "fail", "skipped" or "pending" (anchor not yet made)
    status: str
    detail: str


@dataclass
class Verification:
    checks: list[Check] = field(default_factory=list)
    statement: dict[str, Any] | None = None

    @property
    def predicate(self) -> dict[str, Any]:
        predicate = (self.statement or {}).get("predicate", {})
        return predicate if isinstance(predicate, dict) else {}

    def ok(self, allow_skipped: bool = False) -> bool:
        bad = {"fail", "pending"} if allow_skipped else {"fail", "skipped", "pending"}
        return bool(self.checks) and not any(c.status in bad for c in self.checks)

    @property
    def pending(self) -> bool:
        """Nothing failed, but the anchor is still to come."""
        return any(c.status == "pending" for c in self.checks) and not any(c.status == "fail" for c in self.checks)

    def add(self, name: str, passed: bool, detail: str) -> bool:
        self.checks.append(Check(name, "pass" if passed else "fail", detail))
        return passed

    def skip(self, name: str, detail: str) -> None:
        self.checks.append(Check(name, "skipped", detail))

    def wait(self, name: str, detail: str) -> None:
        self.checks.append(Check(name, "pending", detail))
