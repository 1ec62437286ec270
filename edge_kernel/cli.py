"""``rapha-edge``: the hospital's command line.

Every command takes ``--config DIR`` (default: the current directory). Commands exit 0
on success, 1 when the edge refuses or a check fails, 2 on a usage error, and print one
clear line that says what to fix.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import secrets
import shutil
import sys
from pathlib import Path
from typing import Any
from collections.abc import Callable

from jupyter_rapha.protocol.errors import BadInput, RaphaError
from jupyter_rapha.protocol.keys import PrivateKey

from .config_files import ConfigFault
from .settings import CONFIG_FILE, DEFAULTS, AttestationSettings, ChainSettings, SandboxSettings

EDGE_TOML = """\
# jupyter-rapha edge settings. Paths are relative to this directory.
[edge]
id = "{edge_id}"
# Demo mode allows the unsafe software attestation backend. Never in production.
demo = {demo}
currency = {currency}

[server]
host = {host}
port = {port}
# HTTPS: a PEM certificate (chain) and its key. Serve plain HTTP only on loopback or
# behind a TLS-terminating proxy.
tls_cert = {tls_cert}
tls_key = {tls_key}

[chain]
# "embedded": a local EVM dev chain served at /chain. "rpc": any EVM JSON-RPC endpoint
# (e.g. Polygon, chain id 137) with the funded account in keys/chain.key. "rfc3161": an
# RFC 3161 timestamp authority instead of a chain (set tsa_url and tsa_certificate).
backend = {chain_backend}
rpc_url = {rpc_url}
min_confirmations = {min_confirmations}
# Decimal places of the token research is settled in (18: the chain's native currency);
# a dataset price with more places is refused when the dataset is added.
# token_decimals = 18
# Settle priced datasets on chain through the edge's escrow contract (embedded chain only):
# a job runs only when its researcher locked price x budget for it; its release claims the
# records used; a job that ends without release is refunded in full.
settlement = {settlement}

[attestation]
# "auto" finds TDX (configfs-tsm) or SGX (Gramine); "unsafe_software" is a signed stand-in
# for machines without a TEE, allowed only in demo mode and labelled in every receipt.
backend = "{attestation}"
# Offline DCAP collateral (TCB Info, CRLs) and the measurement allowlist, as JSON files.
collateral = {collateral}
policy = {policy}

[sandbox]
# Path of the rapha-airgap binary; empty: rust/airgap/target/release/rapha-airgap, then PATH.
airgap_binary = {airgap_binary}
# The distributions the signed catalog names with their versions, so notebooks can check a
# cell's imports before it leaves; empty: every one installed in the job interpreter. The
# key ones (torch, numpy, monai, pydicom, safetensors) are always named.
listed_packages = {listed_packages}
# NVIDIA GPUs given to each job's sandbox: "all", indices such as [0, 1], or [] for none.
# The edge refuses to start if the host's driver cannot honour it.
gpus = []
"""


def edge_toml(edge_id: str, *, demo: bool, port: int, settlement: bool = False) -> str:
    """A new edge's edge.toml: every value but the id, demo mode, port and attestation backend
    is the settings' own default (written once, in settings.py), so the file and an empty
    table mean the same."""
    chain, sandbox, attestation = ChainSettings(), SandboxSettings(), AttestationSettings()
    quoted = json.dumps  # a TOML basic string, for the plain values written here
    return EDGE_TOML.format(
        edge_id=edge_id, demo=str(demo).lower(), port=port, settlement=str(settlement).lower(),
        attestation="unsafe_software" if demo else attestation.backend,
        currency=quoted(DEFAULTS["currency"]), host=quoted(DEFAULTS["host"]),
        tls_cert=quoted(DEFAULTS["tls_cert"]), tls_key=quoted(DEFAULTS["tls_key"]),
        chain_backend=quoted(chain.backend), rpc_url=quoted(chain.rpc_url), min_confirmations=chain.min_confirmations,
        collateral=quoted(attestation.collateral), policy=quoted(attestation.policy),
        airgap_binary=quoted(sandbox.airgap_binary), listed_packages=quoted(list(sandbox.listed_packages)))


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
    (root / CONFIG_FILE).write_text(edge_toml(edge_id, demo=args.demo, port=args.port, settlement=args.settlement))
    _copy_policies(root)
    if args.demo:
        _add_demo_dataset(root, args.records)
    _start_audit_log(root, edge_id)
    if args.settlement:
        print(f"escrow contract {_deploy_escrow(root)} deployed on the embedded chain")
    print(f"edge {edge_id} initialised in {root}")
    print(next_steps(root, args.demo))
    return 0


def _deploy_escrow(root: Path) -> str:
    """The escrow contract on the new edge's embedded chain, recorded in its state."""
    from .anchor.account import load_chain_account
    from .anchor.devchain import EmbeddedChain
    from .anchor.escrow import open_escrow

    account = load_chain_account(root / "keys" / "chain.key")
    chain_dir = root / "state" / "chain"
    return open_escrow(EmbeddedChain(chain_dir, account), account, chain_dir).address


def next_steps(root: Path, demo: bool) -> str:
    config = f"--config {root}"
    steps = [] if demo else [
        f"rapha-edge synth {root}/data/cxr --n 200      (or use a real DICOM folder, PACS, FHIR export or CSV)",
        f"rapha-edge datasets add cxr --path data/cxr --schema examples/schema-cxr.json --price 0.05 {config}"]
    steps += [f"rapha-edge researchers add NAME 'ed25519:...' {config}"
              "   (the line from the researcher's 'rapha keygen')",
              f"rapha-edge researchers add NAME 'ed25519:...' --role output-checker {config}   (hospital staff who "
              "release held outputs: datasets whose release mode is review or two_person wait for them)",
              f"grant the dataset to them in {root}/policies/data.json (hospital.datasets.NAME)",
              f"rapha-edge serve {config}",
              f"rapha-edge status {config}   (the URL and public key to hand the researcher)"]
    return "next steps:\n" + "\n".join(f"  {number}. {step}" for number, step in enumerate(steps, 1)) + (
        "\nedits to policies/data.json take effect at the next job, without a restart; "
        "a broken edit keeps the previous policy and is logged")


def _start_audit_log(root: Path, edge_id: str) -> None:
    """The database and its audit head come with the keys: from now on an edge with keys
    but no database, or with a log shorter than its head, has lost records."""
    from .audit import AuditLog
    from .audit_head import HEAD_FILE, HeadFile
    from .db import Database
    from .settings import load_settings

    settings = load_settings(root)
    db = Database(settings.db_path)
    try:
        AuditLog(db, HeadFile(settings.state_dir / HEAD_FILE)).append("edge.init", detail={"edge_id": edge_id})
    finally:
        db.close()


def _copy_policies(root: Path) -> None:
    source = Path(__file__).resolve().parent.parent / "policies"
    if source.is_dir():
        # the compliance map describes the code, not this edge's policy: it is read from here
        ignore = shutil.ignore_patterns("*_test.rego", "__pycache__", "compliance.json")
        shutil.copytree(source, root / "policies", ignore=ignore)


def _add_demo_dataset(root: Path, records: int) -> None:
    from .data.registry import DatasetRegistry
    from .data.synth import make_synthetic_dataset, synthetic_dataset_entry

    make_synthetic_dataset(root / "data" / "synthetic-cxr", records, seed=7)
    DatasetRegistry(root).add(synthetic_dataset_entry("synthetic-cxr", "data/synthetic-cxr"))


def cmd_serve(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from .edge import Edge
    from .server import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    edge = Edge.open(args.config)
    host = args.host or edge.settings.host
    port = edge.settings.port if args.port is None else args.port

    def ready(bound: int) -> None:
        scheme = "https" if edge.settings.tls_cert else "http"
        print(f"rapha-edge {edge.settings.edge_id} serving on {scheme}://{host}:{bound}", flush=True)

    try:
        asyncio.run(_serve_until_stopped(serve(edge, host, port, ready)))
    except KeyboardInterrupt:
        return 0  # Ctrl-C before the loop took the signal over: nothing was started yet
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        print(f"rapha-edge: {host}:{port} is already in use (another edge or program listens there); "
              "stop it, or serve on another port with --port N (or server.port in edge.toml)", file=sys.stderr)
        return 1
    return 0


async def _serve_until_stopped(serving: Any) -> None:
    """Run ``serving`` until SIGTERM (systemd, docker stop) or SIGINT (Ctrl-C) arrives,
    then cancel it, so that serve() closes the edge: the running job is stopped, the
    outbox is stopped and ``edge.stop`` is audited. Python's default for SIGTERM would
    end the process on the spot and leave all of that undone."""
    import asyncio
    import signal

    task = asyncio.ensure_future(serving)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        if not task.cancelled():
            raise  # cancelled from elsewhere, not by a signal


def count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a count: give a whole number, 0 or more")
    return int(text)


def port_number(text: str) -> int:
    """A TCP port, 1 to 65535, or 0 for any free one (the port taken is printed)."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: give 1 to 65535, or 0 for any free port")
    return port


def cmd_researchers_add(args: argparse.Namespace) -> int:
    from .researchers import Researcher, ResearcherRegistry
    from .settings import load_settings

    config = load_settings(args.config).config_dir  # a wrong --config is named, not filled with a registry
    key_text = Path(args.pubkey).read_text() if Path(args.pubkey).is_file() else args.pubkey
    researcher = Researcher(args.name, key_text.strip(), tuple(args.role or ["researcher"]),
                            tuple(args.purpose or ["research"]), args.chain_address or "")
    replaced = ResearcherRegistry(config).add(researcher, replace=args.replace)
    for old in replaced:
        print(f"replaced {old.name} (key {old.key_id})")
    address = ResearcherRegistry(config).by_name(researcher.name).chain_address
    print(f"registered {researcher.name} (key {researcher.key_id}"
          + (f", pays escrow from {address})" if address else ")"))
    return 0


def cmd_researchers_remove(args: argparse.Namespace) -> int:
    from .researchers import ResearcherRegistry
    from .settings import load_settings

    removed = ResearcherRegistry(load_settings(args.config).config_dir).remove(args.name)
    print(f"removed {removed.name} (key {removed.key_id}); requests signed by that key are refused from now on")
    return 0


def cmd_researchers_list(args: argparse.Namespace) -> int:
    from .researchers import ResearcherRegistry

    for r in ResearcherRegistry(Path(args.config)).all():
        print(f"{r.name}\t{r.key_id}\troles={','.join(r.roles)}\tpurposes={','.join(r.purposes)}"
              + (f"\tchain={r.chain_address}" if r.chain_address else ""))
    return 0


def cmd_datasets_add(args: argparse.Namespace) -> int:
    """Every check before anything is written: a refused add leaves the registry as it was."""
    from jupyter_rapha.protocol.escrow import to_units

    from .data.registry import DatasetRegistry, parse_dataset, parse_price
    from .data.sample import sample_dataset
    from .settings import load_settings

    settings = load_settings(args.config)
    config = settings.config_dir
    registry = DatasetRegistry(config)
    if args.name in registry.all() and not args.replace:
        raise BadInput(f"a dataset named {args.name!r} is already registered",
                       hint="add --replace to replace it, or 'rapha-edge datasets remove NAME' first")
    parse_price(args.price, args.name)
    # settled on chain as price x records in the token's smallest unit: exactly, or not at all
    to_units(args.price, settings.chain.token_decimals, what=f"dataset {args.name}: --price")
    schema = read_schema(Path(args.schema))
    location = check_location(args.source, args.path, config)
    consent = check_opt_out(args.opt_out, config)
    entry = {"name": args.name, "version": args.version, "source": args.source, "location": args.path,
             "fields": schema.get("fields"), "labels": schema.get("labels", {}),
             "features": schema.get("features", {}), "options": _source_options(args, schema.get("options", {})),
             "opt_out": args.opt_out, "price_per_record": args.price, "max_records": args.max_records,
             "sensitivity": args.sensitivity, "description": args.description}
    dataset = parse_dataset(entry)
    report = sample_dataset(dataset, location, consent, args.sample or None)
    replaced = registry.add(dataset, replace=args.replace)
    print(report.summary())
    print(f"dataset {args.name} {'replaced' if replaced else 'added'}; grant it to researchers in "
          f"{config / 'policies' / 'data.json'} (hospital.datasets.{args.name})")
    return 0


SCHEMA_KEYS = ("fields", "labels", "features", "options")


def read_schema(path: Path) -> dict[str, Any]:
    import difflib

    try:
        schema = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise BadInput(f"--schema {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"--schema {path} cannot be read: {exc}") from exc
    except ValueError as exc:
        raise BadInput(f"--schema {path} is not valid JSON: {exc}") from exc
    if not isinstance(schema, dict):
        raise BadInput(f"--schema {path} must hold a JSON object with {', '.join(SCHEMA_KEYS)}")
    for key in schema:
        if key not in SCHEMA_KEYS:
            close = difflib.get_close_matches(key, SCHEMA_KEYS, n=1)
            raise BadInput(f"--schema {path}: unknown key {key!r}" + (f"; did you mean {close[0]!r}?" if close else
                                                                     f"; the keys are {', '.join(SCHEMA_KEYS)}"))
    return schema


def check_location(source: str, given: str, config: Path) -> Path | str:
    """The source's location as jobs will resolve it (relative to the config directory)."""
    if source == "dicomweb":
        if not given.startswith(("http://", "https://")):
            raise BadInput(f"--path {given!r}: a DICOMweb source needs the PACS's http(s) base URL")
        return given
    path = _config_path(given, config)
    wanted = "file" if source == "csv" else "folder"
    if (path.is_file() if wanted == "file" else path.is_dir()):
        return path
    raise BadInput(f"--path {given}: no such {wanted} ({path})", hint=_relative_hint(given, config, wanted))


def check_opt_out(given: str, config: Path) -> Any:
    from .data.consent import OptOutList

    if not given:
        return OptOutList.none()
    path = _config_path(given, config)
    if not path.is_file():
        raise BadInput(f"--opt-out {given}: no such file ({path})", hint=_relative_hint(given, config, "file"))
    try:
        consent = OptOutList.from_file(path)
    except RaphaError as exc:
        raise BadInput(f"--opt-out {given}: {exc.message}",
                       hint="it must be UTF-8 text, one patient id a line") from exc
    print(f"opt-out list {given}: {len(consent)} patient id(s)")
    return consent


def _config_path(given: str, config: Path) -> Path:
    path = Path(given)
    return path if path.is_absolute() else config / path


def _relative_hint(given: str, config: Path, wanted: str) -> str:
    here = Path.cwd() / given
    if not Path(given).is_absolute() and (here.is_file() if wanted == "file" else here.is_dir()):
        return f"relative paths are read from the config directory {config}; give the absolute path {here.resolve()}"
    return f"relative paths are read from the config directory {config}"


def _source_options(args: argparse.Namespace, options: dict[str, Any]) -> dict[str, Any]:
    """Source settings from the command line, over those in the schema file."""
    options = dict(options)
    if args.study:
        options["studies"] = list(args.study)
    if args.series:
        options["series"] = [dict(zip(("study", "series"), item.split("/", 1), strict=False)) for item in args.series]
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


def cmd_datasets_remove(args: argparse.Namespace) -> int:
    from .data.registry import DatasetRegistry
    from .settings import load_settings

    config = load_settings(args.config).config_dir
    removed = DatasetRegistry(config).remove(args.name)
    print(f"removed dataset {removed.name}; its records stay where they are. Remove hospital.datasets.{removed.name} "
          f"from {config / 'policies' / 'data.json'} too, or a new dataset of that name is granted at once")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from .status import edge_status, render

    status = edge_status(args.config, probe=not args.no_probe)
    print(json.dumps(status, indent=2) if args.json else render(status))
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from .data.synth import SynthOptions, make_synthetic_dataset

    options = SynthOptions(sizes=_sizes(args.sizes), modality=args.modality, photometric=args.photometric,
                           frames=args.frames, transfer_syntax=args.transfer_syntax, slices=args.slices,
                           shuffle=args.shuffle)
    try:
        make_synthetic_dataset(Path(args.path), args.n, seed=args.seed, size=args.size, options=options)
    except ValueError as exc:
        raise BadInput(f"synth: {exc}") from None
    shapes = ", ".join(f"{r}x{c}" for r, c in options.sizes) or f"{args.size}x{args.size}"
    layout = f"series of {args.slices} slices" if args.slices > 1 else f"{args.frames} frame(s)"
    print(f"wrote {args.n} synthetic DICOM records to {args.path} ({args.modality}, {shapes}, {args.photometric}, "
          f"{layout}, {args.transfer_syntax}{', shuffled' if args.shuffle else ''})")
    return 0


def _sizes(text: str) -> tuple[tuple[int, int], ...]:
    """``256x256,320x256`` (rows x columns) -> ((256, 256), (320, 256))."""
    sizes = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        rows, sep, columns = item.lower().partition("x")
        if not sep or not rows.isdigit() or not columns.isdigit():
            raise BadInput(f"synth: --sizes takes ROWSxCOLUMNS items separated by commas, not {item!r}")
        sizes.append((int(rows), int(columns)))
    return tuple(sizes)


def _audit_status(settings: Any) -> tuple[Any, Any]:
    """The same check the edge makes at start; (status, audit log or None when there is no database)."""
    from .compliance import open_audit_status

    return open_audit_status(settings)


def cmd_settlement(args: argparse.Namespace) -> int:
    from .db import Database
    from .researchers import ResearcherRegistry
    from .settings import load_settings
    from .settlement_report import claim_rows, parse_since, render

    settings = load_settings(args.config)
    since = parse_since(args.since) if args.since else 0.0
    names = {r.key_id: r.name for r in ResearcherRegistry(settings.config_dir).all()}
    rows = claim_rows(Database(settings.db_path), names, since, settings.chain.token_decimals)
    print(render(rows, "json" if args.json else "csv" if args.csv else "text"))
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from .settings import load_settings

    status, audit = _audit_status(load_settings(args.config))
    if audit is not None:
        audit.db.close()
    print(status.message, file=sys.stdout if status.ok else sys.stderr)
    if not status.ok:
        print(f"rapha-edge: to recover: {status.hint}", file=sys.stderr)
    return 0 if status.ok else 1


def cmd_audit_accept(args: argparse.Namespace) -> int:
    from .audit import AuditLog
    from .audit_head import HEAD_FILE, HeadFile, accept_loss
    from .db import Database
    from .settings import load_settings

    settings = load_settings(args.config)
    status, audit = _audit_status(settings)
    if status.ok:
        audit.db.close()
        print(status.message)
        print("nothing to accept")
        return 0
    if not args.reason:
        print(f"{status.message}\nrapha-edge: say why the loss is accepted with --reason TEXT "
              "(it is written into the log)", file=sys.stderr)
        return 2
    if audit is None:  # the database is gone: a new one whose first entry records the loss
        audit = AuditLog(Database(settings.db_path), HeadFile(settings.state_dir / HEAD_FILE))
        status = _audit_status_for_new_log(status, audit)
    try:
        digest = accept_loss(audit, status, args.reason)
    finally:
        audit.db.close()
    print(f"recorded in the audit log as audit.accept (entry hash {digest[:16]}…); the edge may start again")
    return 0


def _audit_status_for_new_log(missing: Any, audit: Any) -> Any:
    from .audit_head import check_audit

    status = check_audit(audit, audit.head_file, None)
    return status if not status.ok else missing


def cmd_compliance(args: argparse.Namespace) -> int:
    from .compliance import evaluate, render_html, render_text
    from .settings import load_settings

    report = evaluate(load_settings(args.config))
    if args.json:
        print(json.dumps(report, indent=2))
    elif args.html:
        print(render_html(report), end="")
    else:
        print(render_text(report))
    return 0


def cmd_console(args: argparse.Namespace) -> int:
    from .console.app import Console, console_identity, serve
    from .settings import load_settings

    settings = load_settings(args.config)
    if args.port and args.port == settings.port:
        raise BadInput(f"--port {args.port} is the researcher API's port (server.port): the console listens apart "
                       "from it", hint="give another --port, or 0 for any free one")
    console = Console(settings, console_identity(settings, Path(args.key)))

    def ready(url: str) -> None:
        print(f"console for edge {settings.edge_id}, signing as {console.identity.name} "
              f"({', '.join(console.identity.roles)}); open (the token works once):\n  {url}", flush=True)

    serve(console, args.port, ready)  # returns on Ctrl-C or SIGTERM
    print("console stopped", flush=True)
    return 0


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
    from jupyter_rapha import __version__

    parser = argparse.ArgumentParser(prog="rapha-edge", description="Run and administer a jupyter-rapha edge.")
    parser.add_argument("--version", action="version", version=f"rapha-edge (jupyter-rapha) {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, func: Callable[[argparse.Namespace], int], help: str,
                parent: Any = sub) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, help=help)
        p.set_defaults(func=func)
        p.add_argument("--config", default=".", help="edge config directory (default: current directory)")
        return p

    p = command("init", cmd_init, "create a new edge: settings, keys, state")
    p.add_argument("dir", nargs="?", default=".", help="the new config directory (default: current directory)")
    p.add_argument("--demo", action="store_true", help="demo mode with a synthetic dataset 'synthetic-cxr'")
    p.add_argument("--edge-id", default="", help="the edge's name (default: the directory's name)")
    p.add_argument("--port", type=port_number, default=8470, help="server.port to write (default: 8470)")
    p.add_argument("--records", type=int, default=120, help="synthetic records for --demo")
    p.add_argument("--settlement", action="store_true",
                   help="settle priced datasets on the embedded chain: deploys the escrow contract now and "
                        "writes chain.settlement = true (with --demo, registered researchers' chain accounts "
                        "are funded from the dev chain at each start)")
    p = command("serve", cmd_serve, "serve the edge over HTTP")
    p.add_argument("--port", type=port_number, default=None,
                   help="TCP port, 1 to 65535, or 0 for any free port (the port taken is printed); "
                        "default: server.port in edge.toml")
    p.add_argument("--host", default="", help="address to listen on (default: server.host in edge.toml)")
    p = command("status", cmd_status, "what to hand a researcher (URL, edge key) and what stops jobs")
    p.add_argument("--json", action="store_true", help="print the status as JSON, for machines")
    p.add_argument("--no-probe", dest="no_probe", action="store_true",
                   help="do not ask the running edge (GET /v1/edge on this machine) how it is")
    researchers = sub.add_parser("researchers", help="registered researcher keys").add_subparsers(dest="sub",
                                                                                               required=True)
    p = command("add", cmd_researchers_add, "register a researcher's public key", researchers)
    p.add_argument("name", help="the researcher's name, as the policy and the audit log show it")
    p.add_argument("pubkey", help="'ed25519:BASE64', a PEM, or a file holding either")
    p.add_argument("--role", action="append",
                   help="a role the policy grants datasets to (repeatable; default: researcher); "
                        "output-checker: may approve or reject held outputs with 'rapha-edge release'; "
                        "data-steward: may approve or reject a job before it runs with 'rapha-edge approval'")
    p.add_argument("--purpose", action="append",
                   help="a purpose this researcher may train for (repeatable; default: research)")
    p.add_argument("--replace", action="store_true",
                   help="replace the entry of this name, and any entry holding this key, instead of refusing")
    p.add_argument("--chain-address", default="",
                   help="the researcher's chain account (0x..., printed by their 'rapha keygen'): the only "
                        "account whose escrow lock lets their jobs on priced datasets run where settlement is on")
    command("list", cmd_researchers_list, "list registered researchers", researchers)
    p = command("remove", cmd_researchers_remove, "unregister a researcher: their key is refused from now on",
                researchers)
    p.add_argument("name", help="the name given to 'researchers add' (see 'researchers list')")
    datasets = sub.add_parser("datasets", help="the dataset registry").add_subparsers(dest="sub", required=True)
    p = command("add", cmd_datasets_add, "register a dataset", datasets)
    p.add_argument("name", help="the dataset's name, as researchers ask for it")
    p.add_argument("--source", default="dicom-folder", choices=["dicom-folder", "dicomweb", "fhir-ndjson", "csv"],
                   help="the kind of source (default: dicom-folder)")
    p.add_argument("--path", required=True,
                   help="folder, CSV file or DICOMweb base URL of the source; a relative path is read from the "
                        "config directory")
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
                   help="file of opted-out patient ids, one per line, applied before counting; a relative path "
                        "is read from the config directory")
    p.add_argument("--version", default="1", help="the dataset's version, shown to researchers")
    p.add_argument("--price", default="0", help="price per record, a decimal of 0 or more (default: 0)")
    p.add_argument("--max-records", type=int, default=100_000, help="the largest budget one job may ask for")
    p.add_argument("--sensitivity", default="special-category",
                   help="the policy's sensitivity class (special-category needs differential privacy)")
    p.add_argument("--description", default="", help="one line shown to researchers in the catalog")
    p.add_argument("--sample", type=count, default=200,
                   help="records to read from the source before registering it, to check it against the "
                        "schema (default: 200; 0: all)")
    p.add_argument("--replace", action="store_true", help="replace a dataset of this name instead of refusing")
    command("list", cmd_datasets_list, "list datasets", datasets)
    p = command("remove", cmd_datasets_remove, "unregister a dataset (its records are left alone)", datasets)
    p.add_argument("name", help="the dataset's name (see 'datasets list')")
    p = command("synth", cmd_synth, "write a synthetic DICOM dataset with fake identifiers")
    p.add_argument("path", help="folder to write the DICOM files to")
    p.add_argument("--n", type=int, default=100, help="number of records (default 100)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--size", type=int, default=32, help="square image size when --sizes is not given")
    p.add_argument("--sizes", default="", help="ROWSxCOLUMNS,... cycled over the records, e.g. 256x256,320x256")
    p.add_argument("--modality", default="OT", choices=["OT", "CT"],
                   help="OT: secondary capture (default); CT: Hounsfield units, RescaleIntercept -1024")
    p.add_argument("--photometric", default="MONOCHROME2", choices=["MONOCHROME2", "MONOCHROME1"],
                   help="PhotometricInterpretation of the images (default MONOCHROME2)")
    p.add_argument("--frames", type=int, default=1,
                   help="frames per object (NumberOfFrames); with CT, one Enhanced CT volume per record")
    p.add_argument("--slices", type=int, default=1,
                   help="CT only: each record a series of this many single-frame slices (a volume)")
    p.add_argument("--shuffle", action="store_true", help="name the files in a random order")
    p.add_argument("--transfer-syntax", dest="transfer_syntax", default="explicit", choices=["explicit", "rle"],
                   help="explicit: Explicit VR Little Endian; rle: RLE Lossless")
    p = command("settlement", cmd_settlement, "the escrow claims this edge made, per researcher and dataset")
    p.add_argument("--since", default="", help="only claims queued from this UTC date (2026-12-01) or time on")
    style = p.add_mutually_exclusive_group()
    style.add_argument("--json", action="store_true", help="claims and totals as JSON")
    style.add_argument("--csv", action="store_true", help="claims as CSV, for a spreadsheet")
    audit = sub.add_parser("audit", help="the hash-chained audit log").add_subparsers(dest="sub", required=True)
    command("verify", cmd_audit_verify, "check every hash in the audit log and that it reaches its recorded head",
            audit)
    p = command("accept", cmd_audit_accept, "after a known loss of audit entries: record it in the log so the "
                "edge starts again", audit)
    p.add_argument("--reason", default="", help="why the loss is accepted (written into the log)")
    p = command("wan", cmd_wan, "the appliance WAN gate: status, or resume after a failed restore")
    p.add_argument("action", choices=["status", "resume"], help="status: show the gate; resume: restore the WAN")
    p = command("provenance", cmd_provenance, "prove whether a patient's records were used in a job")
    p.add_argument("patient_id", help="the patient's id in the hospital's source")
    p.add_argument("job_id", help="the job to check")
    p = command("compliance", cmd_compliance, "the compliance map (UK GDPR, NHS DSPT, Caldicott, HIPAA): "
                "each control met, not met or not applicable on this edge, and why")
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true", help="print every control with its evidence as JSON")
    shown.add_argument("--html", action="store_true", help="print one self-contained HTML page (for the DPO)")
    p = command("console", cmd_console, "the hospital's web console on 127.0.0.1: jobs, approvals, release "
                "reviews, datasets, audit log, compliance; decisions signed with --key")
    p.add_argument("--key", required=True, help="your private key (PEM), registered with the role data-steward "
                                                "and/or output-checker; the console signs your decisions with it")
    p.add_argument("--port", type=port_number, default=0,
                   help="TCP port on 127.0.0.1 (default: 0, any free port; the URL printed names it); never "
                        "server.port")
    jobs = sub.add_parser("jobs", help="jobs at this edge (admin)").add_subparsers(dest="sub", required=True)
    command("list", cmd_jobs_list, "list jobs", jobs)
    from .release.commands import add_release_commands

    add_release_commands(sub, command)
    from .approval_commands import add_approval_commands

    add_approval_commands(sub, command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigFault as exc:
        print(f"rapha-edge: {exc.admin_diagnostics()}", file=sys.stderr)
        return 1
    except RaphaError as exc:
        print(f"rapha-edge: {exc.diagnostics()}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"rapha-edge: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
