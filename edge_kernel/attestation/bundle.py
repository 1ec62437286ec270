"""Reading the attestation inputs a hospital keeps on disk: the offline collateral bundle
(TCB Info and CRLs fetched from Intel's PCS on a connected machine and carried over) and
the attestation policy data (allowlist, debug and TCB acceptance)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jupyter_rapha.protocol.attestation import CollateralProvider, OfflineCollateral
from jupyter_rapha.protocol.errors import BadInput


def load_collateral_bundle(path: Path | None) -> CollateralProvider | None:
    """None when no bundle is configured: the verdict then says "unknown (no collateral)"."""
    if path is None:
        return None
    return OfflineCollateral.from_json(_read_json(Path(path), "collateral bundle"))


def load_attestation_policy(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    data = _read_json(Path(path), "attestation policy data")
    if not isinstance(data, dict):
        raise BadInput(f"attestation policy data {Path(path).name} must be a JSON object")
    return data


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_bytes())
    except OSError as exc:
        raise BadInput(f"cannot read the {what} {path.name}: {exc.strerror}") from exc
    except ValueError as exc:
        raise BadInput(f"the {what} {path.name} is not valid JSON") from exc
