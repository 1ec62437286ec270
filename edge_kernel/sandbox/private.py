"""The runner's side of a DP job: what passes from the job process to the edge's trainer,
and what the trainer leaves.

The job process of a DP job ends with its programs and its hyperparameters in ``out/``
(``rapha.fit_private``); everything there is hostile. This module reads them as such
(plain files of bounded size, the request parsed strictly), writes the trainer's
directory (``trainer.json`` with the policy's budget, the programs), and afterwards reads
the trainer's ``out/``: its weights, the model program carrying them, the epsilon series
and the privacy section, which is checked for shape and against the policy's target
before it can reach a receipt. The weights must have the digest the trainer recorded for
its own parameters.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_rapha.protocol import bounded
from jupyter_rapha.protocol.errors import SandboxFault
from jupyter_rapha.protocol.jobspec import JobSpec
from jupyter_rapha.protocol.private import (EPSILON_METRIC, PrivateRequestError, parse_private_request,
                                            privacy_problem, state_digest)

from ..gates.obligations import PrivacyBudget
from ..release.outputs import OutputRefused, read_outputs, read_plain
from ..wire.outputs import PRIVATE_PROGRAM_FILE, PRIVATE_REQUEST_FILE, PROGRAM_FILE

TRAINER_MODULE = "edge_kernel.trainer.train_main"
REQUEST_BYTES = 4096
REFUSAL_BYTES = 4096
PROGRAM_SLACK_BYTES = 16 * 1024 * 1024


class NotTrainable(SandboxFault):
    """The job handed over nothing the trainer could take; the reason may leave."""


@dataclass(frozen=True)
class TrainerResult:
    weights: bytes | None
    metrics: dict[str, list[float]]
    program: bytes | None
    privacy: dict[str, Any] | None
    refusal: str | None = None  # the trainer refused the program before any record was read


def trainer_command(python: str, directory: Path, fd: int, parent_pid: int | None) -> list[str]:
    command = [python, "-P", "-s", "-B", "-m", TRAINER_MODULE, "--dir", str(directory), "--fd", str(fd)]
    return command + ["--parent-pid", str(parent_pid)] if parent_pid is not None else command


def prepare_trainer(job_dir: Path, train_dir: Path, spec: JobSpec, schema: dict[str, Any],
                    budget: PrivacyBudget, cohort_size: int, max_epochs: int | None) -> None:
    """Read what ``rapha.fit_private`` left (hostile) and write the trainer's directory."""
    limit = 2 * spec.output_policy.max_weights_bytes + PROGRAM_SLACK_BYTES
    out = os.open(job_dir / "out", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW) if (job_dir / "out").is_dir() \
        else None
    if out is None:
        raise NotTrainable("the cell ended without calling rapha.fit_private")
    try:
        raw_request = read_plain(out, PRIVATE_REQUEST_FILE, REQUEST_BYTES)
        loss_program = read_plain(out, PRIVATE_PROGRAM_FILE, limit)
        model_program = read_plain(out, PROGRAM_FILE, limit)
    finally:
        os.close(out)
    if raw_request is None or loss_program is None or model_program is None:
        raise NotTrainable("the cell ended without calling rapha.fit_private")
    try:
        request = parse_private_request(bounded.loads(raw_request, what="out/private.json", error=OutputRefused))
    except (PrivateRequestError, OutputRefused) as bad:
        raise NotTrainable(f"rapha.fit_private's settings were refused: {bad}") from None
    if max_epochs is not None and request["epochs"] > max_epochs:
        raise NotTrainable(f"rapha.fit_private asks for {request['epochs']} epochs; the policy allows {max_epochs}")
    train_dir.mkdir(parents=True)
    (train_dir / "private.pt2").write_bytes(loss_program)
    (train_dir / "model.pt2").write_bytes(model_program)
    fields = [name for name in schema]
    config = {"epsilon": budget.epsilon, "delta": budget.delta, "request": request, "fields": fields,
              "cohort_size": cohort_size, "program_sha256": hashlib.sha256(loss_program).hexdigest()}
    (train_dir / "trainer.json").write_text(json.dumps(config, indent=2), "utf-8")


def read_trainer(train_dir: Path, spec: JobSpec, budget: PrivacyBudget, *, completed: bool) -> TrainerResult:
    """The trainer's outputs, checked; a refusal's reason when it refused the program."""
    refusal = _refusal(train_dir)
    if refusal is not None or not completed:
        return TrainerResult(None, {}, None, None, refusal)
    outputs = read_outputs(train_dir, spec, completed=True)
    out = os.open(train_dir / "out", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        raw = read_plain(out, "privacy.json", REQUEST_BYTES)
    finally:
        os.close(out)
    if outputs.weights is None or raw is None:
        raise OutputRefused("the trainer left no weights or no privacy section")
    privacy = bounded.loads(raw, what="privacy.json", error=OutputRefused)
    problem = privacy_problem(privacy)
    if problem:
        raise OutputRefused(problem)
    if privacy["epsilon_target"] != budget.epsilon or privacy["delta"] != budget.delta:
        raise OutputRefused("the trainer's privacy section names another budget than the policy's")
    if privacy["parameters_sha256"] != state_digest(outputs.weights):
        raise OutputRefused("the weights are not the trainer's own parameters")
    metrics = {EPSILON_METRIC: outputs.metrics.get(EPSILON_METRIC, [])}
    return TrainerResult(outputs.weights, metrics, outputs.program, privacy)


def _refusal(train_dir: Path) -> str | None:
    path = train_dir / "out" / "refusal.json"
    if not path.is_file() or path.is_symlink():
        return None
    out = os.open(train_dir / "out", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        raw = read_plain(out, "refusal.json", REFUSAL_BYTES)
    finally:
        os.close(out)
    doc = bounded.loads(raw or b"{}", what="refusal.json", error=OutputRefused)
    reason = doc.get("reason") if isinstance(doc, dict) else None
    return f"the edge's trainer cannot train this model privately: {reason}" if isinstance(reason, str) \
        else "the edge's trainer cannot train this model privately"
