"""Membership inference on the released model, and its capacity, before any release.

A model that remembers its training records gives them lower loss than records of the
same population it never saw. The broker held back such records (``data/holdback.py``);
here the exported program (``rapha.save``, ``release/program.py``) is evaluated on the
records the job used and on the held-back ones, and the loss-threshold attack's AUC and
TPR at 1 % FPR are reported, the figures SACRO-ML reports for it. Nothing of the job's
Python runs: the program is a graph of tensor operators with the released weights, and
those weights are checked to be exactly the released ones (a program that carries other
weights than those released would let a memorising model pass a check on a harmless one).

The attack takes whichever direction of the loss separates the two sets better: a model
shaped so that its training records score worse is as revealing as one where they score
better. Figures are rounded: every number that leaves the edge is a channel.

Stronger attacks (offline LiRA, RMIA) need reference models trained the same way as the
job's, that is running the job's training code again, which this process must not do;
they are not run. A program that does not use its released parameters, or whose output
does not depend on its input, cannot be judged this way and is "not_checkable".

Pure over records and a program path; importable without the edge service, for the
check process.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any
from collections.abc import Mapping, Sequence

import numpy as np

from jupyter_rapha.protocol.errors import Fault

ATTACK = "loss_threshold"
TARGET_FPR = 0.01
BATCH_RECORDS = 256
PROBE_RECORDS = 32  # records whose gradients show that every released parameter counts
DIGITS = 3
WEIGHTS_FILE = "weights.safetensors"
Record = Mapping[str, np.ndarray]


class MembershipFault(Fault):
    """The check could not be run honestly (the program's weights are not the released
    ones, the released weights are missing); the release must be refused (S4)."""


def membership_figures(program_path: Path | str | None, used: Sequence[Record], held_back: Sequence[Record],
                       schema: Mapping[str, Any], *, released: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``{"status", "auc", "tpr_at_1pct_fpr", "records_used", "holdback_size", "attack", ...}``.

    ``released``: the released weights; by default read from ``weights.safetensors``
    beside the program. ``schema``: field name -> ``{"dtype", "shape", "kind"}`` (the
    job's ``rapha.schema``) or the dataset's ``FieldSpec``s."""
    started = time.monotonic()
    figures = _evaluate(Path(program_path) if program_path is not None else None, used, held_back, schema, released)
    figures.update({"records_used": len(used), "holdback_size": len(held_back), "attack": ATTACK,
                    "seconds": round(time.monotonic() - started, 3)})
    return figures


def _evaluate(program_path: Path | None, used: Sequence[Record], held_back: Sequence[Record],
              schema: Mapping[str, Any], released: Mapping[str, Any] | None) -> dict[str, Any]:
    from .program import UnsafeProgram, load_program

    if not held_back:
        return not_checkable("no records were held back from the job (the cohort is too small)")
    if not used:
        return not_checkable("the job used no records")
    if program_path is None or not program_path.is_file():
        return not_checkable("the model could not be exported at rapha.save")
    features, label = _fields(schema)
    if not features or label is None:
        return not_checkable("the schema has no feature and label to compute a loss on")
    try:
        program = load_program(program_path)
    except UnsafeProgram as unsafe:
        return not_checkable(unsafe.message)
    check_released_weights(program, released if released is not None else _released_beside(program_path))
    module = program.module()
    reason = _unjudgeable(module, used[:PROBE_RECORDS], features, label)
    if reason is not None:
        return not_checkable(reason)
    used_loss, held_back_loss = (_losses(module, records, features, label) for records in (used, held_back))
    if used_loss is None or held_back_loss is None:
        return not_checkable("no loss is defined for this model's output against the label")
    return {"status": "checked", **attack_figures(used_loss, held_back_loss)}


def not_checkable(reason: str) -> dict[str, Any]:
    return {"status": "not_checkable", "reason": reason, "auc": None, "tpr_at_1pct_fpr": None}


def attack_figures(member_loss: np.ndarray, nonmember_loss: np.ndarray) -> dict[str, Any]:
    """AUC and TPR at 1 % FPR of the loss-threshold attack, in its better direction."""
    lower_is_member = roc_auc(-member_loss, -nonmember_loss)
    if lower_is_member >= 0.5:
        auc, tpr = lower_is_member, tpr_at_fpr(-member_loss, -nonmember_loss, TARGET_FPR)
    else:
        auc, tpr = 1.0 - lower_is_member, tpr_at_fpr(member_loss, nonmember_loss, TARGET_FPR)
    members, nonmembers = len(member_loss), len(nonmember_loss)
    # the spread of the AUC of a model that learnt nothing about its records, for the reviewer
    null_sd = math.sqrt((members + nonmembers + 1) / (12 * members * nonmembers))
    return {"auc": round(auc, DIGITS), "tpr_at_1pct_fpr": round(tpr, DIGITS), "auc_null_sd": round(null_sd, DIGITS)}


def roc_auc(member_score: np.ndarray, nonmember_score: np.ndarray) -> float:
    """P(member scores above non-member), ties counting half (Mann-Whitney U / n1 n2)."""
    scores = np.concatenate([member_score, nonmember_score]).astype(np.float64)
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts + 1) / 2.0  # 1-based average rank of each run of ties
    ranks[order] = np.repeat(average, counts)
    members = len(member_score)
    u = ranks[:members].sum() - members * (members + 1) / 2.0
    return float(u / (members * len(nonmember_score)))


def tpr_at_fpr(member_score: np.ndarray, nonmember_score: np.ndarray, target_fpr: float) -> float:
    """The highest true-positive rate of a threshold ``score > t`` whose false-positive
    rate is at most ``target_fpr`` (the ROC's step, not an interpolation: with 50
    held-back records the only such threshold lies above every one of them)."""
    nonmembers = np.sort(np.asarray(nonmember_score, dtype=np.float64))[::-1]
    allowed = int(math.floor(target_fpr * len(nonmembers) + 1e-9))  # false positives allowed
    threshold = nonmembers[allowed] if allowed < len(nonmembers) else -np.inf
    return float(np.mean(np.asarray(member_score, dtype=np.float64) > threshold))


def capacity(released: Mapping[str, Any], records_used: int) -> dict[str, Any]:
    """Parameters released per record used: a model with more numbers than records can
    hold them all, whatever the attacks say."""
    parameters = int(sum(math.prod(tuple(value.shape)) for value in released.values()))
    # a job that used no records released nothing learnt from them: every parameter counts
    per_record = round(parameters / max(records_used, 1), DIGITS)
    return {"parameters": parameters, "records_used": records_used, "parameters_per_record": float(per_record)}


def check_released_weights(program: Any, released: Mapping[str, Any]) -> None:
    """The program's weights are exactly the released tensors, names and values."""
    import torch

    state = program.state_dict
    if set(state) != set(released):
        raise MembershipFault("the exported program's weights are not the released ones")
    for name, value in released.items():
        tensor = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.asarray(value))
        if not torch.equal(state[name].detach().to("cpu"), tensor):
            raise MembershipFault("the exported program's weights are not the released ones")


def _released_beside(program_path: Path) -> Mapping[str, Any]:
    from safetensors.torch import load_file

    path = program_path.parent / WEIGHTS_FILE
    if not path.is_file():
        raise MembershipFault("the released weights are not beside the exported program")
    return load_file(str(path))


def _fields(schema: Mapping[str, Any]) -> tuple[list[str], str | None]:
    kinds = {name: spec.get("kind") if isinstance(spec, Mapping) else getattr(spec, "kind", None)
             for name, spec in schema.items()}
    labels = [name for name, kind in kinds.items() if kind == "label"]
    return [name for name, kind in kinds.items() if kind == "feature"], labels[0] if labels else None


def _inputs(records: Sequence[Record], features: list[str]) -> list[Any]:
    import torch

    return [torch.from_numpy(np.stack([np.asarray(record[name]) for record in records])) for name in features]


def _output(module: Any, records: Sequence[Record], features: list[str]) -> Any:
    output = module(*_inputs(records, features))
    while isinstance(output, (tuple, list)) and output:
        output = output[0]
    return output


def _losses(module: Any, records: Sequence[Record], features: list[str], label: str) -> np.ndarray | None:
    import torch

    parts = []
    with torch.no_grad():
        for start in range(0, len(records), BATCH_RECORDS):
            chunk = records[start:start + BATCH_RECORDS]
            labels = torch.from_numpy(np.stack([np.asarray(record[label]) for record in chunk]))
            loss = per_record_loss(_output(module, chunk, features), labels)
            if loss is None:
                return None
            parts.append(loss.double().numpy())
    return np.concatenate(parts)


def per_record_loss(output: Any, labels: Any) -> Any:
    """Cross-entropy for class labels (logits ``(N, C)``, or one logit for 0/1 labels),
    mean squared error otherwise; None when the output does not fit the label."""
    import torch
    from torch.nn import functional

    if not isinstance(output, torch.Tensor) or output.ndim == 0 or output.shape[0] != labels.shape[0]:
        return None
    output = output.double()
    rows = output.reshape(output.shape[0], -1)
    if not labels.dtype.is_floating_point and labels.ndim == 1:
        classes = rows.shape[1]
        if classes >= 2 and 0 <= int(labels.min()) and int(labels.max()) < classes:
            return functional.cross_entropy(rows, labels.long(), reduction="none")
        if classes == 1 and set(labels.tolist()) <= {0, 1}:
            return functional.binary_cross_entropy_with_logits(rows[:, 0], labels.double(), reduction="none")
        return None
    targets = labels.double().reshape(labels.shape[0], -1)
    if targets.shape != rows.shape:
        return None
    return ((rows - targets) ** 2).mean(dim=1)


def _unjudgeable(module: Any, probe: Sequence[Record], features: list[str], label: str) -> str | None:
    """Why the loss of this program says nothing about the released weights, or None.

    A program whose output ignores its input, or that leaves a released parameter out of
    its output, could stand beside weights that remember their records and still score
    like chance: the weights would be judged through a decoy."""
    import torch

    parameters = dict(module.named_parameters())
    for tensor in parameters.values():
        tensor.requires_grad_(True)
        tensor.grad = None
    with torch.enable_grad():
        output = _output(module, probe, features)
        if not isinstance(output, torch.Tensor) or not output.is_floating_point():
            return "the model's output is not a tensor of numbers"
        if len(probe) > 1 and bool((output == output[:1]).all()):
            return "the model's output does not depend on its input"
        labels = torch.from_numpy(np.stack([np.asarray(record[label]) for record in probe]))
        loss = per_record_loss(output, labels)
        if loss is None:
            return "no loss is defined for this model's output against the label"
        loss.sum().backward()
    unused = [name for name, tensor in parameters.items() if tensor.grad is None or not bool(tensor.grad.any())]
    return "some released parameters do not affect the model's output" if unused else None
