"""Differentially private jobs (DP mode): what both sides agree on. Pure, no torch.

A job is in DP mode when its cell calls ``rapha.fit_private(...)``: the mode is read from
the cell's text, which the job spec signs, so the policy decides on it before anything
runs, and a cell cannot switch modes at run time (the edge tells the job process its
mode; ``rapha.loader`` is refused by the broker in DP mode, ``rapha.fit_private`` by the
runtime outside it). In DP mode the researcher's code never receives a record: it hands
over the model and the loss, exported, and the edge's own trainer (DP-SGD) produces the
only weights that leave.

The receipt's ``privacy`` section (predicate 1.4), written by the edge from its trainer:

    {"mechanism": "DP-SGD", "epsilon_target", "epsilon_spent", "delta", "noise_multiplier",
     "max_grad_norm", "sampling_rate", "steps", "steps_planned", "epochs", "batch_size",
     "lr", "optimiser", "accountant", "accountant_version", "program_sha256",
     "parameters_sha256", "loss_released": false}

``parameters_sha256`` is ``state_digest`` of the trainer's own parameters when it stopped;
the released weights must have that digest (``rapha verify`` checks it). No training loss
is released in DP mode (``loss_released`` false): the metrics are the epsilon spent after
each epoch, the only numbers the trainer reports.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import struct
from typing import Any

MODE_DP = "dp"
MODE_STANDARD = "standard"
MECHANISM = "DP-SGD"
PRIVACY_SINCE_MINOR = 4
EPSILON_METRIC = "epsilon"
OPTIMISERS = ("sgd", "adam")
# rapha.fit_private's hyperparameters, as the job hands them to the edge (out/private.json)
MAX_EPOCHS = 1000
MAX_BATCH_SIZE = 4096
_NUMBERS = ("epsilon_target", "epsilon_spent", "delta", "noise_multiplier", "max_grad_norm", "sampling_rate", "lr")
_COUNTS = ("steps", "steps_planned", "epochs", "batch_size")
_DIGESTS = ("program_sha256", "parameters_sha256")


def calls_fit_private(code: str) -> bool:
    """True when the cell calls ``rapha.fit_private``: the job's mode. A cell that does
    not parse is in standard mode (the scan gate refuses it anyway)."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return any(isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
               and node.func.attr == "fit_private" and isinstance(node.func.value, ast.Name)
               and node.func.value.id == "rapha" for node in ast.walk(tree))


def job_mode(code: str) -> str:
    return MODE_DP if calls_fit_private(code) else MODE_STANDARD


class PrivateRequestError(ValueError):
    """``out/private.json`` (the hyperparameters the job handed over) is malformed."""


def parse_private_request(doc: Any) -> dict[str, Any]:
    """The hyperparameters of ``rapha.fit_private``, checked: the job process wrote them,
    so they are hostile input; the edge's trainer takes nothing else from the job."""
    keys = {"epochs", "batch_size", "lr", "max_grad_norm", "optimiser"}
    if not isinstance(doc, dict) or set(doc) != keys:
        raise PrivateRequestError("the private training request names other settings than fit_private's")
    epochs, batch_size = doc["epochs"], doc["batch_size"]
    if not _count(epochs) or not 1 <= epochs <= MAX_EPOCHS:
        raise PrivateRequestError(f"epochs must be a whole number from 1 to {MAX_EPOCHS}")
    if not _count(batch_size) or not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise PrivateRequestError(f"batch_size must be a whole number from 1 to {MAX_BATCH_SIZE}")
    for name in ("lr", "max_grad_norm"):
        if not _number(doc[name]) or not 0 < doc[name] <= 1e6:
            raise PrivateRequestError(f"{name} must be a positive number")
    if doc["optimiser"] not in OPTIMISERS:
        raise PrivateRequestError(f"optimiser must be one of {', '.join(OPTIMISERS)}")
    return {"epochs": epochs, "batch_size": batch_size, "lr": float(doc["lr"]),
            "max_grad_norm": float(doc["max_grad_norm"]), "optimiser": doc["optimiser"]}


def privacy_problem(section: Any) -> str:
    """What is wrong with a receipt's privacy section ("" if nothing)."""
    if not isinstance(section, dict):
        return "the receipt has no privacy section"
    if section.get("mechanism") != MECHANISM:
        return f"the privacy section names no {MECHANISM} mechanism"
    for name in _NUMBERS:
        if not _number(section.get(name)) or section[name] < 0:
            return f"the privacy section's {name} is not a number"
    for name in _COUNTS:
        if not _count(section.get(name)):
            return f"the privacy section's {name} is not a count"
    for name in _DIGESTS:
        value = section.get(name)
        if not isinstance(value, str) or len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            return f"the privacy section's {name} is not a sha256 digest"
    if not isinstance(section.get("accountant"), str) or not isinstance(section.get("accountant_version"), str):
        return "the privacy section names no accountant"
    if section["epsilon_spent"] > section["epsilon_target"] * (1 + 1e-9):
        return "the privacy section spent more epsilon than its target"
    if section["noise_multiplier"] <= 0 or section["steps"] > section["steps_planned"]:
        return "the privacy section's noise or steps are out of range"
    return ""


def privacy_summary(section: dict[str, Any]) -> str:
    """One line for ``rapha verify`` and the widget."""
    return (f"{section['mechanism']}: epsilon {section['epsilon_spent']:.4g} spent of {section['epsilon_target']:.3g}"
            f" (delta {section['delta']:.3g}), noise multiplier {section['noise_multiplier']:.3g}, "
            f"clip {section['max_grad_norm']:.3g}, sampling rate {section['sampling_rate']:.3g}, "
            f"{section['steps']} steps, accountant {section['accountant']} {section['accountant_version']}, "
            f"program {section['program_sha256'][:12]}")


def state_digest(safetensors: bytes) -> str:
    """SHA-256 over the tensors of a safetensors file, sorted by name: name, dtype, shape
    and raw bytes of each, independent of the header's order and padding. The trainer
    records it for its own parameters; the released weights must match it."""
    (length,) = struct.unpack("<Q", safetensors[:8])
    header = json.loads(safetensors[8:8 + length])
    body = memoryview(safetensors)[8 + length:]
    digest = hashlib.sha256()
    for name in sorted(k for k in header if k != "__metadata__"):
        entry = header[name]
        start, end = entry["data_offsets"]
        meta = json.dumps([name, entry["dtype"], entry["shape"]], separators=(",", ":")).encode()
        digest.update(struct.pack("<Q", len(meta)) + meta + struct.pack("<Q", end - start))
        digest.update(body[start:end])
    return digest.hexdigest()


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
