"""The job manager: takes an authenticated job through gates, runner, release, receipt
and anchor, writing each step to the audit log before doing it (S7).

One worker thread runs jobs one at a time: an edge is one appliance and a job may use all
of it. Any unexpected error fails the job with a generic reason (S4); details stay in the
edge's own log.

After a crash (``recover``): job processes left running are stopped before anything else
runs; a job whose release was written (signed receipt, weights, metrics) is finished from
those files; a job cut off before that fails, its directory is removed, and the records
it had read stay counted against it (its progress keeps ``records_used``).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from jupyter_rapha.protocol.anchor_proof import is_pending, pending_anchor
from jupyter_rapha.protocol.contract import CANCELLABLE_STATES, PRIVACY_PROGRESS
from jupyter_rapha.protocol.errors import GateDenied, NotFound, RaphaError, StorageUnavailable
from jupyter_rapha.protocol.private import job_mode
from jupyter_rapha.protocol.jobspec import JobSpec, parse_jobspec
from jupyter_rapha.protocol.keys import PrivateKey
from jupyter_rapha.protocol.receipt import envelope_digest

from jupyter_rapha.protocol.approval import ApprovalRefused, RunApproval

from .approval_desk import (APPROVALS_FILE, AWAITING, REQUEST_FILE, approval_dir, read_kept, receipt_section,
                            write_kept)
from .release import receipts
from .anchor.outbox import Outbox
from .audit import AuditLog, utc_now
from .gates.obligations import Limits, enforceable
from .data.cohort import CohortSizes
from .data.provenance import save_provenance
from .data.reload import reading_digest
from .data.registry import Dataset, DatasetRegistry
from .gates.pipeline import Gate, GateContext, GateResult, run_gates
from .health import StorageHealth, os_error_problem
from .held_jobs import CheckRunner, HeldJobs, ReleasePolicy, ReviewRule
from .release.disclosure import HELD_PROGRESS
from .release.files import Release
from .release.held import Held, held_dir, read_held, remove_held
from .release.releaser import Releaser
from .release.receipts import settlement
from .researchers import Researcher, ResearcherRegistry
from .run_approval import (PENDING, REJECT, StewardVote, admit, approval_outcome, kept_entry, registered_stewards,
                           votes_of)
from .sandbox.wan import WanGate
from .settings import Settings
from .settlement import Settlement
from .store import JobRecord, JobStore

if TYPE_CHECKING:  # the runner pulls in every data source: imported when a job first runs
    from .sandbox.runner import ProgressCallback, RunOutcome

log = logging.getLogger(__name__)
CANCELLED = "cancelled by the researcher"
# What the researcher reads about a job an edge restart or stop cut off (no internals).
CUT_OFF = ("the edge stopped while the job ran, so its results were discarded; the records it had "
           "already read stay counted. Submit the job again")


class Runner(Protocol):
    """Runs one allowed job in the sandbox (``sandbox.runner.JobRunner``)."""

    def run(self, spec: JobSpec, limits: Limits | None, cancel: threading.Event | None,
            on_progress: ProgressCallback | None) -> RunOutcome: ...


class JobManager:
    """The edge's collaborators a job passes through, each named: ``Edge`` composes them."""

    def __init__(self, *, settings: Settings, store: JobStore, audit: AuditLog, health: StorageHealth,
                 researchers: ResearcherRegistry, datasets: DatasetRegistry, cohort_sizes: CohortSizes,
                 gates: list[Gate], runner: Runner, releaser: Releaser, outbox: Outbox, key: PrivateKey,
                 wan: WanGate | None, checks: CheckRunner, release_policy: ReleasePolicy,
                 reviews: ReviewRule | None = None, settlement: Settlement | None = None) -> None:
        self.settings, self.store, self.audit, self.health = settings, store, audit, health
        self.settlement = settlement
        if settlement is not None:
            store.on_end = self._settle_end
        self.researchers, self.datasets, self.cohort_sizes = researchers, datasets, cohort_sizes
        self.gates, self.runner, self.outbox, self.wan = gates, runner, outbox, wan
        self.releaser, self.key = releaser, key
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rapha-job")
        self._cancels: dict[str, threading.Event] = {}
        self._claim = threading.Lock()
        self._active: set[str] = set()  # jobs a worker has taken up; only it may end them
        self._reported: dict[str, dict[str, Any]] = {}  # the runner's latest counters per running job
        self._stopping = False  # set by shutdown: a job stopped now was stopped by the edge
        self.held = HeldJobs(jobs_dir=settings.jobs_dir, store=store, audit=audit, checks=checks,
                             policy=release_policy, reviews=reviews, release=self._sign_and_release)

    # ---- intake -------------------------------------------------------------------
    def submit(self, spec: JobSpec, researcher: Researcher, request_sha256: str) -> JobRecord:
        # Failing storage takes no job: what the job writes, audit entries too, could be lost.
        self._check_accepting_jobs()
        self.audit.append("job.submit", job_id=spec.job_id, actor=researcher.key_id,
                          detail={"dataset": spec.dataset, "code_sha256": spec.code_sha256,
                                  "request_sha256": request_sha256})
        if self.wan is not None:
            self.wan.check_open_for_jobs()  # a halted appliance takes no new job (fail closed)
        job, created = self.store.create(spec, request_sha256)
        if created:
            self._enqueue(job.job_id)
        return job

    def cancel(self, job_id: str, researcher: Researcher) -> JobRecord:
        """A queued job ends ``cancelled`` at once; a running one when the runner next
        polls (within a second). A job that already ended keeps its state."""
        job = self.store.get(job_id, researcher.key_id)
        if job.state not in CANCELLABLE_STATES:  # ended, or held: held outputs are decided, never withdrawn
            return job
        self.audit.append("job.cancel", job_id=job_id, actor=researcher.key_id)
        with self._claim:  # the worker claims a job under the same lock: one of us ends it, never both
            event = self._cancels.get(job_id)
            if event is not None:
                event.set()
            if job_id not in self._active and self.store.get(job_id).state in ("submitted", AWAITING):
                self.store.transition(job_id, "cancelled", reasons=[CANCELLED])
        return self.store.get(job_id)

    def recover(self) -> None:
        """After a restart, before any job runs: stop what the last run left behind (a
        SandboxFault stops the start when that fails); finish releases already written;
        fail jobs cut off before; queued jobs run again from the gates; jobs awaiting a data
        steward's approval keep waiting."""
        from .sandbox.lifeline import stop_leftovers

        for job_id in stop_leftovers(self.settings.jobs_dir):
            self.audit.append("job.stop_leftover", job_id=job_id)
        for job in self.store.in_state("running"):
            self._recover_running(job)
        for job in self.store.in_state("held"):
            release = self.releaser.written(job.job_id)
            if release is not None:  # released and signed before the stop: finish it
                if not self._resume_release(job, release):
                    self._fail_held(job.job_id)
                else:
                    remove_held(held_dir(self.settings.jobs_dir, job.job_id))
            else:  # checks not finished run again; a job waiting for review keeps waiting
                self._executor.submit(self._decide_safely, job.job_id)
        for job in self.store.in_state("submitted"):
            self._enqueue(job.job_id)

    def _recover_running(self, job: JobRecord) -> None:
        """A job left ``running``: released, held (its outputs written but the state not
        yet), or cut off."""
        release = self.releaser.written(job.job_id)
        if release is not None:
            if not self._resume_release(job, release):
                self._fail_cut_off(job)
            return
        held = read_held(held_dir(self.settings.jobs_dir, job.job_id))
        if held is None:
            self._fail_cut_off(job)
            return
        self.audit.append("job.hold", job_id=job.job_id, detail={"resumed": True})
        self.store.transition(job.job_id, "held", progress=job.progress)
        self._executor.submit(self._decide_safely, job.job_id)

    # ---- held jobs: the disclosure checks, the release decision, output checkers ----
    def held_jobs(self) -> list[JobRecord]:
        return self.held.held_jobs()

    def held_detail(self, job_id: str) -> dict[str, Any]:
        return self.held.held_detail(job_id)

    def decide_held(self, job_id: str, decision: Any) -> JobRecord:
        try:
            return self.held.decide_held(job_id, decision)
        except RaphaError:
            raise  # bad input (unknown job, second vote, ...): a clear error and nothing changed
        except Exception:
            log.exception("job %s: the release decision failed", job_id)
            self._fail_held(job_id)
            raise

    def _decide_safely(self, job_id: str) -> None:
        """The checks and decision of a held job taken up again after a restart."""
        try:
            self.held.check_and_decide(job_id)
        except Exception:  # S4: an edge fault on a held job removes its outputs, never releases them
            log.exception("job %s: the held job's checks or decision failed", job_id)
            self._fail_held(job_id)

    def _fail_held(self, job_id: str) -> None:
        try:
            self.audit.append("job.fail", job_id=job_id, detail={"reason": "fault while held"})
            remove_held(held_dir(self.settings.jobs_dir, job_id))
            self.store.transition(job_id, "failed", reasons=["internal error at the edge while the outputs were "
                                                             "checked; nothing was released"])
        except Exception:
            log.exception("job %s could not be marked failed", job_id)

    def shutdown(self) -> None:
        """Stop: queued jobs stay queued for the next start; a running job is stopped; a
        held job stays held (checks cut off run again at the next start)."""
        self._stopping = True
        self._executor.shutdown(wait=False, cancel_futures=True)
        for event in list(self._cancels.values()):
            event.set()
        self.held.stop()  # a held job's checks in progress: killed, the job stays held
        self._executor.shutdown(wait=True)

    def _enqueue(self, job_id: str) -> None:
        self._cancels[job_id] = threading.Event()
        self._executor.submit(self._process_safely, job_id)

    # ---- the walk of one job ------------------------------------------------------
    def _process_safely(self, job_id: str) -> None:
        with self._claim:
            if self.store.get(job_id).state != "submitted":
                self._cancels.pop(job_id, None)
                return  # cancelled while it waited in the queue
            self._active.add(job_id)
        try:
            self._process(job_id)
        except Exception as exc:  # S4: an unexpected error fails the job, it never passes it
            log.exception("job %s failed", job_id)
            exc = self._as_storage_fault(exc)
            reason = exc.diagnostics() if isinstance(exc, RaphaError) else "internal error at the edge"
            try:
                self.audit.append("job.fail", job_id=job_id, detail={"fault": type(exc).__name__})
                remove_held(held_dir(self.settings.jobs_dir, job_id))  # a fault releases nothing
                self.store.transition(job_id, "failed", reasons=[reason])
            except StorageUnavailable:  # the database takes no writes: recover() fails it at restart
                log.error("job %s could not be marked failed: the edge's storage takes no writes", job_id)
        finally:
            self._cancels.pop(job_id, None)
            self._active.discard(job_id)
            self._reported.pop(job_id, None)

    def _as_storage_fault(self, exc: Exception) -> Exception:
        """A full or failing jobs directory fails the job with that reason (not "internal
        error") and stops new jobs until the storage takes writes again."""
        problem = os_error_problem(exc)
        if problem is None:
            return exc
        self.health.report(problem)
        return StorageUnavailable(problem)

    def _process(self, job_id: str) -> None:
        job = self.store.get(job_id)
        spec = parse_jobspec(job.spec)
        researcher = self.researchers.by_key_id(job.researcher_key_id)
        dataset = self._dataset_or_none(spec.dataset)
        ctx = GateContext(spec, job.request_sha256, researcher, dataset, self.settings,
                          extra=self._gate_extras(dataset))
        self.audit.append("gates.start", job_id=job_id)
        outcome = run_gates(self.gates, ctx)
        entries = receipts.gate_entries(outcome.results)
        self.audit.append("gates.done", job_id=job_id,
                          detail={"allowed": outcome.allowed, "gates": entries})
        if not outcome.allowed:
            self.store.transition(job_id, "denied", gates=entries, reasons=outcome.reasons)
            return
        if self.settlement is not None:  # fail closed: no lock on chain for a priced dataset, no run
            refusal = self.settlement.refusal(spec, researcher, dataset)
            if refusal is not None:
                self.audit.append("escrow.deny", job_id=job_id, detail={"reason": refusal})
                self.store.transition(job_id, "denied", gates=entries, reasons=[refusal])
                return
        policy = ctx.results.get("policy")
        try:
            limits = enforceable(policy.obligations if policy is not None else {}, mode=job_mode(spec.code))
        except GateDenied as denied:
            self.audit.append("obligations.deny", job_id=job_id, detail={"reasons": denied.reasons})
            self.store.transition(job_id, "denied", gates=entries, reasons=[f"policy: {r}" for r in denied.reasons])
            return
        ctx.limits = limits
        cancel = self._cancels.get(job_id)
        if self._stopping:
            return  # the edge stops while its gates ran: it stays queued for the next start
        if cancel is not None and cancel.is_set():  # asked while its gates ran: it never starts
            self.store.transition(job_id, "cancelled", gates=entries, reasons=[CANCELLED])
            return
        if limits.run_approval != "none" and not self._approved(job, spec, ctx, entries, limits.run_approval):
            return  # waits for the data stewards, or one of them rejected it
        self._run(job, limits.apply(spec), ctx, outcome.results)

    # ---- approval before the job runs ---------------------------------------------
    def _approved(self, job: JobRecord, spec: JobSpec, ctx: GateContext, entries: list[dict[str, Any]],
                  mode: str) -> bool:
        """True when enough data stewards approved this job's request; else the job waits in
        awaiting_approval (audited first: S7) with what the steward decides on, or ends
        denied when a kept decision rejects it."""
        target = approval_dir(self.settings.jobs_dir, job.job_id)
        kept = read_kept(target, APPROVALS_FILE) or []
        outcome = approval_outcome(mode, job.job_id, job.researcher_key_id, registered_stewards(self.researchers),
                                   votes_of(kept))
        if outcome.status == REJECT:  # a kept reject (read again after a restart): it never runs
            self.audit.append("approval.reject", job_id=job.job_id, detail={"reasons": list(outcome.reasons)})
            self.store.transition(job.job_id, "denied", gates=entries, reasons=_rejected(outcome.reasons))
            return False
        if outcome.status != PENDING:
            return True
        write_kept(target, REQUEST_FILE, self._approval_request(spec, ctx, mode, outcome.needed))
        self.audit.append("approval.wait", job_id=job.job_id,
                          detail={"mode": mode, "approvals_needed": outcome.needed,
                                  "approvals": len(outcome.approved_by), "request_sha256": job.request_sha256})
        self.store.transition(job.job_id, AWAITING, gates=entries,
                              progress={"approvals": len(outcome.approved_by), "approvals_needed": outcome.needed})
        return False

    def _approval_request(self, spec: JobSpec, ctx: GateContext, mode: str, needed: int) -> dict[str, Any]:
        """What a steward is shown: the cell and its files, the scan's findings, the
        policy's decision, the budget and the most the job may cost (never record data)."""
        scan, policy = ctx.results.get("scan"), ctx.results.get("policy")
        data = spec.to_dict()
        dataset = ctx.dataset
        price = dataset.price_per_record if dataset is not None else "0"
        return {"mode": mode, "approvals_needed": needed, "code": spec.code, "code_sha256": spec.code_sha256,
                "includes": data.get("includes", []), "artifacts": data.get("artifacts", []),
                "fields": list(spec.fields), "params": data.get("params", {}), "budget": data["budget"],
                "cost": settlement(price, spec.budget.max_records, self.releaser.currency),
                "scan": dict(scan.evidence) if scan is not None else None,
                "policy": (policy.evidence.get("decision") if policy is not None else None)}

    def decide_waiting(self, job_id: str, approval: RunApproval) -> JobRecord:
        """One data steward's verified decision on a job awaiting approval: admitted by the
        rules (run_approval.py), audited, kept, then acted on: the job runs once enough
        stewards approved (back to submitted: its gates run again), ends denied on a reject,
        or keeps waiting. Nothing changes when it is refused."""
        job = self.store.get(job_id)
        if job.state != AWAITING:
            raise ApprovalRefused(f"job {job_id} is {job.state}, not awaiting approval: there is nothing to decide")
        target = approval_dir(self.settings.jobs_dir, job_id)
        request = read_kept(target, REQUEST_FILE)
        if request is None:
            raise ApprovalRefused(f"job {job_id} has no approval request kept; it cannot be decided")
        kept = read_kept(target, APPROVALS_FILE) or []
        stewards = registered_stewards(self.researchers)
        steward = admit(StewardVote.of(approval), job_id, job.researcher_key_id, stewards, votes_of(kept))
        entry = kept_entry(steward, approval)
        self.audit.append("approval.decide", job_id=job_id, actor=steward.key_id,
                          detail={k: v for k, v in entry.items() if k != "envelope"})
        kept = [*kept, entry]
        write_kept(target, APPROVALS_FILE, kept)
        outcome = approval_outcome(request.get("mode"), job_id, job.researcher_key_id, stewards, votes_of(kept))
        with self._claim:  # a cancel takes the same lock: one of us ends or moves it, never both
            if self.store.get(job_id).state != AWAITING:
                return self.store.get(job_id)
            if outcome.status == REJECT:
                self.audit.append("approval.reject", job_id=job_id, detail={"reasons": list(outcome.reasons)})
                self.store.transition(job_id, "denied", reasons=_rejected(outcome.reasons))
            elif outcome.status == PENDING:
                self.store.set_progress(job_id, {**job.progress, "approvals": len(outcome.approved_by),
                                                 "approvals_needed": outcome.needed})
            else:
                self.audit.append("approval.granted", job_id=job_id,
                                  detail={"approved_by": [s.key_id for s in outcome.approved_by]})
                self.store.transition(job_id, "submitted", progress={
                    **job.progress, "approvals": len(outcome.approved_by), "approvals_needed": outcome.needed})
                self._enqueue(job_id)
        return self.store.get(job_id)

    def _run(self, job: JobRecord, spec: JobSpec, ctx: GateContext, results: list[GateResult]) -> None:
        job_id, started = job.job_id, utc_now()
        self.audit.append("job.run", job_id=job_id, detail={"fields": list(spec.fields)})
        self.store.transition(job_id, "running", gates=receipts.gate_entries(results))
        with self._wan_severed(job_id):
            run = self.runner.run(spec, ctx.limits, self._cancels.get(job_id),
                                  self._progress_callback(job_id, budget_progress(ctx.limits)))
        # per-patient provenance: the sorted pseudonyms stay edge-side, never released
        save_provenance(self.settings.jobs_dir / job_id, run.meter,
                        reading_digest(self.datasets.get(spec.dataset), spec.fields))
        self.audit.append("job.ran", job_id=job_id,
                          detail={"status": run.status, "records_used": run.meter.records_used,
                                  "records_root": run.meter.records_root_hex})
        if run.status == "cancelled" and self._stopping:
            self.store.transition(job_id, "failed", reasons=[CUT_OFF], progress=self._progress(job_id, run.meter))
            return
        if run.status == "cancelled":
            self.store.transition(job_id, "cancelled", reasons=[CANCELLED], progress=self._progress(job_id, run.meter))
            return
        if run.status != "completed":
            reason = {"timeout": f"the job ran past its {spec.budget.max_seconds} s budget"}.get(
                run.status, "the job's code raised an error")
            if run.refusal is not None:  # DP mode: the trainer or the runner refused what the cell handed over
                reason = run.refusal
            elif job_mode(spec.code) == "dp" and run.error is None:
                reason = "the edge's private training did not complete"
            # the error was sanitised once, as it was read (release.error_report)
            self.store.transition(job_id, "failed", reasons=[reason], error=run.error,
                                  progress=self._progress(job_id, run.meter))
            return
        self._release(job, spec, results, run, started)

    def _release(self, job: JobRecord, spec: JobSpec, results: list[GateResult], run: RunOutcome, started: str) -> None:
        job_id = job.job_id
        try:
            checked = self.releaser.check(spec, run)
        except GateDenied as denied:
            release = GateResult("release", "deny", {"reason": denied.message}, tuple(denied.reasons))
            self.audit.append("release.deny", job_id=job_id, detail={"reason": denied.message})
            self.store.transition(job_id, "denied", gates=receipts.gate_entries([*results, release]),
                                  reasons=[f"release: {r}" for r in denied.reasons],
                                  progress=self._progress(job_id, run.meter))
            return
        times = {"submitted": job.submitted, "started": started, "finished": utc_now()}
        predicate = self.releaser.predicate(job, spec, [*results, checked.gate], run, checked, times)
        target = approval_dir(self.settings.jobs_dir, job_id)
        request = read_kept(target, REQUEST_FILE)
        if request is not None:  # run after the data stewards' approval: their statements, named
            predicate = {**predicate, "approval": receipt_section(request.get("mode", ""),
                                                                  read_kept(target, APPROVALS_FILE) or [])}
        # Held, not released (S5): the outputs wait edge-side for the disclosure checks and
        # the release decision. The job's status keeps the gates before release: even the
        # release gate's evidence digest is over tensor counts and metric names.
        self.held.hold(job_id, Held(checked.weights_bytes, checked.metrics, predicate, run.program),
                       receipts.gate_entries(results),
                       self._progress(job_id, run.meter))
        self.held.check_and_decide(job_id)

    def _sign_and_release(self, job_id: str, held: Held, disclosure: dict[str, Any]) -> None:
        """The release of a held job the checks, the policy and (where it asks) the output
        checkers let go: the receipt signed with its ``disclosure`` section, then
        ``release/`` written, the held copy removed, the anchor queued."""
        predicate = dict(held.predicate, disclosure=disclosure)
        document = self.releaser.sign(predicate, held.weights)
        digest = envelope_digest(document["envelope"])
        self.audit.append("receipt.sign", job_id=job_id, detail={"envelope_sha256": digest})
        release = self.releaser.write(job_id, held, document)  # the durable point; anchored only after
        progress = {k: v for k, v in self.store.get(job_id).progress.items() if k not in HELD_PROGRESS}
        progress.update(spent_progress(predicate))
        self._complete(job_id, release, predicate, progress, self.settings.chain.release_wait_seconds)

    def _complete(self, job_id: str, release: Release, predicate: dict[str, Any], progress: dict[str, Any],
                  wait_seconds: float) -> None:
        gates: list[dict[str, Any]] = predicate["gates"]
        document = release.receipt
        digest = envelope_digest(document["envelope"])
        started = time.monotonic()
        anchor = self._anchor(job_id, digest, wait_seconds)
        claimed = self._queue_claim(job_id, digest, predicate)
        if not is_pending(anchor):
            document = dict(document, anchor=anchor)
            if claimed and self.settlement is not None:
                claim = self.settlement.wait_claimed(job_id, max(0.0, wait_seconds - (time.monotonic() - started)))
                if claim is not None:  # else the outbox puts it into the released receipt once mined
                    document = dict(document, settlement_claim=claim)
            self.releaser.write_anchored(job_id, document)
        self.audit.append("job.complete", job_id=job_id, detail={"envelope_sha256": digest})
        # Released metrics only (checked before release): the latest value under each declared name.
        self.store.append_event(job_id, "metrics", {k: v[-1] for k, v in release.metrics.items() if v})
        self.store.transition(job_id, "completed", gates=gates, receipt=document, progress=progress)

    def _queue_claim(self, job_id: str, digest: str, predicate: dict[str, Any]) -> bool:
        """Queue the escrow claim of the records the signed meter counted (after the
        anchor, by the outbox); False where nothing is claimed."""
        if self.settlement is None:
            return False
        dataset = self._dataset_or_none(str(predicate["dataset"]["id"]))
        records = int(predicate["dataset"]["records_used"])
        if not self.settlement.claim(job_id, digest, records, dataset):
            return False
        self.audit.append("escrow.claim.queue", job_id=job_id, detail={"records": records, "envelope_sha256": digest})
        return True

    def _settle_end(self, job_id: str, state: str) -> None:
        """A job that ended without release: its lock refunded in full (a claim of 0)."""
        if state == "completed" or self.settlement is None:
            return
        try:
            dataset = self._dataset_or_none(parse_jobspec(self.store.get(job_id).spec).dataset)
        except Exception:
            log.exception("job %s: its dataset could not be read for the escrow refund", job_id)
            return
        self.settlement.refund(job_id, dataset)

    def _anchor(self, job_id: str, digest: str, wait_seconds: float) -> dict[str, Any]:
        """Queue the receipt in the durable outbox (once: queuing it again is a no-op) and
        wait a little for its batch. A chain that is down must not hold results back: they
        leave marked "anchor pending" and the outbox puts the anchor into the released
        receipt later."""
        self.audit.append("anchor.queue", job_id=job_id, detail={"envelope_sha256": digest})
        self.outbox.enqueue(job_id, digest)
        anchor = self.outbox.wait_anchored(digest, wait_seconds)
        if anchor is None:
            self.audit.append("anchor.pending", job_id=job_id, detail={"envelope_sha256": digest})
            return pending_anchor(digest)
        self.audit.append("anchor.done", job_id=job_id, detail={"tx_hash": anchor.get("tx_hash")})
        return anchor

    # ---- after a crash ------------------------------------------------------------
    def _resume_release(self, job: JobRecord, release: Release) -> bool:
        """Finish a release the edge wrote before it stopped, if its files are what the
        receipt signs; the outbox is not running yet, so no wait for the anchor."""
        predicate = self.releaser.matching_receipt(release)
        if predicate is None:
            log.error("job %s: the written release does not match its receipt; failing it", job.job_id)
            return False
        self.audit.append("release.resume", job_id=job.job_id,
                          detail={"envelope_sha256": envelope_digest(release.receipt["envelope"])})
        progress = {**job.progress, **{k: predicate["dataset"][k] for k in ("records_used", "cohort_size")},
                    **spent_progress(predicate)}
        self._complete(job.job_id, release, predicate, progress, wait_seconds=0)
        return True

    def _fail_cut_off(self, job: JobRecord) -> None:
        """A job the edge lost mid-run: failed, its directory (outputs, stdout that may hold
        record data) removed; the records it had read stay in its progress."""
        self.audit.append("job.fail", job_id=job.job_id,
                          detail={"reason": "edge restarted during the job",
                                  "records_used": job.progress.get("records_used", 0)})
        if self.settings.sandbox.unsafe_keep_job_files:
            log.warning("unsafe_keep_job_files: job %s's directory is kept", job.job_id)
        else:
            shutil.rmtree(self.settings.jobs_dir / job.job_id, onerror=_log_removal_error)
        self.store.transition(job.job_id, "failed", reasons=[CUT_OFF])

    def _wan_severed(self, job_id: str) -> Any:
        if self.wan is None:
            return contextlib.nullcontext()
        self.audit.append("wan.sever", job_id=job_id, detail={"interface": self.wan.interface})
        return self.wan.severed()

    # ---- what the walk asks of the edge -------------------------------------------
    def release_dir(self, job_id: str) -> Path:
        return self.releaser.release_dir(job_id)

    def _check_accepting_jobs(self) -> None:
        problems = self.health.problems()
        if problems:
            raise StorageUnavailable(problems[0])

    def _dataset_or_none(self, name: str) -> Dataset | None:
        try:
            return self.datasets.get(name)
        except NotFound:
            return None

    def _gate_extras(self, dataset: Dataset | None) -> dict[str, Any]:
        extras: dict[str, Any] = {"edge_key_id": self.key.key_id}
        if dataset is not None:
            # after the opt-out list, cached: the policy's minimum cohort is about consented records
            extras["cohort_size"] = self.cohort_sizes.size(dataset)
        return extras

    # ---- progress -----------------------------------------------------------------
    def _progress_callback(self, job_id: str, extra: dict[str, float] | None = None) -> Any:
        def on_progress(update: dict[str, Any]) -> None:
            # The runner sends at most twice a second, and always its latest counts: each is
            # stored, so a crash loses at most half a second of them.
            self._reported[job_id] = _plain({**update, **(extra or {})})
            self.store.set_progress(job_id, self._reported[job_id])

        return on_progress

    def _progress(self, job_id: str, meter: Any) -> dict[str, Any]:
        """The job's final counters: the last the runner reported (it alone knows epochs and
        batches) with the meter's records."""
        return {**self._reported.pop(job_id, {}), "records_used": meter.records_used,
                "cohort_size": meter.cohort_size}


def _rejected(reasons: tuple[str, ...] | list[str]) -> list[str]:
    return [f"approval: a data steward rejected the job: {reason}".rstrip(": ") for reason in reasons] or [
        "approval: a data steward rejected the job"]


def _log_removal_error(function: Any, path: str, excinfo: Any) -> None:
    log.error("could not remove part of a job directory (%s): %s", function.__name__, excinfo[0].__name__)


def budget_progress(limits: Any) -> dict[str, float]:
    """A DP job's privacy budget, shown with its progress while it runs (the policy's
    numbers, no record data)."""
    budget = getattr(limits, "privacy", None)
    return {} if budget is None else {"epsilon_target": budget.epsilon, "delta": budget.delta}


def spent_progress(predicate: dict[str, Any]) -> dict[str, float]:
    """What a released DP job spent, from its signed privacy section (at release: the
    receipt that says it leaves with it)."""
    section = predicate.get("privacy")
    if not isinstance(section, dict):
        return {}
    return {k: section[k] for k in PRIVACY_PROGRESS if k in section}


def _plain(update: dict[str, Any]) -> dict[str, Any]:
    # Progress leaves the edge: keep only counters and finite numbers.
    return {k: v for k, v in update.items()
            if isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)}
