"""The contract both sides share: job specs, canonical JSON, keys, DSSE, Merkle trees,
receipts and their verification. Pure code: no I/O, no Jupyter, no torch."""

from .canonical import canonical_json
from .checks import Verification
from .errors import RaphaError
from .jobspec import Budget, JobSpec, OutputPolicy, code_digest, parse_jobspec
from .keys import PrivateKey, PublicKey, load_public_key
from .merkle import MerkleTree, verify_inclusion
from .receipt import AnchorObservation, sign_receipt, verify_receipt

__all__ = [
    "AnchorObservation", "Budget", "JobSpec", "MerkleTree", "OutputPolicy", "PrivateKey", "PublicKey",
    "RaphaError", "Verification", "canonical_json", "code_digest", "load_public_key", "parse_jobspec",
    "sign_receipt", "verify_inclusion", "verify_receipt",
]
