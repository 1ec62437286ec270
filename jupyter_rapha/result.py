"""What a training run hands back to the notebook: weights, metrics, receipt, verdict."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .protocol.errors import RaphaError, ReleaseDenied
from .protocol.checks import Verification
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


def write_outputs(out: Path, files: dict[str, bytes]) -> None:
    """Write into a temporary directory beside ``out`` and rename it into place, so a
    crash or a refusal never leaves a half-written result that looks complete. Only a
    directory holding nothing but these files is replaced."""
    if out.exists() and (not out.is_dir() or set(os.listdir(out)) - set(files)):
        raise RaphaError(f"{out} exists and holds other files; choose another output directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name, data in files.items():
            (staging / name).write_bytes(data)
        if out.exists():
            old = out.with_name(f".{out.name}.old.{os.getpid()}")
            out.rename(old)
            staging.rename(out)
            shutil.rmtree(old)
        else:
            staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


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

    @property
    def privacy_line(self) -> str:
        """A DP job's budget and what the edge's trainer spent of it, from the receipt's
        privacy section ("privacy: DP-SGD: epsilon 7.99 spent of 8 ..."); "" for a standard job."""
        said: str = self.receipt_widget.summary["privacy"]
        return f"privacy: {said}" if said else ""

    def output_files(self) -> dict[str, bytes]:
        """The files ``rapha run`` writes: weights, metrics, receipt and the edge's key."""
        if self.receipt is None:
            raise RaphaError("a local dry run has no receipt to save")
        return {
            "weights.safetensors": self.weights_bytes,
            "metrics.json": json.dumps(self.metrics, indent=2).encode() + b"\n",
            "receipt.json": json.dumps(self.receipt, indent=2).encode() + b"\n",
            "edge.pub": str(self.extra.get("edge_public_key", "")).encode() + b"\n",
        }

    def save(self, directory: str | Path) -> Path:
        """Write the outputs into ``directory`` atomically (see ``write_outputs``)."""
        target = Path(directory)
        write_outputs(target, self.output_files())
        return target

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
