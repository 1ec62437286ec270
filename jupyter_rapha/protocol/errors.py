"""One error tree for both sides.

Expected refusals (``GateDenied`` and its kinds, ``AuthError``) are kept apart from
faults (``Fault`` and its kinds) so that callers can tell "the hospital said no" from
"something broke". Every error carries a ``diagnostics()`` text a user can act on and
that never contains record data.
"""

from __future__ import annotations


class RaphaError(Exception):
    """Base of every error this project raises on purpose."""

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def diagnostics(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class BadInput(RaphaError):
    """The caller sent something malformed; the message says what to fix."""


class NotFound(RaphaError):
    """An unknown job, dataset or key."""


class AuthError(RaphaError):
    """A request that is not from a registered researcher, or not fresh (S8)."""


class Unsigned(AuthError):
    pass


class UnknownKey(AuthError):
    pass


class BadSignature(AuthError):
    pass


class Expired(AuthError):
    pass


class Replayed(AuthError):
    pass


class GateDenied(RaphaError):
    """A gate refused the job. ``reasons`` are strings the researcher can act on."""

    gate = "gate"

    def __init__(self, message: str, *, reasons: list[str] | None = None, hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.reasons = list(reasons or [message])


class SpecDenied(GateDenied):
    gate = "spec"


class ScanDenied(GateDenied):
    gate = "scan"


class PolicyDenied(GateDenied):
    gate = "policy"


class AttestationDenied(GateDenied):
    gate = "attestation"


class BudgetDenied(GateDenied):
    gate = "budget"


class ReleaseDenied(GateDenied):
    gate = "release"


class Fault(RaphaError):
    """Something broke. Faults deny (S4) and are reported without internals."""


class SandboxFault(Fault):
    pass


class AnchorFault(Fault):
    pass


class StorageFault(Fault):
    pass


class StorageUnavailable(StorageFault):
    """The edge's storage failed (full, I/O error, damaged): a fault of the machine, not
    of the request. ``problem`` is a generic text without paths, safe to show anyone."""

    def __init__(self, problem: str, *, hint: str = "") -> None:
        super().__init__(f"{problem}; the edge takes no jobs until an operator fixes it",
                         hint=hint or "retry later")
        self.problem = problem


class AuditDamaged(StorageFault):
    """The audit log is broken, truncated or missing (S7): the edge refuses to start."""


class VerificationError(RaphaError):
    """A receipt, signature or proof did not verify."""
