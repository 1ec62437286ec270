"""What leaves the edge, and only through here (S5): the release check of a run's outputs,
the receipt's predicate and signature, and the release directory the researcher fetches.

``JobManager`` walks a job and writes each step to the audit log before it acts (S7); the
``Releaser`` does the release steps it is told to, in the order the walk reads:
``check`` -> ``predicate`` -> (held, checked, decided) -> ``sign`` -> ``write`` ->
``write_anchored``; after a crash, ``written`` and ``matching_receipt``. Every value of
the predicate comes from the edge's own records (meter, release check, gate results),
never from what the job said about itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from collections.abc import Callable

from jupyter_rapha.protocol.anchor_proof import pending_anchor
from jupyter_rapha.protocol.jobspec import JobSpec
from jupyter_rapha.protocol.keys import PrivateKey
from jupyter_rapha.protocol.private import EPSILON_METRIC
from jupyter_rapha.protocol.receipt import envelope_digest, verify_receipt

from ..gates.pipeline import GateResult
from . import receipts
from .files import RECEIPT_FILE, Release, read_release, write_atomically, write_release
from .held import Held, held_dir, remove_held
from .metrics import check_metrics
from .weights import WeightsSummary, check_weights

if TYPE_CHECKING:
    from ..data.registry import DatasetRegistry
    from ..sandbox.runner import RunOutcome
    from ..store import JobRecord


def job_release_dir(jobs_dir: Path, job_id: str) -> Path:
    """Where a job's release (weights, metrics, signed receipt) is written before it leaves."""
    return jobs_dir / job_id / "release"


@dataclass(frozen=True)
class CheckedOutputs:
    """A run's outputs past the release check: the weights and their summary, the metrics as
    released, and the release gate's result (tensor count and size, metric names:
    evidence, never values)."""

    weights_bytes: bytes
    weights: WeightsSummary
    metrics: dict[str, list[float]]
    gate: GateResult


class Releaser:
    def __init__(self, *, jobs_dir: Path, datasets: DatasetRegistry, key: PrivateKey,
                 identity: Callable[[], dict[str, Any]], unsafe: tuple[str, ...], currency: str) -> None:
        self.jobs_dir, self.datasets, self.key, self.identity = jobs_dir, datasets, key, identity
        self.unsafe, self.currency = unsafe, currency

    def release_dir(self, job_id: str) -> Path:
        return job_release_dir(self.jobs_dir, job_id)

    # ---- a job that ran -------------------------------------------------------------
    def check(self, spec: JobSpec, run: RunOutcome) -> CheckedOutputs:
        """The weights and metrics against the job's output policy; ``GateDenied``
        (``ReleaseDenied``) when either may not leave."""
        # DP mode: the trainer's epsilon series is the only metric, whatever names the cell declared
        private = getattr(run, "privacy", None) is not None
        policy = spec.output_policy if not private else \
            replace(spec.output_policy, metric_names=(EPSILON_METRIC,))
        weights = check_weights(run.weights, policy)  # refuses a job that saved none
        metrics = check_metrics(run.metrics, policy)
        gate = GateResult("release", "pass", {"weights_bytes": weights.byte_size, "tensors": weights.tensors,
                                              "metric_names": sorted(metrics)})
        return CheckedOutputs(weights.checked, weights, metrics, gate)

    def predicate(self, job: JobRecord, spec: JobSpec, gates: list[GateResult], run: RunOutcome,
                  checked: CheckedOutputs, times: dict[str, str]) -> dict[str, Any]:
        return receipts.build_predicate(
            spec=spec, request_sha256=job.request_sha256, edge=self.identity(), dataset=self.datasets.get(spec.dataset),
            meter=run.meter, weights=checked.weights_bytes, weights_tensors=checked.weights.tensors,
            metrics=checked.metrics, gates=gates, unsafe=self.unsafe, times=times, currency=self.currency,
            privacy=getattr(run, "privacy", None), run_times=(run.started, run.finished))

    # ---- a held job let go ----------------------------------------------------------
    def sign(self, predicate: dict[str, Any], weights: bytes) -> dict[str, Any]:
        return receipts.sign(predicate, weights, self.key)

    def write(self, job_id: str, held: Held, document: dict[str, Any]) -> Release:
        """The durable point: from here a crash no longer loses the job, a restart finishes
        it from these files. Written anchor pending: the outbox anchors only after, so it
        never anchors a receipt the researcher cannot fetch. The held copy goes."""
        document = dict(document, anchor=pending_anchor(envelope_digest(document["envelope"])))
        write_release(self.release_dir(job_id), held.weights, held.metrics, document)
        remove_held(held_dir(self.jobs_dir, job_id))
        return Release(held.weights, held.metrics, document)

    def write_anchored(self, job_id: str, document: dict[str, Any]) -> None:
        write_atomically(self.release_dir(job_id) / RECEIPT_FILE, json.dumps(document, indent=2).encode())

    # ---- after a crash --------------------------------------------------------------
    def written(self, job_id: str) -> Release | None:
        return read_release(self.release_dir(job_id))

    def matching_receipt(self, release: Release) -> dict[str, Any] | None:
        """The predicate of a written release whose files are what its receipt signs, by the
        same verifier a researcher runs; None when any check fails."""
        check = verify_receipt(release.receipt, self.key.public, weights=release.weights, metrics=release.metrics)
        if not check.statement or any(c.status == "fail" for c in check.checks):
            return None
        return check.predicate
