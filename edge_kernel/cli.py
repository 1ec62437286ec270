"""``rapha-edge``: the hospital's command line.

Every command takes ``--config DIR`` (default: the current directory). Commands exit 0
on success, 1 when the edge refuses or a check fails, 2 on a usage error, and print one
clear line that says what to fix.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

from jupyter_rapha.protocol.errors import RaphaError
from jupyter_rapha.protocol.keys import PrivateKey

from .settings import CONFIG_FILE

EDGE_TOML = """\
# jupyter-rapha edge settings. Paths are relative to this directory.
[edge]
id = "{edge_id}"
# Demo mode allows the unsafe software attestation backend. Never in production.
demo = {demo}
currency = "GBP"

[server]
host = "127.0.0.1"
port = {port}
# HTTPS: a PEM certificate (chain) and its key. Serve plain HTTP only on loopback or
# behind a TLS-terminating proxy.
tls_cert = ""
tls_key = ""

[chain]
# "embedded": a local EVM dev chain served at /chain. "rpc": any EVM JSON-RPC endpoint
# (e.g. Polygon, chain id 137) with the funded account in keys/chain.key. "rfc3161": an
# RFC 3161 timestamp authority instead of a chain (set tsa_url and tsa_certificate).
backend = "embedded"
rpc_url = ""
min_confirmations = 1

[attestation]
# "auto" finds TDX (configfs-tsm) or SGX (Gramine); "unsafe_software" is a signed stand-in
# for machines without a TEE, allowed only in demo mode and labelled in every receipt.
backend = "{attestation}"
# Offline DCAP collateral (TCB Info, CRLs) and the measurement allowlist, as JSON files.
collateral = ""
policy = ""

[sandbox]
# Path of the rapha-airgap binary; empty: rust/airgap/target/release/rapha-airgap, then PATH.
airgap_binary = ""
"""


def _secret(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def cmd_init(args: argparse.Namespace) -> int:
    from .anchor.account import create_chain_account

    root = Path(args.dir).resolve()
    if (root / CONFIG_FILE).exists():
        print(f"rapha-edge: {root} already holds an edge; refusing to overwrite its keys", file=sys.stderr)
        return 1
    keys = root / "keys"
    keys.mkdir(parents=True, exist_ok=True, mode=0o700)
    (root / "state").mkdir(exist_ok=True, mode=0o700)
    _secret(keys / "edge_ed25519.pem", PrivateKey.generate().to_pem())
    _secret(keys / "pseudonym.key", secrets.token_hex(32).encode() + b"\n")
    create_chain_account(keys / "chain.key")
    edge_id = args.edge_id or ("demo-edge" if args.demo else root.name)
    (root / CONFIG_FILE).write_text(EDGE_TOML.format(
        edge_id=edge_id, demo=str(args.demo).lower(), port=args.port,
        attestation="unsafe_software" if args.demo else "auto"))
    _copy_policies(root)
    if args.demo:
        _add_demo_dataset(root, args.records)
    print(f"edge {edge_id} initialised in {root}")
    return 0


def _copy_policies(root: Path) -> None:
    source = Path(__file__).resolve().parent.parent / "policies"
    if source.is_dir():
        shutil.copytree(source, root / "policies", ignore=shutil.ignore_patterns("*_test.rego", "__pycache__"))


def _add_demo_dataset(root: Path, records: int) -> None:
    from .data.registry import DatasetRegistry
    from .data.synth import make_synthetic_dataset, synthetic_dataset_entry

    make_synthetic_dataset(root / "data" / "synthetic-cxr", records, seed=7)
    DatasetRegistry(root).add(synthetic_dataset_entry("synthetic-cxr", "data/synthetic-cxr"))


def cmd_serve(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from .edge import Edge
    from .service import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    edge = Edge.open(args.config)
    host = args.host or edge.settings.host
    port = edge.settings.port if args.port is None else args.port

    def ready(bound: int) -> None:
        scheme = "https" if edge.settings.tls_cert else "http"
        print(f"rapha-edge {edge.settings.edge_id} serving on {scheme}://{host}:{bound}", flush=True)

    try:
        asyncio.run(serve(edge, host, port, ready))
    except KeyboardInterrupt:
        return 0  # Ctrl-C is how an operator stops the edge; serve() closed it cleanly
    return 0


def cmd_researchers_add(args: argparse.Namespace) -> int:
    from .researchers import Researcher, ResearcherRegistry

    key_text = Path(args.pubkey).read_text() if Path(args.pubkey).is_file() else args.pubkey
    researcher = Researcher(args.name, key_text.strip(), tuple(args.role or ["researcher"]),
                            tuple(args.purpose or ["research"]))
    ResearcherRegistry(Path(args.config)).add(researcher)
    print(f"registered {researcher.name} (key {researcher.key_id})")
    return 0


def cmd_researchers_list(args: argparse.Namespace) -> int:
    from .researchers import ResearcherRegistry

    for r in ResearcherRegistry(Path(args.config)).all():
        print(f"{r.name}\t{r.key_id}\troles={','.join(r.roles)}\tpurposes={','.join(r.purposes)}")
    return 0


def cmd_datasets_add(args: argparse.Namespace) -> int:
    from .data.registry import DatasetRegistry, parse_dataset

    schema = json.loads(Path(args.schema).read_text())
    entry = {"name": args.name, "version": args.version, "source": args.source, "location": args.path,
             "fields": schema.get("fields"), "labels": schema.get("labels", {}),
             "features": schema.get("features", {}), "options": _source_options(args, schema.get("options", {})),
             "opt_out": args.opt_out, "price_per_record": args.price, "max_records": args.max_records,
             "sensitivity": args.sensitivity, "description": args.description}
    DatasetRegistry(Path(args.config)).add(parse_dataset(entry))
    print(f"dataset {args.name} added")
    return 0


def _source_options(args: argparse.Namespace, options: dict[str, Any]) -> dict[str, Any]:
    """Source settings from the command line, over those in the schema file."""
    options = dict(options)
    if args.study:
        options["studies"] = list(args.study)
    if args.series:
        options["series"] = [dict(zip(("study", "series"), item.split("/", 1))) for item in args.series]
    for name in ("timeout_seconds", "username", "password_file", "patient_column", "record_column",
                 "patient_identifier_system"):
        value = getattr(args, name)
        if value not in (None, ""):
            options[name] = value
    return options


def cmd_provenance(args: argparse.Namespace) -> int:
    from .data.provenance import prove_patient, signed_records_root
    from .db import Database
    from .edge import EDGE_KEY_FILE, PSEUDONYM_KEY_FILE
    from .settings import load_settings
    from .store import JobStore

    settings = load_settings(args.config)
    job = JobStore(Database(settings.db_path)).get(args.job_id)
    if not job.receipt:
        print(f"rapha-edge: job {args.job_id} has no receipt (state {job.state}); nothing was anchored",
              file=sys.stderr)
        return 1
    edge_key = PrivateKey.from_pem((settings.keys_dir / EDGE_KEY_FILE).read_bytes()).public
    root = signed_records_root(job.receipt, edge_key)  # the signed, anchored root
    key = bytes.fromhex((settings.keys_dir / PSEUDONYM_KEY_FILE).read_text().strip())
    proof = prove_patient(settings.jobs_dir / args.job_id, key, args.patient_id, root)
    used = sum(1 for record in proof["records"] if record["used"])
    document = {"job_id": args.job_id, "dataset": job.dataset, **proof, "anchor": job.receipt.get("anchor"),
                "answer": "used" if used else ("not used" if proof["records"] else "no record known to the job")}
    print(json.dumps(document, indent=2))
    print(f"patient: {used} of {len(proof['records'])} record(s) used in job {args.job_id}; "
          "every proof checked against the receipt's records_root", file=sys.stderr)
    return 0


def cmd_datasets_list(args: argparse.Namespace) -> int:
    from .data.registry import DatasetRegistry

    for d in DatasetRegistry(Path(args.config)).all().values():
        print(f"{d.name}\tv{d.version}\t{d.source}\tfields={','.join(d.fields)}\tprice={d.price_per_record}")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from .data.synth import make_synthetic_dataset

    make_synthetic_dataset(Path(args.path), args.n, seed=args.seed)
    print(f"wrote {args.n} synthetic DICOM records to {args.path}")
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from .audit import AuditLog
    from .db import Database
    from .settings import load_settings

    settings = load_settings(args.config)
    check = AuditLog(Database(settings.db_path)).verify()
    if check.ok:
        print(f"audit log intact: {check.entries} entries, head {check.head[:16]}…")
        return 0
    print(f"audit log BROKEN at entry {check.first_bad_seq} (of {check.entries} read)")
    return 1


def cmd_jobs_list(args: argparse.Namespace) -> int:
    from .db import Database
    from .settings import load_settings
    from .store import JobStore

    for job in JobStore(Database(load_settings(args.config).db_path)).list():
        print(f"{job.job_id}\t{job.state}\t{job.dataset}\t{job.researcher_key_id[:12]}\t{job.submitted}")
    return 0


def cmd_wan(args: argparse.Namespace) -> int:
    from .sandbox.airgap import find_airgap_binary
    from .sandbox.wan import WanGate
    from .settings import load_settings

    settings = load_settings(args.config)
    if not settings.sandbox.wan_interface:
        print("rapha-edge: no sandbox.wan_interface is configured", file=sys.stderr)
        return 1
    gate = WanGate(find_airgap_binary(settings), settings.sandbox.wan_interface, settings.state_dir)
    if args.action == "resume":
        gate.resume()
        print(f"WAN {gate.interface} restored; the edge takes jobs again")
        return 0
    halted = gate.halt_path.exists()
    print(f"WAN {gate.interface}: {gate.status()}{' (edge HALTED: run rapha-edge wan resume)' if halted else ''}")
    return 1 if halted else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rapha-edge", description="Run and administer a jupyter-rapha edge.")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, func: Callable[[argparse.Namespace], int], help: str, parent: Any = sub) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help)
        p.set_defaults(func=func)
        p.add_argument("--config", default=".", help="edge config directory (default: current directory)")
        return p

    p = command("init", cmd_init, "create a new edge: settings, keys, state")
    p.add_argument("dir", nargs="?", default=".")
    p.add_argument("--demo", action="store_true", help="demo mode with a synthetic dataset 'synthetic-cxr'")
    p.add_argument("--edge-id", default="")
    p.add_argument("--port", type=int, default=8470)
    p.add_argument("--records", type=int, default=120, help="synthetic records for --demo")
    p = command("serve", cmd_serve, "serve the edge over HTTP")
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--host", default="")
    researchers = sub.add_parser("researchers", help="registered researcher keys").add_subparsers(dest="sub", required=True)
    p = command("add", cmd_researchers_add, "register a researcher's public key", researchers)
    p.add_argument("name")
    p.add_argument("pubkey", help="'ed25519:BASE64', a PEM, or a file holding either")
    p.add_argument("--role", action="append")
    p.add_argument("--purpose", action="append")
    command("list", cmd_researchers_list, "list registered researchers", researchers)
    datasets = sub.add_parser("datasets", help="the dataset registry").add_subparsers(dest="sub", required=True)
    p = command("add", cmd_datasets_add, "register a dataset", datasets)
    p.add_argument("name")
    p.add_argument("--source", default="dicom-folder", choices=["dicom-folder", "dicomweb", "fhir-ndjson", "csv"])
    p.add_argument("--path", required=True, help="folder, CSV file or DICOMweb base URL of the source")
    p.add_argument("--schema", required=True, help="JSON file with 'fields', 'labels', 'features', 'options'")
    p.add_argument("--study", action="append", help="dicomweb: a StudyInstanceUID the dataset covers")
    p.add_argument("--series", action="append", help="dicomweb: STUDY_UID/SERIES_UID the dataset covers")
    p.add_argument("--timeout-seconds", dest="timeout_seconds", type=float, default=None,
                   help="dicomweb: per-request timeout")
    p.add_argument("--username", default="", help="dicomweb: HTTP basic user")
    p.add_argument("--password-file", dest="password_file", default="", help="dicomweb: file holding the password")
    p.add_argument("--patient-column", dest="patient_column", default="", help="csv: the patient id column")
    p.add_argument("--record-column", dest="record_column", default="", help="csv: a per-row id column")
    p.add_argument("--patient-identifier-system", dest="patient_identifier_system", default="",
                   help="fhir-ndjson: Patient.identifier system used as the patient id")
    p.add_argument("--opt-out", dest="opt_out", default="",
                   help="file of opted-out patient ids, one per line, applied before counting")
    p.add_argument("--version", default="1")
    p.add_argument("--price", default="0", help="price per record, a decimal")
    p.add_argument("--max-records", type=int, default=100_000)
    p.add_argument("--sensitivity", default="special-category")
    p.add_argument("--description", default="")
    command("list", cmd_datasets_list, "list datasets", datasets)
    p = command("synth", cmd_synth, "write a synthetic DICOM dataset with fake identifiers")
    p.add_argument("path")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    audit = sub.add_parser("audit", help="the hash-chained audit log").add_subparsers(dest="sub", required=True)
    command("verify", cmd_audit_verify, "check every hash in the audit log", audit)
    p = command("wan", cmd_wan, "the appliance WAN gate: status, or resume after a failed restore")
    p.add_argument("action", choices=["status", "resume"])
    p = command("provenance", cmd_provenance, "prove whether a patient's records were used in a job")
    p.add_argument("patient_id")
    p.add_argument("job_id")
    jobs = sub.add_parser("jobs", help="jobs at this edge (admin)").add_subparsers(dest="sub", required=True)
    command("list", cmd_jobs_list, "list jobs", jobs)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except RaphaError as exc:
        print(f"rapha-edge: {exc.diagnostics()}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"rapha-edge: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
