"""``rapha-edge status``: what a hospital hands a researcher, and what still stops jobs.

Read from the config directory alone (settings, edge key, dataset registry, policy data,
attestation hardware), plus one probe of the running edge's ``GET /v1/edge`` on this
machine. Nothing here changes state.
"""

from __future__ import annotations

import json
import socket
import ssl
import urllib.error
import urllib.request
from dataclasses import fields
from pathlib import Path
from typing import Any

from jupyter_rapha.protocol.errors import RaphaError
from jupyter_rapha.protocol.keys import PrivateKey

from .settings import Settings, load_settings

PROBE_TIMEOUT_SECONDS = 3.0
_LOOPBACK = ("127.0.0.1", "::1", "localhost")
_WILDCARD = ("", "0.0.0.0", "::")


def edge_status(config_dir: str | Path, *, probe: bool = True) -> dict[str, Any]:
    from .edge import EDGE_KEY_FILE

    settings = load_settings(config_dir)
    public_key = PrivateKey.from_pem((settings.keys_dir / EDGE_KEY_FILE).read_bytes()).public
    url = public_url(settings)
    site = {"name": settings.edge_id, "url": url, "public_key": public_key.to_text()}
    status: dict[str, Any] = {
        "edge_id": settings.edge_id, "url": url, "public_key": public_key.to_text(), "key_id": public_key.key_id,
        "jupyter_config": f"c.RaphaExtension.edges = [{json.dumps(site)}]",
        "notes": _url_notes(settings), "datasets": [], "policy": {}, "tee": tee_readiness(settings),
        "unsafe": unsafe_settings(settings), "demo": settings.demo,
    }
    status["datasets"], status["policy"] = _datasets(settings)
    status["release"] = release_readiness(settings, [d["name"] for d in status["datasets"]])
    status["run_approval"] = approval_readiness(settings, [d["name"] for d in status["datasets"]])
    status["running"] = probe_running(settings, public_key.to_text()) if probe else None
    return status


def public_url(settings: Settings) -> str:
    scheme = "https" if settings.tls_cert else "http"
    host = socket.getfqdn() if settings.host in _WILDCARD else settings.host
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{settings.port}"


def _url_notes(settings: Settings) -> list[str]:
    notes = []
    if settings.host in _LOOPBACK:
        notes.append(f"server.host is {settings.host}: only this machine can reach the edge; set server.host "
                     "in edge.toml to the address researchers connect to")
    if not settings.tls_cert:
        notes.append("plain HTTP: set server.tls_cert and server.tls_key, or serve behind a TLS proxy")
    if settings.port == 0:
        notes.append("server.port is 0 (any free port): the URL is only known once the edge runs")
    return notes


def unsafe_settings(settings: Settings) -> list[str]:
    """Every ``unsafe_*`` switch that is on, in any table, and the software attestation."""
    found, covered = [], set()
    for table in ("chain", "sandbox", "attestation"):
        section = getattr(settings, table)
        for item in fields(section):
            if item.name.startswith("unsafe_") and getattr(section, item.name) is True:
                found.append(f"{table}.{item.name} = true")
                covered.add(item.name)
    if settings.attestation.backend == "unsafe_software":
        found.append('attestation.backend = "unsafe_software"')
        covered.add("unsafe_software_attestation")
    return found + [name for name in settings.unsafe if name not in covered]


def tee_readiness(settings: Settings) -> dict[str, Any]:
    from .attestation.backends import SgxGramineBackend, TdxBackend, select_backend

    hardware = [name for name, present in (("tdx", TdxBackend.available()), ("sgx", SgxGramineBackend.available()))
                if present]
    readiness: dict[str, Any] = {"configured": settings.attestation.backend, "hardware": hardware,
                                 "backend": None, "problem": None}
    try:
        # a throwaway key: only the choice is wanted, no quote is made
        backend = select_backend(settings.attestation.backend, demo=settings.demo, edge_key=PrivateKey.generate())
        readiness["backend"] = backend.name
    except RaphaError as exc:
        readiness["problem"] = f"{exc.diagnostics()}: every job is refused at the attestation gate"
    return readiness


def _datasets(settings: Settings) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from jupyter_rapha.protocol.policy import DATA_FILE

    from .data.registry import DatasetRegistry

    registered = DatasetRegistry(settings.config_dir).all()
    policy: dict[str, Any] = {"file": f"policies/{DATA_FILE}", "problem": None, "unregistered": []}
    grants: dict[str, Any] = {}
    try:
        data = json.loads((settings.policies_dir / DATA_FILE).read_text("utf-8"))
        grants = data["hospital"]["datasets"]
        if not isinstance(grants, dict):
            raise TypeError("hospital.datasets is not an object")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        policy["problem"] = f"policies/{DATA_FILE} cannot be read ({type(exc).__name__}): every job is refused"
    datasets = []
    for name, dataset in registered.items():
        grant = grants.get(name) if isinstance(grants.get(name), dict) else None
        datasets.append({"name": name, "version": dataset.version, "source": dataset.source,
                         "price_per_record": dataset.price_per_record, "granted": grant is not None,
                         **{key: list(grant.get(key, [])) if grant else [] for key in
                            ("researchers", "roles", "purposes", "fields")}})
    policy["unregistered"] = sorted(name for name in grants if name not in registered)
    return datasets, policy


def approval_readiness(settings: Settings, datasets: list[str]) -> dict[str, Any]:
    """Each dataset's run approval mode (where set) and whether enough data stewards are
    registered for it: a job awaiting approval waits, unseen, until they are."""
    from jupyter_rapha.protocol.policy import DATA_FILE

    from .researchers import ResearcherRegistry
    from .run_approval import MODES

    stewards = [r.name for r in ResearcherRegistry(settings.config_dir).all() if r.is_data_steward]
    try:
        hospital = json.loads((settings.policies_dir / DATA_FILE).read_text("utf-8"))["hospital"]
        modes = {name: hospital["datasets"][name]["run_approval"] for name in datasets
                 if "run_approval" in (hospital.get("datasets", {}).get(name) or {})}
        purposes = dict((hospital.get("run_approval") or {}).get("purposes") or {})
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {"stewards": stewards, "modes": {}, "purposes": {}, "problems": []}
    problems = []
    for where, mode in [*(("dataset " + n, m) for n, m in modes.items()),
                        *(("purpose " + p, m) for p, m in purposes.items())]:
        if mode not in MODES:
            problems.append(f"{where}: run approval {mode!r} is not none, one or two_person: its jobs are denied")
        elif len(stewards) < MODES[mode]:
            problems.append(f"{where}: run approval {mode} needs {MODES[mode]} data steward(s), {len(stewards)} "
                            "registered: its jobs wait until they are")
    return {"stewards": stewards, "modes": modes, "purposes": purposes, "problems": problems}


def release_readiness(settings: Settings, datasets: list[str]) -> dict[str, Any]:
    """Each dataset's release mode and whether enough output checkers are registered for
    it: a job held for review waits, unseen, until they are."""
    from jupyter_rapha.protocol.policy import DATA_FILE

    from .release.review import APPROVALS_NEEDED
    from .researchers import ResearcherRegistry

    checkers = [r.name for r in ResearcherRegistry(settings.config_dir).output_checkers()]
    try:
        release = json.loads((settings.policies_dir / DATA_FILE).read_text("utf-8"))["hospital"].get("release", {})
        modes = {name: release.get("datasets", {}).get(name, {}).get("mode", release.get("default_mode"))
                 for name in datasets}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {"checkers": checkers, "modes": {}, "problems": []}  # the policy's own problem is reported above
    problems = []
    for name, mode in sorted(modes.items()):
        if mode not in APPROVALS_NEEDED:
            problems.append(f"{name}: release mode {mode!r} is not auto, review or two_person: every job's "
                            "release is refused")
        elif mode != "auto" and len(checkers) < APPROVALS_NEEDED[mode]:
            problems.append(f"{name}: release mode {mode} needs {APPROVALS_NEEDED[mode]} output checker(s), "
                            f"{len(checkers)} registered: its jobs stay held until they are")
    return {"checkers": checkers, "modes": modes, "problems": problems}


def probe_running(settings: Settings, public_key: str) -> dict[str, Any]:
    """``GET /v1/edge`` of the edge on this machine. TLS is not verified here (the
    certificate names the public host): the answer's public key is compared instead."""
    host = "127.0.0.1" if settings.host in _WILDCARD else settings.host
    host = f"[{host}]" if ":" in host else host
    url = f"{'https' if settings.tls_cert else 'http'}://{host}:{settings.port}/v1/edge"
    context = ssl._create_unverified_context() if settings.tls_cert else None  # noqa: S323 - key compared below
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_SECONDS, context=context) as response:  # noqa: S310
            info = json.loads(response.read(1024 * 1024))
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or type(exc).__name__
        return {"running": False, "url": url, "error": str(reason)}
    if not isinstance(info, dict):
        return {"running": False, "url": url, "error": "an answer that is not a JSON object"}
    found: dict[str, Any] = {"running": True, "url": url, "same_key": info.get("public_key") == public_key,
                             "version": info.get("version")}
    for key in ("accepting_jobs", "problems"):
        if key in info:
            found[key] = info[key]
    return found


def render(status: dict[str, Any]) -> str:
    lines = [f"edge {status['edge_id']}" + (" (DEMO MODE)" if status["demo"] else ""),
             f"  url:        {status['url']}",
             f"  public key: {status['public_key']}",
             "  hand a researcher this line for jupyter_server_config.py:",
             f"    {status['jupyter_config']}"]
    lines += [f"  note: {note}" for note in status["notes"]]
    lines += ["datasets:"] + _render_datasets(status) + ["attestation:", _render_tee(status["tee"])]
    lines += _render_release(status["release"])
    lines += _render_approval(status["run_approval"])
    lines.append("unsafe settings in force: " + (", ".join(status["unsafe"]) or "none"))
    lines += _render_running(status["running"])
    return "\n".join(lines)


def _render_datasets(status: dict[str, Any]) -> list[str]:
    lines = []
    policy = status["policy"]
    if policy["problem"]:
        lines.append(f"  PROBLEM: {policy['problem']}")
    if not status["datasets"]:
        lines.append("  none registered: add one with 'rapha-edge datasets add'")
    for d in status["datasets"]:
        if not d["granted"]:
            lines.append(f"  {d['name']} (v{d['version']}, {d['source']}): NOT GRANTED in {policy['file']}; "
                         "every job on it is refused")
            continue
        who = ", ".join([*(f"researcher {r}" for r in d["researchers"]), *(f"role {r}" for r in d["roles"])])
        lines.append(f"  {d['name']} (v{d['version']}, {d['source']}, {d['price_per_record']} per record): "
                     f"to {who or 'nobody'}; purposes {', '.join(d['purposes']) or 'none'}; "
                     f"fields {', '.join(d['fields']) or 'none'}")
    for name in policy["unregistered"]:
        lines.append(f"  {name}: granted in {policy['file']} but not registered (rapha-edge datasets add)")
    return lines


def _render_approval(approval: dict[str, Any]) -> list[str]:
    asked = [f"{name} {mode}" for name, mode in sorted(approval["modes"].items())]
    asked += [f"purpose {name} {mode}" for name, mode in sorted(approval["purposes"].items())]
    if not asked and not approval["stewards"]:
        return ["run approval: none asked (jobs run once their gates pass)"]
    return ([f"run approval: {', '.join(asked) or 'none asked'}",
             f"  data stewards: {', '.join(approval['stewards']) or 'none'}"]
            + [f"  PROBLEM: {problem}" for problem in approval["problems"]])


def _render_release(release: dict[str, Any]) -> list[str]:
    modes = ", ".join(f"{name} {mode}" for name, mode in sorted(release["modes"].items())) or "none"
    checkers = ", ".join(release["checkers"]) or ("none: a job held for review waits until one is registered "
                                                  "(rapha-edge researchers add NAME KEY --role output-checker)")
    return ([f"release: modes {modes}", f"  output checkers: {checkers}"]
            + [f"  PROBLEM: {problem}" for problem in release["problems"]])


def _render_tee(tee: dict[str, Any]) -> str:
    hardware = ", ".join(tee["hardware"]) or "none found"
    if tee["problem"]:
        return f"  backend {tee['configured']}; TEE hardware: {hardware}; PROBLEM: {tee['problem']}"
    real = "" if tee["backend"] in ("tdx", "sgx") else " (a software stand-in: no TEE protects the jobs)"
    return f"  backend {tee['configured']} -> {tee['backend']}{real}; TEE hardware: {hardware}"


def _render_running(running: dict[str, Any] | None) -> list[str]:
    if running is None:
        return []
    if not running["running"]:
        return [f"running: no answer at {running['url']} ({running['error']}); start it with 'rapha-edge serve'"]
    lines = [f"running: yes, at {running['url']} (version {running.get('version')})"]
    if not running["same_key"]:
        lines.append("  PROBLEM: the edge answering there has a different public key than this config directory")
    if "accepting_jobs" in running:
        lines.append(f"  accepting jobs: {'yes' if running['accepting_jobs'] else 'NO'}")
    for problem in running.get("problems") or []:
        lines.append(f"  problem: {problem}")
    return lines
