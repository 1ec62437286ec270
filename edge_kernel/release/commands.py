"""``rapha-edge release``: output checkers list, inspect, approve and reject held jobs.

The commands talk to the running edge over its admin socket (``edge_kernel/admin.py``).
``approve`` and ``reject`` sign the decision here, with the checker's own key, over what
the edge holds (``release show``'s outputs digest) and this config directory's edge key,
so that a socket answered by another edge gets no statement it could use.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path
from typing import Any

from jupyter_rapha.protocol.errors import BadInput
from jupyter_rapha.protocol.keys import PrivateKey
from jupyter_rapha.protocol.review import DecisionSubject, check_reason, sign_decision

ROUTE = "/admin/v1/release"


def cmd_release_list(args: argparse.Namespace) -> int:
    jobs = _client(args).get(ROUTE)["jobs"]
    if args.json:
        print(json.dumps(jobs, indent=2))
        return 0
    for job in jobs:
        print(f"{job['job_id']}\t{job['dataset']}\t{_who(job)}\t{job['submitted']}\t{_waits_for(job)}")
    if not jobs:
        print("no job is held")
    return 0


def cmd_release_show(args: argparse.Namespace) -> int:
    detail = _client(args).get(f"{ROUTE}/{args.job}")
    print(json.dumps(detail, indent=2) if args.json else render_detail(detail))
    return 0


def cmd_release_decide(args: argparse.Namespace) -> int:
    """approve / reject: every local mistake is refused before the edge is asked."""
    from ..settings import load_settings

    settings = load_settings(args.config)
    key = read_checker_key(Path(args.key))
    reason = check_reason(args.reason)
    edge_key_id = config_edge_key_id(settings)
    answer = send_decision(_client(args), key, edge_key_id, args.job, args.checker, args.decision, reason,
                           outputs=args.outputs)
    print(decided_line(answer))
    return 0


def send_decision(client: Any, key: PrivateKey, edge_key_id: str, job_ref: str, checker: str, decision: str,
                  reason: str, *, outputs: str = "") -> dict[str, Any]:
    """Sign ``checker``'s decision on a held job with ``key`` and hand it to the edge over the
    admin socket (``client``): what ``release approve|reject`` and the web console both send."""
    shown = client.get(f"{ROUTE}/{job_ref}")
    if shown["state"] != "held":
        raise BadInput(f"job {shown['job_id']} is {shown['state']}, not held: its release was already decided"
                       if shown["state"] in ("completed", "refused") else
                       f"job {shown['job_id']} is {shown['state']}, not held: there is nothing to decide")
    subject = shown["subject"]
    check_same_edge(subject, edge_key_id)
    if outputs and not subject["outputs_sha256"].startswith(outputs.lower()):
        raise BadInput(f"job {subject['job_id']} holds outputs {subject['outputs_sha256']}, not the {outputs} "
                       "given with --outputs; nothing was signed", hint="run 'rapha-edge release show JOB' again")
    statement = sign_decision(key, DecisionSubject(edge_key_id, subject["job_id"], subject["outputs_sha256"]),
                              decision, reason, int(time.time()))
    answer: dict[str, Any] = client.post(f"{ROUTE}/{subject['job_id']}/decision",
                                         {"checker": checker, "statement": statement})
    return answer


def config_edge_key_id(settings: Any) -> str:
    """The key id of this config directory's edge key: what a signed decision names."""
    from ..edge import EDGE_KEY_FILE

    return PrivateKey.from_pem((settings.keys_dir / EDGE_KEY_FILE).read_bytes()).key_id


def check_same_edge(subject: dict[str, Any], edge_key_id: str) -> None:
    """Refuse to sign for an edge other than this config directory's (another edge answering
    on the admin socket)."""
    if subject["edge_key_id"] != edge_key_id:
        raise BadInput("the edge answering on the admin socket is not the edge of this config directory "
                       f"(key {subject['edge_key_id']}, not {edge_key_id}); nothing was signed")


def read_checker_key(path: Path) -> PrivateKey:
    if not path.is_file():
        raise BadInput(f"--key {path}: no such file", hint="the checker's own private key, as 'rapha keygen' wrote it")
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:  # whoever reads it can release outputs in the checker's name
        print(f"rapha-edge: warning: --key {path} can be read by other users (mode {mode:o}); "
              f"make it yours alone: chmod 600 {path}", file=sys.stderr)
    return PrivateKey.from_pem(path.read_bytes())


def admin_client(args: argparse.Namespace) -> Any:
    """The running edge's admin socket, for the config directory in ``args.config``."""
    from ..admin import AdminClient
    from ..settings import load_settings

    return AdminClient(load_settings(args.config).state_dir)


_client = admin_client


# ---- what a checker reads --------------------------------------------------------------

def decided_line(answer: dict[str, Any]) -> str:
    verb = {"approve": "approved", "reject": "rejected"}[answer["decision"]]
    head = f"{verb} job {answer['job_id']} as {answer['checker']}"
    if answer["state"] == "completed":
        return f"{head}: released to the researcher, with the decisions in its signed receipt"
    if answer["state"] == "refused":
        reasons = "; ".join(answer.get("reasons") or [])
        return f"{head}: the release is refused; the researcher reads: {reasons}"
    got, needed = answer.get("approvals", 0), answer.get("approvals_needed", 1)
    return (f"{head}: {got} of {needed} approvals; it stays held until {needed - got} more output checker(s) "
            "approve")


def researcher_of(job: dict[str, Any]) -> str:
    """The researcher's registered name, or the key of one the registry no longer lists."""
    return str(job.get("researcher") or f"key {str(job.get('researcher_key_id', ''))[:12]} (unregistered)")


_who = researcher_of


def _waits_for(job: dict[str, Any]) -> str:
    if job.get("checks_done", 0) < job.get("checks_total", 0):
        return f"checks running ({job.get('checks_done', 0)} of {job['checks_total']} done)"
    if job.get("review_needed"):
        return f"held for review ({job.get('approvals', 0)} of {job.get('approvals_needed', 1)} approvals)"
    return "held"


def render_detail(detail: dict[str, Any]) -> str:
    if detail["state"] != "held":
        return render_history(detail)
    lines = [f"job {detail['job_id']} ({detail['state']}): dataset {detail['dataset']}, researcher {_who(detail)}, "
             f"submitted {detail['submitted']}", f"  waits for: {_waits_for(detail)}"]
    lines += _render_policy(detail.get("policy"))
    lines += _render_checks(detail.get("checks"))
    lines += _render_outputs(detail["outputs"])
    lines.append(f"  outputs digest (what a decision names): {detail['subject']['outputs_sha256']}")
    lines += _render_decisions(detail.get("decisions") or [])
    return "\n".join(lines)


def render_history(detail: dict[str, Any]) -> str:
    """A job no longer held: how its release ended, and who decided."""
    lines = [f"job {detail['job_id']} ({detail['state']}, not held): dataset {detail['dataset']}, "
             f"researcher {_who(detail)}, submitted {detail['submitted']}"]
    lines += [f"  reason: {reason}" for reason in detail.get("reasons") or []]
    lines += _render_decisions(detail.get("decisions") or [])
    if detail.get("refused_attempts"):
        lines.append(f"  refused decision attempts: {detail['refused_attempts']} (see the audit log)")
    return "\n".join(lines)


def _render_policy(policy: Any) -> list[str]:
    if not isinstance(policy, dict):
        return ["  release policy: not decided yet (checks still running)"]
    reasons = "; ".join(str(r) for r in policy.get("reasons") or []) or "none given"
    return [f"  release policy: {policy.get('decision')} (rule {policy.get('rule')}, mode {policy.get('mode')}, "
            f"approvals needed {policy.get('approvals_needed', '-')}); reasons: {reasons}"]


def _render_checks(checks: Any) -> list[str]:
    if not isinstance(checks, dict):
        return ["  checks: none finished yet"]
    lines = [f"  checks (held-back records: {checks.get('holdback_size', 0)}):"]
    for name, figures in sorted((checks.get("checks") or {}).items()):
        shown = (" ".join(f"{k}={_figure(v)}" for k, v in sorted(figures.items())) if isinstance(figures, dict)
                 else figures)
        lines.append(f"    {name}: {shown}")
    return lines


def _figure(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _render_outputs(outputs: dict[str, Any]) -> list[str]:
    dtypes = ", ".join(f"{dtype} x{count}" for dtype, count in outputs["dtypes"].items()) or "none"
    metrics = ", ".join(f"{name} ({count} values)" for name, count in outputs["metrics"].items()) or "none"
    return [f"  weights: {outputs['tensors']} tensors, {outputs['parameters']} parameters, "
            f"{outputs['weights_bytes']} bytes; dtypes {dtypes}", f"  metrics: {metrics}"]


def _render_decisions(decisions: list[dict[str, Any]]) -> list[str]:
    if not decisions:
        return ["  decisions: none yet"]
    lines = ["  decisions:"]
    for d in decisions:
        when = datetime.datetime.fromtimestamp(d["signed_at"], datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        lines.append(f"    {d['decision']} by {d['checker']} (key {d['checker_key_id'][:12]}) at {when}: {d['reason']}")
    return lines


def add_release_commands(sub: Any, command: Any) -> None:
    """``rapha-edge release ...`` (``command`` is cli.build_parser's helper)."""
    release = sub.add_parser("release", help="output checkers: held jobs and their release").add_subparsers(
        dest="sub", required=True)
    p = command("list", cmd_release_list, "list the jobs whose outputs are held", release)
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p = command("show", cmd_release_show, "a held job's checks, figures, decisions and outputs summary "
                "(never record data); for a job no longer held, how its release ended", release)
    p.add_argument("job", help="the job id, or 8 or more of its first characters (the whole id for a job no "
                               "longer held)")
    p.add_argument("--json", action="store_true", help="print it as JSON")
    for decision, verb in (("approve", "approve the release of"), ("reject", "refuse the release of")):
        p = command(decision, cmd_release_decide, f"{verb} a held job's outputs, signed with your checker key",
                    release)
        p.set_defaults(decision=decision)
        p.add_argument("job", help="the job id, or 8 or more of its first characters")
        p.add_argument("--as", dest="checker", required=True,
                       help="your name as registered with 'rapha-edge researchers add NAME KEY --role output-checker'")
        p.add_argument("--key", required=True, help="your private key (PEM), the one whose public key is registered")
        p.add_argument("--outputs", default="",
                       help="the outputs digest 'release show' printed (or its start): refuse if the job holds "
                            "other outputs")
        p.add_argument("--reason", required=True,
                       help="why the outputs may (or may not) leave; kept in the audit log and read by the "
                            "researcher (" + ("with the refusal" if decision == "reject" else "in the receipt")
                            + "): write no patient or record data")
