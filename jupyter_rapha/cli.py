"""``rapha``: the researcher's command line (keygen, edges, run, fetch, verify).

Exit codes: 0 success, 1 refusal or failure (denied, failed, did not verify), 2 usage,
3 every check that ran passed but a receipt's anchor is still pending (``run`` and ``fetch``
then still write the outputs; ``rapha fetch`` later picks up the anchored receipt).
Messages are one line a person can act on; tracebacks are for bugs, not for answers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from .protocol.errors import BadInput, RaphaError

OUTPUT_FILES = ("weights.safetensors", "metrics.json", "receipt.json", "edge.pub")


VERIFY_EXIT_CODES = """exit codes:
  0  every check passed (a SKIP allowed by --offline or --skip-* included)
  1  a check failed, or an output was missing and not allowed to be skipped
  2  usage error (bad or conflicting options)
  3  every check that ran passed, but the anchor is still pending (fetch the receipt again later)"""
HELD_EXIT = 4  # rapha run / fetch: the job's outputs are held for review at the edge; fetch them later
RUN_EXIT_CODES = """exit codes:
  0  released: outputs written, the receipt verified (any warnings printed)
  1  denied, failed, refused at release, or the receipt did not verify (nothing written)
  3  released and written, but the receipt's anchor is still pending (rapha fetch later)
  4  held at the edge for review by the hospital's output checkers (rapha fetch once released)"""
KEY_HELP = "researcher key file (default $RAPHA_KEY or ~/.config/rapha/researcher_ed25519.pem)"
EDGE_HELP = "edge URL, e.g. https://edge.hospital.example:8470"


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="rapha", description="Train where the data lives; verify what came back.")
    parser.add_argument("--version", action="version", version=f"rapha (jupyter-rapha) {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _keygen_parser(sub)
    _edges_parser(sub)
    _run_parser(sub)
    _fetch_parser(sub)
    _verify_parser(sub)
    _statement_parser(sub)
    return parser


def _statement_parser(sub: Any) -> None:
    statement = sub.add_parser("statement",
                               help="your escrow locks, claims and refunds at an edge, read from its chain")
    statement.add_argument("--edge", required=True, help=EDGE_HELP)
    statement.add_argument("--key", default="", help=KEY_HELP)
    statement.add_argument("--json", action="store_true", help="print the statement as JSON")
    statement.add_argument("--withdraw", action="store_true",
                           help="then withdraw your refunds credited in the escrow contract to your chain account")


def _keygen_parser(sub: Any) -> None:
    keygen = sub.add_parser("keygen", help="create your researcher signing key (or --show the existing one)")
    keygen.add_argument("--out", default="", help=KEY_HELP)
    keygen.add_argument("--force", action="store_true", help="replace an existing key (edges that registered it "
                        "will refuse you until they register the new one)")
    keygen.add_argument("--show", action="store_true",
                        help="print the public key line of the existing key again; never writes a key")


def _edges_parser(sub: Any) -> None:
    edges = sub.add_parser("edges", help="what edges offer: datasets, attestation and the site's environment "
                           "(Python version and packages a job can import)")
    edges.add_argument("--edge", action="append", required=True, metavar="URL",
                       help=EDGE_HELP + " (repeatable)")
    edges.add_argument("--key", default="", help=KEY_HELP)
    edges.add_argument("--packages", action="store_true", help="list every package the edge lists, with versions")
    edges.add_argument("--json", action="store_true", help="print each edge's verified entry as JSON")


def _run_parser(sub: Any) -> None:
    run = sub.add_parser("run", help="run a training cell at an edge", epilog=RUN_EXIT_CODES,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("cell", help="Python file holding the cell's code")
    run.add_argument("--edge", required=True, help=EDGE_HELP)
    run.add_argument("--dataset", required=True, help="dataset name in the edge's catalog")
    run.add_argument("--budget", type=int, required=True, help="most records the job may use")
    run.add_argument("--key", default="", help=KEY_HELP)
    run.add_argument("--epochs", type=int, default=1, help="passes over the cohort (rapha.epochs; default 1)")
    run.add_argument("--param", action="append", nargs="+", default=[], metavar="K=V",
                     help="job parameter the cell reads as rapha.params[K] (repeatable)")
    run.add_argument("--fields", default="", help="comma-separated (default: all in the schema)")
    run.add_argument("--max-seconds", type=int, default=3600, help="time budget of the job (default 3600)")
    run.add_argument("--processes", type=int, default=1,
                     help="job processes under one sandbox, ranks of one torch.distributed group (default 1;"
                          " the edge's sandbox.max_processes caps it)")
    run.add_argument("--max-cost", default="",
                     help="refuse locally, before the cell leaves, when the budget could cost more than this"
                          " (the edge's price per record x --budget, in the edge's currency)")
    run.add_argument("--out", required=True, help="directory for weights, metrics, receipt, edge.pub")
    run.add_argument("--artifact", action="append", default=[], metavar="NAME=PATH",
                     help="safetensors weights the job reads with rapha.artifact(NAME); repeatable")
    run.add_argument("--include", action="append", default=[], metavar="PATH",
                     help="a .py file or a folder of them that travels with the cell, importable by its name; "
                          "repeatable")
    run.add_argument("--no-preflight", action="store_true",
                     help="send the cell without the local scan and policy dry run (the edge still decides)")


def _fetch_parser(sub: Any) -> None:
    fetch = sub.add_parser("fetch", help="fetch a finished job's outputs again (e.g. once its anchor is made)",
                           epilog=RUN_EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    fetch.add_argument("job_id", metavar="JOB_ID", help="the job's id, or a unique prefix of it (8 or more characters)")
    fetch.add_argument("--edge", required=True, help=EDGE_HELP)
    fetch.add_argument("--key", default="", help=KEY_HELP)
    fetch.add_argument("--out", required=True,
                       help="directory for weights, metrics, receipt, edge.pub (an edge.pub there is the pinned key)")


def _verify_parser(sub: Any) -> None:
    verify = sub.add_parser("verify", help="verify receipts", epilog=VERIFY_EXIT_CODES,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    verify.add_argument("receipts", nargs="+", metavar="RECEIPT", help="receipt.json file(s)")
    verify.add_argument("--edge-key", default="",
                        help="edge public key (ed25519:... or a file); default edge.pub beside")
    verify.add_argument("--rpc", default="", help="JSON-RPC URL of the chain holding the anchor")
    verify.add_argument("--offline", action="store_true",
                        help="do not consult a chain: signature, outputs and batch inclusion proof only")
    verify.add_argument("--confirmations", type=int, default=1, metavar="N",
                        help="blocks the anchor must be under, counting its own (default 1)")
    verify.add_argument("--json", action="store_true", help="print the result as JSON")
    verify.add_argument("--tsa-cert", default="", metavar="PEM",
                        help="trust anchor (PEM certificate or chain) for RFC 3161 timestamp anchors")
    verify.add_argument("--require-tee", action="store_true",
                        help="fail a receipt whose job was attested only by the unsafe software stand-in, "
                             "or not at all")
    verify.add_argument("--skip-weights", action="store_true",
                        help="accept a receipt with no weights.safetensors beside it (its line says SKIP)")
    verify.add_argument("--skip-metrics", action="store_true",
                        help="accept a receipt with no metrics.json beside it (its line says SKIP)")


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage message
        return int(exc.code or 0) if isinstance(exc.code, int) else 2
    commands = {"keygen": _keygen, "edges": _edges, "run": _run, "fetch": _fetch, "verify": _verify,
                "statement": _statement}
    from .client import JobHeld

    try:
        return commands[args.command](args)
    except JobHeld as held:  # not a failure: the outputs wait for the hospital's output checkers
        _print_error(args.command, held)
        return HELD_EXIT
    except RaphaError as exc:
        _print_error(args.command, exc, _cell_source(args))
        return 1


def _cell_source(args: argparse.Namespace) -> str | None:
    """The researcher's own cell file, to quote the line a failed job names."""
    try:
        return Path(args.cell).read_text("utf-8") if getattr(args, "cell", None) else None
    except (OSError, UnicodeDecodeError):
        return None


def _print_error(command: str, exc: RaphaError, source: str | None = None) -> None:
    from .magic import error_lines

    lines = error_lines(exc, source=source)
    print(f"rapha {command}: " + lines[0].removeprefix("rapha: "), file=sys.stderr)
    for line in lines[1:]:
        print(line, file=sys.stderr)


def _keygen(args: argparse.Namespace) -> int:
    from .keystore import chain_key_path, create_key, default_key_path, ensure_chain_account, load_key, public_key_line

    path = Path(args.out).expanduser() if args.out else default_key_path()
    if args.show:
        if args.force:
            raise BadInput("give --show or --force, not both: --show never writes a key")
        key = load_key(path)
        if chain_key_path(path).exists():
            _say_chain_account(*ensure_chain_account(path), chain_key_path(path))
        print(f"{path}: register this public key with the hospital:", file=sys.stderr)
        print(public_key_line(key))
        return 0
    key = create_key(path, force=args.force)
    _say_chain_account(*ensure_chain_account(path), chain_key_path(path))
    print(f"wrote {path} (mode 0600); register this public key with the hospital:", file=sys.stderr)
    print(public_key_line(key))
    return 0


def _statement(args: argparse.Namespace) -> int:
    """Each of your jobs at the edge with its escrow lock as the chain holds it: locked,
    claimed (records, paid, refunded) or cancelled; then your account's balance and the
    refunds waiting in the contract (``--withdraw`` takes them)."""
    from .client import EdgeClient
    from .escrow_client import statement_of
    from .keystore import chain_key_of, load_key
    from .protocol.chain_account import load_chain_account

    client = EdgeClient(args.edge, load_key(args.key or None))
    account = load_chain_account(chain_key_of(client.key))
    document = statement_of(client, account, withdraw=args.withdraw)
    if args.json:
        print(json.dumps(document, indent=2, sort_keys=True))
        return 0
    for job in document["jobs"]:
        print(f"{job['job_id'][:12]}  {job['dataset']}  {job['state']}  locked {job['locked']}"
              + (f"  {job['records']} records: {job['paid']} paid, {job['refunded']} refunded"
                 if job["state"] == "claimed" else ""))
    print(f"account {document['account']}: balance {document['balance']}, refunds to withdraw {document['credit']}"
          + (f"; withdrawn in {document['withdrawn']}" if document.get("withdrawn") else ""))
    return 0


def _say_chain_account(address: str, created: bool, path: Path) -> None:
    print(f"{'wrote' if created else 'kept'} {path} (mode 0600): your chain account {address} pays the escrow of "
          "jobs on priced datasets; give the hospital this address too (researchers add --chain-address)",
          file=sys.stderr)


def _edges(args: argparse.Namespace) -> int:
    """Each edge's signed catalog, checked against the key the edge states (trust on first
    use, as ``rapha run``), in a few lines: what it offers and what a job there can import."""
    from .dispatch import attestation_line, edge_environment
    from .gateways import in_process
    from .keystore import load_key

    key = load_key(args.key or None)
    entries = [entry for url in args.edge for entry in in_process(url, key).edges()]
    if args.json:
        print(json.dumps(entries, indent=2, sort_keys=True))
        return 0 if all(e["healthy"] for e in entries) else 1
    for entry in entries:
        print(f"{entry.get('edge_id') or entry['name']}  {entry['url']}  key {entry['key_id']}")
        if not entry["healthy"]:
            print(f"  catalog refused: {entry.get('problem') or 'not signed by the edge key'}")
            continue
        print(f"  {attestation_line(entry)}")
        print(f"  datasets: {', '.join(entry.get('datasets') or []) or 'none'}")
        environment = edge_environment(entry)
        print(f"  environment: {environment.summary() if environment else 'not listed by this edge'}")
        if environment is not None and args.packages:
            for name, version in sorted(environment.packages.items(), key=lambda item: item[0].lower()):
                print(f"    {name} {version}")
    return 0 if all(e["healthy"] for e in entries) else 1


def _run(args: argparse.Namespace) -> int:
    from .dispatch import check_cell, ship
    from .gateways import in_process
    from .inputs import parse_artifact_args, read_includes
    from .keystore import load_key
    from .progress import collect_watched
    from .training import TrainRequest, parse_params

    out = Path(args.out)
    _check_out_dir(out)
    try:
        code = Path(args.cell).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read the cell file {args.cell}") from exc
    request = TrainRequest(code=code, dataset=args.dataset, budget=args.budget, epochs=args.epochs,
                           params=parse_params([p for group in args.param for p in group]),
                           fields=[f.strip() for f in args.fields.split(",") if f.strip()] or None,
                           max_seconds=args.max_seconds, artifacts=parse_artifact_args(args.artifact),
                           includes=read_includes(args.include), processes=args.processes)
    gateway = in_process(args.edge, load_key(args.key or None))
    _check_cost(gateway.datasets(), request.dataset, request.budget, args.max_cost)
    check_cell(gateway, request, None, _say, run_preflight=not args.no_preflight)
    [result] = ship(gateway, request, None, False,
                    lambda job_id, site: collect_watched(gateway, job_id, _progress(job_id, request.epochs)))
    return _save_result("run", result, out, args.edge)


def _check_cost(datasets: list[dict[str, Any]], dataset: str, budget: int, max_cost: str) -> None:
    """Say what the budget can cost at each edge offering ``dataset`` (price per record x
    budget; only the records used are charged), and refuse before anything leaves when
    that is more than ``max_cost``."""
    from decimal import Decimal, InvalidOperation

    limit = None
    if max_cost:
        try:
            limit = Decimal(max_cost)
        except InvalidOperation:
            limit = None
        if limit is None or not limit.is_finite() or limit < 0:
            raise BadInput(f"--max-cost must be an amount of 0 or more, such as 5.00, not {max_cost!r}")
    offers = next((d.get("offers") or {} for d in datasets if d.get("name") == dataset), {})
    for site, offer in sorted(offers.items()):
        try:
            price = Decimal(str(offer.get("price_per_record", "")))
        except InvalidOperation:
            continue  # an edge that states no price: nothing to estimate
        if not price.is_finite():
            continue
        currency, cost = str(offer.get("currency") or ""), price * budget
        _say(f"cost at edge {site}: at most {cost} {currency} ({price} per record x {budget} records;"
             " only the records used are charged)")
        if limit is not None and cost > limit:
            affordable = int(limit // price) if price else budget
            raise BadInput(f"the budget could cost {cost} {currency} at edge {site}, more than --max-cost {max_cost}:"
                           f" {cost - limit} over",
                           hint=f"lower --budget to {affordable} or raise --max-cost; nothing was sent")


def _fetch(args: argparse.Namespace) -> int:
    from .client import EdgeClient
    from .keystore import load_key
    from .training import fetch_job
    from .verify import EDGE_KEY_FILE, read_edge_key

    out = Path(args.out)
    _check_out_dir(out)
    pinned = read_edge_key(out / EDGE_KEY_FILE) if (out / EDGE_KEY_FILE).is_file() else None
    result = fetch_job(EdgeClient(args.edge, load_key(args.key or None)), args.job_id, pinned)
    return _save_result("fetch", result, out, args.edge)


def _save_result(command: str, result: Any, out: Path, edge: str) -> int:
    """Write the outputs unless the receipt failed a check. A receipt whose anchor is only
    pending is written too (exit 3): the edge released it signed, and its anchor follows."""
    outcome = result.verification.outcome
    if outcome == "failed":
        failed = ", ".join(c.name for c in result.verification.failures())
        print(f"rapha {command}: job {result.job_id} completed but its receipt did not verify ({failed}); "
              f"nothing written", file=sys.stderr)
        return 1
    result.save(out)
    for line in _warnings(result):
        print(f"rapha {command}: {line}", file=sys.stderr)
    if result.privacy_line:  # a DP job: what the edge's trainer spent of the budget
        print(f"rapha {command}: {result.privacy_line}")
    if outcome == "pending":
        print(f"rapha {command}: job {result.job_id} completed, signature verified; wrote {', '.join(OUTPUT_FILES)} "
              f"to {out}; anchor pending: fetch the receipt again later with "
              f"`rapha fetch {result.job_id} --edge {edge} --out {out}`")
        return VERIFY_EXIT["pending"]
    headline = result.receipt_widget.verdict.label  # "verified" or "verified, with warnings: attestation (UNSAFE)"
    print(f"rapha {command}: job {result.job_id} completed, receipt {headline}; "
          f"wrote {', '.join(OUTPUT_FILES)} to {out}")
    return 0


def _warnings(result: Any) -> list[str]:
    return [f"{c.name}: {c.detail}" for c in result.verification.checks if c.status == "warn"]


def _say(line: str) -> None:
    print(f"rapha run: {line}", file=sys.stderr, flush=True)


def _progress(job_id: str, epochs: int) -> Any:
    """tqdm-like progress on stderr: rewritten in place on a terminal, one line per step otherwise."""
    from .progress import ProgressLine

    return ProgressLine(job_id, "", epochs, stream=sys.stderr, prefix="rapha run")


def _check_out_dir(out: Path) -> None:
    # Only a previous run's outputs may be replaced: never delete files we did not write.
    if out.exists() and (not out.is_dir() or set(os.listdir(out)) - set(OUTPUT_FILES)):
        raise BadInput(f"{out} exists and holds other files; choose another --out")


def _verify(args: argparse.Namespace) -> int:
    from .verify import report_dict, verify_receipt_file

    if args.offline and args.rpc:
        print("rapha verify: give --rpc or --offline, not both", file=sys.stderr)
        return 2
    if args.confirmations < 1:
        print("rapha verify: --confirmations must be at least 1", file=sys.stderr)
        return 2
    try:
        tsa_trust = Path(args.tsa_cert).read_bytes() if args.tsa_cert else None
    except OSError as exc:
        print(f"rapha verify: cannot read --tsa-cert {args.tsa_cert}: {exc.strerror}", file=sys.stderr)
        return 2
    reports = [verify_receipt_file(path, edge_key=args.edge_key or None, rpc_url=args.rpc or None,
                                   offline=args.offline, min_confirmations=args.confirmations,
                                   require_tee=args.require_tee, tsa_trust=tsa_trust,
                                   skip_outputs=_skipped_outputs(args))
               for path in args.receipts]
    if args.json:
        print(json.dumps([report_dict(r) for r in reports], indent=2))
    else:
        for report in reports:
            _print_verification(report, len(reports) > 1)
        if len(reports) > 1:
            outcomes = [r.outcome for r in reports]
            print(f"{len(reports)} receipts: {outcomes.count('ok')} OK, {outcomes.count('pending')} anchor pending, "
                  f"{outcomes.count('failed')} FAILED")
    return verify_exit_code([r.outcome for r in reports])


def _skipped_outputs(args: argparse.Namespace) -> frozenset[str]:
    return frozenset(name for name in ("weights", "metrics") if getattr(args, f"skip_{name}"))


VERIFY_EXIT = {"ok": 0, "failed": 1, "pending": 3}


def verify_exit_code(outcomes: list[str]) -> int:
    """1 if any receipt failed; else 3 if any is still waiting for its anchor; else 0."""
    for outcome in ("failed", "pending"):
        if outcome in outcomes:
            return VERIFY_EXIT[outcome]
    return 0


def _print_verification(report: Any, heading: bool) -> None:
    from .verify import format_report

    if heading:
        print(f"{report.source}:")
    print("\n".join(format_report(report)))
    failed = [c.name for c in report.failures()]
    if report.outcome == "pending":
        print(f"ANCHOR PENDING: {report.source} (signature valid; the edge has not anchored it yet: "
              f"fetch the receipt again from the edge later)")
    else:
        print(f"{'OK' if report.passed else 'FAILED'}: {report.source}" +
              (f" (check {', '.join(failed)})" if failed else ""))


if __name__ == "__main__":
    sys.exit(main())
