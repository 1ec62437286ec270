"""ReceiptWidget: a receipt and its verification, readable at a glance.

Plain HTML with inline styles and no JavaScript, so it renders the same in JupyterLab,
in nbconvert output and on a static notebook viewer. Every value is escaped: receipt
text comes from an edge and must not be able to inject markup.
"""

from __future__ import annotations

from html import escape
from typing import Any

from .protocol.receipt import Verification

_OUTCOME_STYLE = {
    "pass": "color:#1a7f37", "deny": "color:#cf222e;font-weight:bold",
    "absent": "color:#6e7781;font-style:italic", "unsafe": "background:#fff1a8;color:#9a6700;font-weight:bold",
}
_CHECK_MARK = {"pass": ("&#10003;", "#1a7f37"), "fail": ("&#10007;", "#cf222e"), "skipped": ("&#8211;", "#9a6700")}


def short(value: Any, keep: int = 12) -> str:
    text = str(value or "")
    return text if len(text) <= keep + 1 else text[:keep] + "…"


def receipt_summary(receipt: dict[str, Any], verification: Verification | None) -> dict[str, Any]:
    """The fields a reader looks for, taken from the signed statement when it verified."""
    predicate = verification.predicate if verification and verification.statement else _unverified_predicate(receipt)
    job, dataset = predicate.get("job", {}), predicate.get("dataset", {})
    settlement, outputs = predicate.get("settlement", {}), predicate.get("outputs", {})
    anchor = receipt.get("anchor") or {}
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
        "chain_id": anchor.get("chain_id", ""),
    }


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
    def verified(self) -> bool:
        if self.verification is None:
            return False
        passed = getattr(self.verification, "passed", None)
        return bool(passed) if passed is not None else self.verification.ok()

    # -- HTML ------------------------------------------------------------------------
    def _repr_html_(self) -> str:
        s = self.summary
        mark, colour = ("&#10003; verified", "#1a7f37") if self.verified else ("&#10007; NOT verified", "#cf222e")
        rows = [
            ("job", f"<code>{escape(str(s['job']))}</code>"),
            ("dataset", escape(f"{s['dataset']} v{s['dataset_version']}" if s["dataset_version"] else str(s["dataset"]))),
            ("records used", escape(str(s["records_used"]))),
            ("cost", escape(s["cost"] or "—")),
            ("code", _hash(s["code_sha256"])), ("weights", _hash(s["weights_sha256"])),
            ("records root", _hash(s["records_root"])),
            ("anchor", self._anchor_html()),
        ]
        body = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{k}</th><td>{v}</td></tr>" for k, v in rows)
        return (f"<div class='rapha-receipt' style='font-family:sans-serif;font-size:13px'>"
                f"<div style='font-weight:bold;color:{colour}'>Rapha receipt: {mark}</div>"
                f"<table>{body}</table>{self._gates_html()}{self._unsafe_html()}{self._checks_html()}</div>")

    def _anchor_html(self) -> str:
        s = self.summary
        if not s["anchor_tx"]:
            return "<i>not anchored</i>"
        return (f"tx {_hash(s['anchor_tx'])} in block {escape(str(s['anchor_block']))}"
                f" on chain {escape(str(s['chain_id']))}")

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
            rows.append(f"<tr><td style='color:{colour};font-weight:bold'>{symbol}</td>"
                        f"<td>{escape(check.name)}</td><td>{escape(check.detail)}</td></tr>")
        return "<div><b>verification</b></div><table>" + "".join(rows) + "</table>"

    # -- text ------------------------------------------------------------------------
    def text(self) -> str:
        s = self.summary
        lines = [f"Rapha receipt: {'verified' if self.verified else 'NOT verified'}",
                 f"  job           {s['job']}", f"  dataset       {s['dataset']} v{s['dataset_version']}",
                 f"  records used  {s['records_used']}", f"  cost          {s['cost'] or '-'}",
                 f"  weights       {short(s['weights_sha256'])}",
                 f"  anchor        " + (f"tx {short(s['anchor_tx'])} block {s['anchor_block']}" if s["anchor_tx"] else "not anchored")]
        lines += [f"  gate {g.get('name', '')}: {g.get('outcome', '')}" + ("  <-- UNSAFE" if g.get("outcome") == "unsafe" else "")
                  for g in s["gates"]]
        if s["unsafe"]:
            lines.append(f"  UNSAFE options: {', '.join(map(str, s['unsafe']))}")
        for check in (self.verification.checks if self.verification else []):
            lines.append(f"  {check.status.upper():7} {check.name}: {check.detail}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.text()

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text("ReceiptWidget(...)" if cycle else self.text())


def _hash(value: Any) -> str:
    text = str(value or "")
    if not text:
        return "—"
    return f"<code title='{escape(text, quote=True)}'>{escape(short(text))}</code>"
