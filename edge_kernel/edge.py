"""The edge: settings, keys, stores, gates, runner and anchor, opened together.

Opening checks everything a job will need, so a misconfigured edge refuses to start
instead of refusing jobs one by one. That includes its records: the database must exist
(keys without it mean it was lost), pass SQLite's page check, and hold an audit log whose
every hash holds and that reaches the head recorded outside it (``audit_head.py``).
"""

from __future__ import annotations

import logging
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from jupyter_rapha import __version__
from jupyter_rapha.protocol.contract import TERMINAL_STATES, JobState
from jupyter_rapha.protocol.errors import AuditDamaged, BadInput, RaphaError, StorageUnavailable
from jupyter_rapha.protocol.keys import PrivateKey

from .artifacts import WAITING_STATES, ArtifactStore, artifacts_in_use
from .audit import AuditLog
from .audit_head import HEAD_FILE, HeadFile, check_audit, last_anchored_head, missing_database
from .auth import Authenticator
from .data.cohort import CohortSizes
from .data.registry import Dataset, DatasetRegistry
from .db import Database
from .environment import SiteEnvironment
from .health import StorageHealth
from .gates.pipeline import Gate
from .gates.spec import SpecGate
from .jobs import JobManager, Runner
from .release.releaser import Releaser, job_release_dir
from .researchers import ResearcherRegistry
from .settings import Settings, load_settings
from .settlement import Settlement
from .store import JobStore

log = logging.getLogger(__name__)

EDGE_KEY_FILE = "edge_ed25519.pem"
PSEUDONYM_KEY_FILE = "pseudonym.key"
CHAIN_KEY_FILE = "chain.key"


class Edge:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.key = PrivateKey.from_pem(_read_secret(settings.keys_dir / EDGE_KEY_FILE))
        self.pseudonym_key = bytes.fromhex(_read_secret(settings.keys_dir / PSEUDONYM_KEY_FILE).decode().strip())
        if len(self.pseudonym_key) < 32:
            raise BadInput("the pseudonym key must be at least 32 bytes")
        self.health = StorageHealth((settings.state_dir, settings.jobs_dir))
        self.db, self.audit = open_records(settings, self.health)
        self.store = JobStore(self.db)
        self.researchers = ResearcherRegistry(settings.config_dir)
        self.auth = Authenticator(self.db, self.researchers)
        self.datasets = DatasetRegistry(settings.config_dir)
        self.artifacts = ArtifactStore.of(settings)
        self.researchers.all()  # a malformed registry stops the start, naming the file
        self.datasets.all()
        self.gpus = _check_gpus(settings)
        self.environment = SiteEnvironment(settings)
        self.cohort_sizes = CohortSizes(self.pseudonym_key, self.datasets.resolve, self.datasets.resolve_opt_out,
                                        cache_root=settings.cache_dir)
        self.chain, self.anchor = _open_chain(settings)
        self.escrow = _open_escrow(settings, self.chain)
        self.gates = build_gates(settings, self.key)
        self.wan = _open_wan(settings)
        self.outbox = _open_outbox(self)
        self.settlement = (Settlement(self.escrow, self.outbox, self.datasets, settings.chain.token_decimals)
                           if self.escrow is not None else None)
        self.jobs = JobManager(
            settings=settings, store=self.store, audit=self.audit, health=self.health,
            researchers=self.researchers, datasets=self.datasets, cohort_sizes=self.cohort_sizes,
            gates=self.gates, runner=_job_runner(self.datasets, self.pseudonym_key, settings),
            releaser=Releaser(jobs_dir=settings.jobs_dir, datasets=self.datasets, key=self.key, identity=self.identity,
                              unsafe=settings.unsafe, currency=settings.currency),
            outbox=self.outbox, key=self.key, wan=self.wan,
            checks=_check_process(settings, self.datasets), release_policy=_release_policy(self.gates),
            reviews=_review_rule(self.researchers), settlement=self.settlement)

    @classmethod
    def open(cls, config_dir: str | Path) -> Edge:
        return cls(load_settings(config_dir))

    def start(self) -> None:
        self.audit.append("edge.start", detail={"version": __version__})
        if self.escrow is not None and self.settings.demo:
            fund_demo_researchers(self.chain, self.researchers)
        self.jobs.recover()
        self.prune_artifacts()
        self.outbox.start()  # anchors left pending before a restart are sent now
        self.environment.start()  # measured once, beside the start; the first catalog request waits for it

    def close(self) -> None:
        self.jobs.shutdown()
        self.outbox.stop()
        try:
            self.audit.append("edge.stop")
        except StorageUnavailable:  # stopping on a full disk: the database still closes cleanly
            log.error("edge.stop not audited: the edge's storage takes no writes")
        self.db.close()

    def prune_artifacts(self, key_id: str | None = None) -> None:
        """Delete the uploads (``key_id``'s, or everyone's) past ``artifacts.keep_unused_days``
        that no job waiting to run names; audited before they go (S7)."""
        waiting = [job for state in WAITING_STATES for job in self.store.in_state(state)
                   if key_id is None or job.researcher_key_id == key_id]
        expired = self.artifacts.expired(artifacts_in_use(waiting), key_id)
        if expired:
            self.audit.append("artifact.prune", detail={"artifacts": expired,
                                                        "keep_unused_days": self.artifacts.keep_unused_days})
            self.artifacts.remove(expired)

    def identity(self) -> dict[str, Any]:
        return {"id": self.settings.edge_id, "key_id": self.key.key_id,
                "anchor_address": self.anchor.address, "chain_id": self.anchor.chain_id}

    def info(self) -> dict[str, Any]:
        rpc = {"embedded": "/chain", "rfc3161": ""}.get(self.settings.chain.backend, self.settings.chain.rpc_url)
        info = {"edge_id": self.settings.edge_id, "public_key": self.key.public.to_text(),
                "key_id": self.key.key_id, "version": __version__, "demo": self.settings.demo,
                "chain": {"chain_id": self.anchor.chain_id, "anchor_address": self.anchor.address, "rpc": rpc}}
        if self.settlement is not None:
            info["settlement"] = self.settlement.info()
        return info

    def catalog_entry(self, dataset: Dataset) -> dict[str, Any]:
        return {"name": dataset.name, "version": dataset.version, "schema": dataset.schema(),
                "labels": sorted(dataset.labels), "price_per_record": dataset.price_per_record,
                "currency": self.settings.currency, "max_records": dataset.max_records,
                "sensitivity": dataset.sensitivity, "description": dataset.description}

    def job_status(self, job: Any) -> dict[str, Any]:
        """A job's status for its researcher, with its cost where the dataset is priced:
        ``charged`` is price x records used ("0" for a job that ended without release: its
        lock is refunded), ``max`` price x the budget (what was locked)."""
        status: dict[str, Any] = job.status()
        try:
            price = Decimal(self.datasets.get(job.dataset).price_per_record)
            budget = int(job.spec["budget"]["max_records"])
        except (RaphaError, InvalidOperation, KeyError, TypeError, ValueError):
            return status
        if price <= 0:
            return status
        used = int((job.progress or {}).get("records_used", 0) or 0)
        released = job.state not in TERMINAL_STATES or job.state == JobState.COMPLETED
        status["cost"] = {"price_per_record": str(price), "currency": self.settings.currency,
                          "max": str(price * budget), "charged": str(price * used) if released else "0"}
        return status

    def release_dir(self, job_id: str) -> Path:
        return job_release_dir(self.settings.jobs_dir, job_id)

    def storage_status(self) -> dict[str, Any]:
        """For GET /v1/edge: whether jobs are taken and, if not, why (generic, no paths)."""
        problems = self.health.problems()
        return {"accepting_jobs": not problems, "problems": problems}


def open_records(settings: Settings, health: StorageHealth) -> tuple[Database, AuditLog]:
    """The database and audit log, checked (S7): refuses to start on a missing database,
    damaged pages, or an audit log that is broken or shorter than its recorded head."""
    head_file = HeadFile(settings.state_dir / HEAD_FILE, health)
    if not settings.db_path.exists():
        missing_database(settings.db_path, head_file.path).refuse()
    db = Database(settings.db_path, health)
    damage = db.quick_check()
    if damage:
        db.close()
        raise AuditDamaged(f"the edge database {settings.db_path} is damaged: {damage[0]}",
                           hint="stop, and restore the edge's state directory from a backup")
    audit = AuditLog(db, head_file)
    try:
        check_audit(audit, head_file, last_anchored_head(db)).refuse()
    except BaseException:
        db.close()
        raise
    head_file.write(audit.head())  # a head file that lagged a crash catches up now
    return db, audit


def _job_runner(datasets: DatasetRegistry, pseudonym_key: bytes, settings: Settings) -> Runner:
    from .sandbox.runner import JobRunner  # pulls in every data source: not needed to open the records

    return JobRunner(datasets, pseudonym_key, settings)


def _check_gpus(settings: Settings) -> Any:
    """``sandbox.gpus`` the host cannot honour (no driver, no such GPU) stops the start."""
    from .sandbox.gpus import grant

    return grant(settings.sandbox)


def _check_process(settings: Settings, datasets: DatasetRegistry) -> Any:
    from .release.check_runner import CheckProcess  # pulls in the runner: not needed to open the records
    from .release.records import DatasetRecords

    return CheckProcess(settings, DatasetRecords(settings, datasets))


def _release_policy(gates: list[Gate]) -> Any:
    """The release decision reads the job policy's bundle: one bundle, one digest."""
    from .gates.policy import PolicyGate
    from .release.policy import ReleasePolicy

    policy = next((gate for gate in gates if isinstance(gate, PolicyGate)), None)
    return ReleasePolicy(lambda: policy.bundle if policy is not None else None)


def _review_rule(researchers: ResearcherRegistry) -> Any:
    from .release.review import OutputCheckerRule, registered_checkers

    return OutputCheckerRule(lambda: registered_checkers(researchers))  # read at each decision


def build_gates(settings: Settings, edge_key: PrivateKey) -> list[Gate]:
    from .attestation.bundle import load_attestation_policy, load_collateral_bundle
    from .gates.attestation import AttestationGate
    from .gates.airgap import AirgapGate
    from .gates.policy import PolicyGate
    from .gates.scan import ScanGate

    attestation = AttestationGate(
        backend=settings.attestation.backend, edge_key=edge_key,
        policy_data=load_attestation_policy(settings.path(settings.attestation.policy)),
        collateral=load_collateral_bundle(settings.path(settings.attestation.collateral)))
    return [SpecGate(), ScanGate(), attestation, AirgapGate(), PolicyGate(settings.policies_dir)]


def _open_wan(settings: Settings) -> Any:
    if not settings.sandbox.wan_interface:
        return None
    from .sandbox.airgap import find_airgap_binary
    from .sandbox.wan import WanGate

    return WanGate(find_airgap_binary(settings), settings.sandbox.wan_interface, settings.state_dir)


def _open_chain(settings: Settings) -> tuple[Any, Any]:
    from .anchor.account import load_chain_account

    if settings.chain.backend == "rfc3161":
        from .anchor.tsa import TsaAnchor

        return None, TsaAnchor.from_files(settings.chain.tsa_url, settings.path(settings.chain.tsa_certificate),
                                          settings.chain.rpc_timeout_seconds)

    account = load_chain_account(settings.path(settings.chain.key_file) or settings.keys_dir / CHAIN_KEY_FILE)
    if settings.chain.backend == "embedded":
        from .anchor.devchain import EmbeddedChain

        chain = EmbeddedChain(settings.state_dir / "chain", account)
        return chain, chain
    from .anchor.evm import RpcAnchor

    return None, RpcAnchor(settings.chain.rpc_url, account, settings.chain.chain_id or None,
                           timeout=settings.chain.rpc_timeout_seconds)


def _open_escrow(settings: Settings, chain: Any) -> Any:
    """The escrow contract on the embedded chain (deployed at the first open), served to
    researchers' wallets on the public /chain for lock, cancel and withdraw only; None
    where settlement is off."""
    if not settings.chain.settlement or chain is None:
        return None
    from .anchor.account import load_chain_account
    from .anchor.escrow import open_escrow, researcher_selectors

    account = load_chain_account(settings.path(settings.chain.key_file) or settings.keys_dir / CHAIN_KEY_FILE)
    escrow = open_escrow(chain, account, settings.state_dir / "chain")
    chain.serve_escrow(escrow.address, researcher_selectors())
    return escrow


DEMO_FUNDING_WEI = 100 * 10**18


def fund_demo_researchers(chain: Any, researchers: ResearcherRegistry) -> None:
    """Demo edges on the embedded chain only: each registered chain account without funds
    gets 100 of the dev chain's coin from its pre-funded account, to lock escrow with."""
    for researcher in researchers.all():
        if researcher.chain_address and chain.tester.get_balance(researcher.chain_address) == 0:
            chain.fund(researcher.chain_address, DEMO_FUNDING_WEI)
            log.info("demo: funded %s's chain account %s", researcher.name, researcher.chain_address)


def _open_outbox(edge: Edge) -> Any:
    from .anchor.outbox import Outbox, OutboxConfig
    from .anchor.publish import ReceiptPublisher

    chain = edge.settings.chain
    config = OutboxConfig(batch_size=chain.batch_size, batch_interval_seconds=chain.batch_interval_seconds,
                          # a timestamp token is final when stored: no confirmations to wait for
                          min_confirmations=1 if chain.backend == "rfc3161" else chain.min_confirmations,
                          retry_initial_seconds=chain.retry_initial_seconds,
                          retry_max_seconds=chain.retry_max_seconds, mine_timeout_seconds=chain.rpc_timeout_seconds * 4,
                          bump_after_seconds=chain.fee_bump_seconds)
    publisher = ReceiptPublisher(edge.store, edge.audit, edge.release_dir)
    claimer = None
    if edge.escrow is not None:
        from .anchor.account import load_chain_account
        from .anchor.escrow import EscrowClaimer

        settings = edge.settings
        claimer = EscrowClaimer(edge.escrow, load_chain_account(settings.path(settings.chain.key_file)
                                                                or settings.keys_dir / CHAIN_KEY_FILE))
    return Outbox(edge.db, edge.anchor, publisher, config, audit_head=edge.audit.head, claimer=claimer,
                  publish_claim=publisher.claim if claimer is not None else None)


def _read_secret(path: Path) -> bytes:
    if not path.is_file():
        raise BadInput(f"missing key file {path.name} in {path.parent}", hint="run 'rapha-edge init'")
    return path.read_bytes()
