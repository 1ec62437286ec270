"""``rapha-edge approval``: data stewards list, inspect, approve and reject jobs waiting for
their approval before they run.

The commands talk to the running edge over its admin socket (``edge_kernel/admin.py``).
``approve`` and ``reject`` sign the decision here, with the steward's own key, over the
job's request digest (``approval show``) and this config directory's edge key, so that a
socket answered by another edge gets no statement it could use.
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from typing import Any

from pathlib import Path

from jupyter_rapha.protocol.approval import ApprovalSubject, sign_approval
from jupyter_rapha.protocol.errors import BadInput
from jupyter_rapha.protocol.keys import PrivateKey
from jupyter_rapha.protocol.review import check_reason

from .release.commands import admin_client as _client
from .release.commands import check_same_edge, config_edge_key_id, read_checker_key
from .release.commands import researcher_of as _who

ROUTE = "/admin/v1/approval"
AWAITING = "awaiting_approval"


def cmd_approval_list(args: argparse.Namespace) -> int:
    jobs = _client(args).get(ROUTE)["jobs"]
    if args.json:
        print(json.dumps(jobs, indent=2))
        return 0
    for job in jobs:
        print(f"{job['job_id']}\t{job['dataset']}\t{_who(job)}\t{job['submitted']}\t"
              f"{job.get('approvals', 0)} of {job.get('approvals_needed', 1)} approvals")
    if not jobs:
        print("no job is awaiting approval")
    return 0


def cmd_approval_show(args: argparse.Namespace) -> int:
    detail = _client(args).get(f"{ROUTE}/{args.job}")
    print(json.dumps(detail, indent=2) if args.json else render_detail(detail))
    return 0


def cmd_approval_decide(args: argparse.Namespace) -> int:
    """approve / reject: every local mistake is refused before the edge is asked."""
    from .settings import load_settings

    settings = load_settings(args.config)
    key = read_checker_key(Path(args.key))
    reason = check_reason(args.reason)
    edge_key_id = config_edge_key_id(settings)
    answer = send_approval(_client(args), key, edge_key_id, args.job, args.steward, args.decision, reason,
                           request=args.request)
    print(decided_line(answer))
    return 0


def send_approval(client: Any, key: PrivateKey, edge_key_id: str, job_ref: str, steward: str, decision: str,
                  reason: str, *, request: str = "") -> dict[str, Any]:
    """Sign ``steward``'s decision on a waiting job with ``key`` and hand it to the edge over
    the admin socket (``client``): what ``approval approve|reject`` and the web console both send."""
    shown = client.get(f"{ROUTE}/{job_ref}")
    if shown["state"] != AWAITING or "subject" not in shown:
        raise BadInput(f"job {shown['job_id']} is {shown['state']}, not awaiting approval: there is nothing to "
                       "decide; nothing was signed")
    subject = shown["subject"]
    check_same_edge(subject, edge_key_id)
    if request and not subject["request_sha256"].startswith(request.lower()):
        raise BadInput(f"job {subject['job_id']}'s request is {subject['request_sha256']}, not the {request} "
                       "given with --request; nothing was signed", hint="run 'rapha-edge approval show JOB' again")
    statement = sign_approval(key, ApprovalSubject(edge_key_id, subject["job_id"], subject["request_sha256"]),
                              decision, reason, int(time.time()))
    answer: dict[str, Any] = client.post(f"{ROUTE}/{subject['job_id']}/decision",
                                         {"steward": steward, "statement": statement})
    return answer


def decided_line(answer: dict[str, Any]) -> str:
    verb = {"approve": "approved", "reject": "rejected"}[answer["decision"]]
    head = f"{verb} job {answer['job_id']} as {answer['steward']}"
    if answer["state"] == "denied":
        return f"{head}: the job will not run; the researcher reads: {'; '.join(answer.get('reasons') or [])}"
    if answer["state"] != AWAITING:
        return f"{head}: approved to run (now {answer['state']}); its gates run again first"
    got, needed = answer.get("approvals", 0), answer.get("approvals_needed", 1)
    return f"{head}: {got} of {needed} approvals; it waits until {needed - got} more data steward(s) approve"


def render_detail(detail: dict[str, Any]) -> str:
    lines = [f"job {detail['job_id']} ({detail['state']}): dataset {detail['dataset']}, researcher {_who(detail)}, "
             f"submitted {detail['submitted']}"]
    request = detail.get("request")
    if request is None:
        lines += [f"  reason: {reason}" for reason in detail.get("reasons") or []]
    else:
        lines.append(f"  run approval: {request['mode']} ({detail.get('approvals', 0)} of "
                     f"{request['approvals_needed']} approvals)")
        budget, cost = request.get("budget") or {}, request.get("cost") or {}
        lines.append(f"  budget: {budget.get('max_records')} records, {budget.get('max_seconds')} s; "
                     f"cost at most {cost.get('amount')} {cost.get('currency')} "
                     f"({cost.get('price_per_record')} a record)")
        lines.append(f"  fields: {', '.join(request.get('fields') or [])}")
        policy = request.get("policy") or {}
        lines.append(f"  policy: allow={policy.get('allow')}; obligations {json.dumps(policy.get('obligations'))}")
        scan = request.get("scan") or {}
        findings = scan.get("findings") or []
        lines.append(f"  scan: {len(findings)} finding(s) {json.dumps(scan.get('counts'))}")
        lines += [f"    {f.get('severity')} line {f.get('line')}: {f.get('message')}" for f in findings
                  if isinstance(f, dict)]
        lines += [f"  included: {i.get('path')} ({i.get('sha256', '')[:12]})" for i in request.get("includes") or []]
        lines.append(f"  request digest (what a decision names): {detail['subject']['request_sha256']}")
        lines.append("  cell:")
        lines += [f"    {line}" for line in str(request.get("code", "")).splitlines()]
    decisions = detail.get("decisions") or []
    lines.append("  decisions:" if decisions else "  decisions: none yet")
    for d in decisions:
        when = datetime.datetime.fromtimestamp(d["signed_at"], datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        lines.append(f"    {d['decision']} by {d['steward']} (key {d['steward_key_id'][:12]}) at {when}: {d['reason']}")
    return "\n".join(lines)


def add_approval_commands(sub: Any, command: Any) -> None:
    """``rapha-edge approval ...`` (``command`` is cli.build_parser's helper)."""
    approval = sub.add_parser("approval", help="data stewards: jobs awaiting approval before they run").add_subparsers(
        dest="sub", required=True)
    p = command("list", cmd_approval_list, "list the jobs awaiting a data steward's approval", approval)
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p = command("show", cmd_approval_show, "a waiting job's cell, scan findings, policy result, budget, cost and "
                "decisions; for a job no longer waiting, how it ended", approval)
    p.add_argument("job", help="the job id, or 8 or more of its first characters (the whole id for a job no "
                               "longer waiting)")
    p.add_argument("--json", action="store_true", help="print it as JSON")
    for decision, verb in (("approve", "let a waiting job run"), ("reject", "refuse a waiting job")):
        p = command(decision, cmd_approval_decide, f"{verb}, signed with your data steward key", approval)
        p.set_defaults(decision=decision)
        p.add_argument("job", help="the job id, or 8 or more of its first characters")
        p.add_argument("--as", dest="steward", required=True,
                       help="your name as registered with 'rapha-edge researchers add NAME KEY --role data-steward'")
        p.add_argument("--key", required=True, help="your private key (PEM), the one whose public key is registered")
        p.add_argument("--request", default="",
                       help="the request digest 'approval show' printed (or its start): refuse if the job's differs")
        p.add_argument("--reason", required=True,
                       help="why the job may (or may not) run; kept in the audit log" +
                            (" and read by the researcher" if decision == "reject" else "") +
                            ": write no patient or record data")
