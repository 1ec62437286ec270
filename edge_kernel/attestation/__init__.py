"""Attestation at the edge: backends that produce quotes bound to a job (the gate that
checks them is ``gates/attestation.py``)."""

from .backends import (
    BACKEND_CHOICES, GRAMINE_ATTESTATION_ROOT, TSM_REPORT_ROOT, AttestationBackend, AttestationFault,
    SgxGramineBackend, TdxBackend, UnsafeSoftwareBackend, select_backend,
)
from .bundle import load_attestation_policy, load_collateral_bundle
from .measurement import runtime_measurement

__all__ = [
    "BACKEND_CHOICES", "GRAMINE_ATTESTATION_ROOT", "TSM_REPORT_ROOT", "AttestationBackend", "AttestationFault",
    "SgxGramineBackend", "TdxBackend", "UnsafeSoftwareBackend", "load_attestation_policy",
    "load_collateral_bundle", "runtime_measurement", "select_backend",
]
