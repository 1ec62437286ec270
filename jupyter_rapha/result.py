"""What a training run hands back to the notebook: weights, metrics, receipt, verdict."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .protocol.errors import ReleaseDenied
from .protocol.receipt import Verification
from .widget import ReceiptWidget


def load_state_dict(weights: bytes) -> dict[str, Any]:
    """Tensors from safetensors bytes. safetensors holds no code, so loading it cannot
    execute anything (unlike pickle); this is the only way weights enter the notebook."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        return dict(load(weights))
    except (SafetensorError, ValueError) as exc:
        raise ReleaseDenied("returned weights are not a valid safetensors file",
                            reasons=["weights do not parse as safetensors"]) from exc


@dataclass
class TrainResult:
    job_id: str
    state_dict: dict[str, Any]
    weights_bytes: bytes
    metrics: dict[str, list[float]]
    receipt: dict[str, Any] | None
    verification: Verification | None
    local: bool = False
    edge_url: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def verified(self) -> bool:
        return self.receipt_widget.verified if self.receipt is not None else False

    @property
    def receipt_widget(self) -> ReceiptWidget:
        return ReceiptWidget(self.receipt or {}, self.verification)

    def _summary(self) -> str:
        where = "local dry run" if self.local else f"edge {self.edge_url}"
        tensors = len(self.state_dict)
        last = {k: v[-1] for k, v in self.metrics.items() if v}
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in last.items()) or "none"
        return f"TrainResult(job {self.job_id}, {where}, {tensors} tensors, last metrics: {metrics})"

    def __repr__(self) -> str:
        if self.receipt is None:
            return self._summary() + "\n  no receipt (local runs are not receipted)"
        return self._summary() + "\n" + self.receipt_widget.text()

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text("TrainResult(...)" if cycle else repr(self))

    def _repr_html_(self) -> str:
        from html import escape
        head = f"<div style='font-family:monospace;font-size:12px'>{escape(self._summary())}</div>"
        if self.receipt is None:
            return head + "<div><i>local dry run: no receipt</i></div>"
        return head + self.receipt_widget._repr_html_()
