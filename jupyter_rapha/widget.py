"""ReceiptWidget: a receipt and its verification, readable at a glance.

Plain HTML with inline styles, so it renders the same in JupyterLab, in nbconvert output
and on a static notebook viewer; the only script is an optional copy button's onclick,
emitted only for values that are pure hex (nothing else can reach an attribute that
runs). Every value is escaped: receipt text comes from an edge and must not be able to
inject markup.
"""

from __future__ import annotations

import re
from html import escape
from typing import Any

from .protocol.anchor_proof import is_pending
from .protocol.checks import Verification
from .protocol.disclosure import disclosure_problem, disclosure_summary
from .protocol.private import privacy_problem, privacy_summary
from .receipt_chart import curve_metric, sparkline, svg_curve, x_label_for
from .verdict import MARKS, Verdict, verdict_of

# Block explorers of the chains receipts are expected on; others show no link.
EXPLORERS = {137: "https://polygonscan.com/tx/", 80002: "https://amoy.polygonscan.com/tx/"}
_HEX = re.compile(r"^(0x)?[0-9a-fA-F]{1,128}$")

_OUTCOME_STYLE = {
    "pass": "color:#1a7f37", "deny": "color:#cf222e;font-weight:bold",
    "absent": "color:#6e7781;font-style:italic", "unsafe": "background:#fff1a8;color:#9a6700;font-weight:bold",
}
_CHECK_MARK = {"pass": ("&#10003;", "#1a7f37"), "fail": ("&#10007;", "#cf222e"), "skipped": ("&#8211;", "#9a6700"),
               "pending": ("&#8987;", "#9a6700"), "warn": ("&#9888;", "#bc4c00")}
_VERDICT_MARK = {"pass": "&#10003;", "warn": "&#9888;", "pending": "&#8987;", "fail": "&#10007;"}


def short(value: Any, keep: int = 12) -> str:
    text = str(value or "")
    return text if len(text) <= keep + 1 else text[:keep] + "…"


def receipt_summary(receipt: dict[str, Any], verification: Verification | None) -> dict[str, Any]:
    """The fields a reader looks for, taken from the signed statement when it verified."""
    predicate = verification.predicate if verification and verification.statement else _unverified_predicate(receipt)
    job, dataset = predicate.get("job", {}), predicate.get("dataset", {})
    settlement, outputs = predicate.get("settlement", {}), predicate.get("outputs", {})
    raw_anchor = receipt.get("anchor")
    anchor: dict[str, Any] = raw_anchor if isinstance(raw_anchor, dict) else {}
    return {
        "job": job.get("id", ""), "dataset": dataset.get("name") or dataset.get("id", ""),
        "dataset_version": dataset.get("version", ""),
        "records_used": _first(dataset, predicate, "records_used"),
        "cost": _cost(settlement), "gates": list(predicate.get("gates", [])),
        "unsafe": list(predicate.get("unsafe", []) or []),
        "code_sha256": job.get("code_sha256", ""),
        "weights_sha256": (outputs.get("weights") or {}).get("sha256", ""),
        "records_root": _first(dataset, predicate, "records_root"),
        "anchor_tx": anchor.get("tx_hash", ""), "anchor_block": anchor.get("block_number", ""),
        "chain_id": anchor.get("chain_id", ""), "anchor_pending": is_pending(anchor),
        "anchor_batch": anchor.get("batch") if isinstance(anchor.get("batch"), dict) else None,
        "anchor_tsa": anchor.get("tsa", "") if anchor.get("method") == "rfc3161-batch" else "",
        "anchor_time": anchor.get("gen_time", ""),
        "curve": curve_metric(predicate.get("metrics")),
        "epochs": (job.get("params") or {}).get("epochs") if isinstance(job.get("params"), dict) else None,
        "attestation": _attestation_text(predicate),
        "disclosure": _disclosure_text(predicate),
        "privacy": _privacy_text(predicate),
    }


def _privacy_text(predicate: dict[str, Any]) -> str:
    """A DP job's budget and what its trainer spent, in one line ("" for a standard job;
    a malformed section reads as such, and the verification's privacy line fails)."""
    section = predicate.get("privacy")
    if section is None:
        return ""
    return privacy_summary(section) if not privacy_problem(section) else "malformed (see checks)"


def _disclosure_text(predicate: dict[str, Any]) -> str:
    """The disclosure checks and release decision in one line ("" for receipts before 1.3;
    a malformed section reads as such, and the verification's disclosure line fails)."""
    section = predicate.get("disclosure")
    if section is None:
        return ""
    return disclosure_summary(section) if not disclosure_problem(section) else "malformed (see checks)"


def _attestation_text(predicate: dict[str, Any]) -> str:
    evidence = predicate.get("evidence")
    recorded = evidence.get("attestation") if isinstance(evidence, dict) else None
    if not isinstance(recorded, dict) or not recorded.get("backend"):
        return ""
    text = f"{recorded['backend']}, {recorded.get('outcome', '')}"
    if recorded.get("unsafe"):
        return text + " (UNSAFE software stand-in, demo only)"
    return text + (f", TCB {recorded['tcb_status']}" if recorded.get("tcb_status") else "")


def _unverified_predicate(receipt: dict[str, Any]) -> dict[str, Any]:
    # Shown only so a reader can see what failed; the widget marks it unverified.
    import base64
    import json
    try:
        payload = base64.b64decode(receipt["envelope"]["payload"])
        return dict(json.loads(payload).get("predicate", {}))
    except (KeyError, TypeError, ValueError, AttributeError):
        return {}


def _first(primary: dict[str, Any], fallback: dict[str, Any], key: str) -> Any:
    return primary.get(key, fallback.get(key, ""))


def _cost(settlement: dict[str, Any]) -> str:
    amount = settlement.get("amount")
    if amount in (None, ""):
        return ""
    currency = settlement.get("currency", "")
    price = settlement.get("price_per_record")
    return f"{amount} {currency}".strip() + (f" ({price} per record)" if price not in (None, "") else "")


class ReceiptWidget:
    def __init__(self, receipt: dict[str, Any], verification: Verification | None) -> None:
        self.receipt = receipt
        self.verification = verification
        self.summary = receipt_summary(receipt, verification)

    @property
    def verdict(self) -> Verdict:
        """The headline, by the one rule shared with the side panel (``verdict.decide``)."""
        return verdict_of(self.verification)

    @property
    def verified(self) -> bool:
        return self.verdict.verified

    @property
    def pending(self) -> bool:
        """Every check that ran passed; only the anchor is still to come."""
        return self.verdict.kind == "pending"

    def _verdict(self) -> tuple[str, str, str]:
        verdict = self.verdict
        return f"{_VERDICT_MARK[verdict.kind]} {escape(verdict.label)}", verdict.colour, verdict.label

    # -- HTML ------------------------------------------------------------------------
    def _repr_html_(self) -> str:
        s = self.summary
        mark, colour, _ = self._verdict()
        rows = [
            ("job", f"<code>{escape(str(s['job']))}</code>"),
            ("dataset", escape(f"{s['dataset']} v{s['dataset_version']}" if s["dataset_version"]
                               else str(s["dataset"]))),
            ("records used", escape(str(s["records_used"]))),
            ("cost", escape(s["cost"] or "—")),
            ("code", _hash(s["code_sha256"])), ("weights", _hash(s["weights_sha256"])),
            ("records root", _hash(s["records_root"])),
            ("attestation", escape(s["attestation"] or "—")),
            ("disclosure", escape(s["disclosure"] or "—")),
            *([("privacy", escape(s["privacy"]))] if s["privacy"] else []),
            ("anchor", self._anchor_html()),
        ]
        body = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{k}</th><td>{v}</td></tr>" for k, v in rows)
        return (f"<div class='rapha-receipt' style='font-family:sans-serif;font-size:13px'>"
                f"<div style='font-weight:bold;color:{colour}'>Rapha receipt: {mark}</div>"
                f"<table>{body}</table>{self._gates_html()}{self._unsafe_html()}{self._checks_html()}"
                f"{self._curve_html()}</div>")

    def _anchor_html(self) -> str:
        s = self.summary
        if s["anchor_pending"]:
            return "<i style='color:#9a6700'>anchor pending: fetch the receipt from the edge again later</i>"
        if s["anchor_tsa"]:
            return (f"RFC 3161 timestamp by {escape(str(s['anchor_tsa']))} at {escape(str(s['anchor_time']))}"
                    + self._batch_html())
        if not s["anchor_tx"]:
            return "<i>not anchored</i>"
        html = (f"tx {_hash(s['anchor_tx'])} in block {escape(str(s['anchor_block']))}"
                f" on chain {escape(str(s['chain_id']))}")
        link = explorer_url(s["chain_id"], s["anchor_tx"])
        if link:
            html += f" <a href='{escape(link, quote=True)}' target='_blank' rel='noopener'>explorer</a>"
        return html + self._batch_html()

    def _batch_html(self) -> str:
        batch = self.summary["anchor_batch"]
        if not batch:
            return ""
        return (f"<br>leaf {escape(str(batch.get('index')))} of {escape(str(batch.get('size')))}"
                f" under batch root {_hash(batch.get('root', ''))}")

    def _gates_html(self) -> str:
        if not self.summary["gates"]:
            return "<div><i>no gates recorded</i></div>"
        rows = []
        for gate in self.summary["gates"]:
            outcome = str(gate.get("outcome", ""))
            style = _OUTCOME_STYLE.get(outcome, "")
            rows.append(f"<tr><td>{escape(str(gate.get('name', '')))}</td>"
                        f"<td style='{style}'>{escape(outcome)}</td>"
                        f"<td>{_hash(gate.get('evidence_sha256', ''))}</td></tr>")
        return "<div><b>gates</b></div><table>" + "".join(rows) + "</table>"

    def _unsafe_html(self) -> str:
        if not self.summary["unsafe"]:
            return ""
        items = ", ".join(escape(str(u)) for u in self.summary["unsafe"])
        return f"<div style='{_OUTCOME_STYLE['unsafe']}'>unsafe options in force: {items}</div>"

    def _checks_html(self) -> str:
        if self.verification is None:
            return "<div><i>not verified</i></div>"
        rows = []
        for check in self.verification.checks:
            symbol, colour = _CHECK_MARK.get(check.status, ("?", "#6e7781"))
            badge = MARKS.get(check.status, "FAIL")
            rows.append(f"<tr><td style='color:{colour};font-weight:bold;white-space:nowrap'>{symbol} {badge}</td>"
                        f"<td>{escape(check.name)}</td><td>{escape(check.detail)}</td></tr>")
        return "<div><b>verification</b></div><table>" + "".join(rows) + "</table>"

    def _curve_html(self) -> str:
        if not self.summary["curve"]:
            return ""
        name, values = self.summary["curve"]
        return f"<div><b>{escape(name)}</b></div>" + svg_curve(name, values,
                                                              x_label=x_label_for(len(values), self.summary["epochs"]))

    # -- text ------------------------------------------------------------------------
    def text(self) -> str:
        s = self.summary
        lines = [f"Rapha receipt: {self._verdict()[2]}",
                 f"  job           {s['job']}", f"  dataset       {s['dataset']} v{s['dataset_version']}",
                 f"  records used  {s['records_used']}", f"  cost          {s['cost'] or '-'}",
                 f"  weights       {short(s['weights_sha256'])}",
                 f"  attestation   {s['attestation'] or '-'}",
                 f"  disclosure    {s['disclosure'] or '-'}",
                 *([f"  privacy       {s['privacy']}"] if s["privacy"] else []),
                 "  anchor        " + self._anchor_text()]
        if s["curve"]:
            name, values = s["curve"]
            lines.append(f"  {name:<13} {sparkline(values)}  {values[0]:.4g} -> {values[-1]:.4g}")
        lines += [f"  gate {g.get('name', '')}: {g.get('outcome', '')}"
                  + ("  <-- UNSAFE" if g.get("outcome") == "unsafe" else "") for g in s["gates"]]
        if s["unsafe"]:
            lines.append(f"  UNSAFE options: {', '.join(map(str, s['unsafe']))}")
        for check in (self.verification.checks if self.verification else []):
            lines.append(f"  {MARKS.get(check.status, check.status.upper()):7} {check.name}: {check.detail}")
        return "\n".join(lines)

    def _anchor_text(self) -> str:
        s = self.summary
        if s["anchor_pending"]:
            return "PENDING (fetch the receipt again later)"
        if s["anchor_tsa"]:
            return f"RFC 3161 timestamp by {s['anchor_tsa']} at {s['anchor_time']}"
        if not s["anchor_tx"]:
            return "not anchored"
        link = explorer_url(s["chain_id"], s["anchor_tx"])
        return (f"tx {short(s['anchor_tx'])} block {s['anchor_block']} chain {s['chain_id']}"
                + (f"  {link}" if link else ""))

    def __repr__(self) -> str:
        return self.text()

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text("ReceiptWidget(...)" if cycle else self.text())


def explorer_url(chain_id: Any, tx_hash: Any) -> str:
    base = EXPLORERS.get(chain_id) if isinstance(chain_id, int) and not isinstance(chain_id, bool) else None
    if base is None or not isinstance(tx_hash, str) or not re.fullmatch(r"0x[0-9a-fA-F]{64}", tx_hash):
        return ""
    return base + tx_hash


def _hash(value: Any) -> str:
    """Shortened, with the whole value in the tooltip and, for hex, a copy button. The
    button is the only script, and only hex reaches it."""
    text = str(value or "")
    if not text:
        return "—"
    html = f"<code title='{escape(text, quote=True)}'>{escape(short(text))}</code>"
    if _HEX.match(text) and len(text) > 13:
        html += (f"<button type='button' title='copy' style='font-size:10px;padding:0 3px;margin-left:3px' "
                 f"onclick=\"navigator.clipboard&amp;&amp;navigator.clipboard.writeText('{text}')\">copy</button>")
    return html
