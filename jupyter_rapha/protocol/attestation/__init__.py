"""Attestation evidence: Intel TDX / SGX DCAP quotes and the unsafe software stand-in,
their binding to one job, and a pure verifier with one named check per fact.

    verify_quote(quote, expected_report_data=..., now=..., allowlist=..., collateral=None)

No I/O: callers read quote files, collateral bundles and policy data and pass them in.
"""

from .allowlist import DEFAULT_POLICY, check_allowlist
from .binding import BINDING_PURPOSE, RuntimeMeasurement, binding_commitment, report_data_for
from .collateral import NO_COLLATERAL, CollateralProvider, CollateralResult, OfflineCollateral
from .intel_root import INTEL_SGX_ROOT_CA_PEM, INTEL_SGX_ROOT_CA_SHA256
from .quote import Quote, QuoteFormatError, parse_quote
from .software import SOFTWARE_QUOTE_FORMAT, UNSAFE_LABEL, make_software_quote, parse_software_quote
from .verifier import QuoteVerification, verify_quote

__all__ = [
    "BINDING_PURPOSE", "DEFAULT_POLICY", "INTEL_SGX_ROOT_CA_PEM", "INTEL_SGX_ROOT_CA_SHA256", "NO_COLLATERAL",
    "SOFTWARE_QUOTE_FORMAT", "UNSAFE_LABEL", "CollateralProvider", "CollateralResult", "OfflineCollateral",
    "Quote", "QuoteFormatError", "QuoteVerification", "RuntimeMeasurement", "binding_commitment",
    "check_allowlist", "make_software_quote", "parse_quote", "parse_software_quote", "report_data_for",
    "verify_quote",
]
