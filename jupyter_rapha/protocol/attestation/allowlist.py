"""Measurement allowlist and attestation policy data.

A genuine quote only proves *some* code ran in a TEE; the allowlist says which code the
hospital accepts. Policy data (JSON, kept with the Rego policies)::

    {"allow_debug": false,
     "accepted_tcb_status": ["UpToDate"],
     "measurements": {"tdx": [{"mrtd": "…", "rtmr0": "…"}],
                      "sgx": [{"mrenclave": "…", "mrsigner": "…"}],
                      "unsafe_software": [{"edge_code_sha256": "…"}]}}

A quote matches an entry when every field the entry names equals the quote's value.
An empty entry would match everything, so it is refused as malformed (fail closed).
"""

from __future__ import annotations

from typing import Any

from ..errors import BadInput

DEFAULT_POLICY: dict[str, Any] = {"allow_debug": False, "accepted_tcb_status": ["UpToDate"], "measurements": {}}
KINDS = ("tdx", "sgx", "unsafe_software")


def allow_debug(policy: dict[str, Any] | None) -> bool:
    value = (policy or DEFAULT_POLICY).get("allow_debug", False)
    if not isinstance(value, bool):
        raise BadInput("allow_debug in attestation policy data must be true or false")
    return value


def accepted_tcb_status(policy: dict[str, Any] | None) -> tuple[str, ...]:
    value = (policy or DEFAULT_POLICY).get("accepted_tcb_status", DEFAULT_POLICY["accepted_tcb_status"])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise BadInput("accepted_tcb_status in attestation policy data must be a list of strings")
    return tuple(value)


def check_allowlist(policy: dict[str, Any], kind: str, measurements: dict[str, str]) -> tuple[bool, str]:
    entries = _entries(policy, kind)
    if not entries:
        return False, f"the allowlist has no {kind} measurements; nothing of this kind is accepted"
    for index, entry in enumerate(entries):
        unknown = set(entry) - set(measurements)
        if unknown:
            raise BadInput(f"allowlist {kind}[{index}] names unknown fields: {', '.join(sorted(unknown))}")
        if all(measurements[name] == str(value).lower() for name, value in entry.items()):
            return True, f"measurements match allowlist entry {kind}[{index}] ({', '.join(sorted(entry))})"
    return False, f"measurements match none of the {len(entries)} allowed {kind} entries"


def _entries(policy: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    table = policy.get("measurements", {})
    if not isinstance(table, dict):
        raise BadInput("measurements in attestation policy data must be an object")
    entries = table.get(kind, [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) and e for e in entries):
        raise BadInput(f"allowlist {kind} must be a list of non-empty objects")
    return entries
