"""ReceiptWidget for a person: batch anchors with explorer links, pending anchors, the
loss curve, copy buttons only where they are safe; and the widget inside a notebook
executed by nbclient and exported to static HTML by nbconvert."""

from __future__ import annotations

import json

import nbformat
import pytest
from nbclient import NotebookClient
from nbconvert import HTMLExporter

from jupyter_rapha.protocol.anchor_proof import batch_anchor, batch_tree, pending_anchor
from jupyter_rapha.protocol.keys import PrivateKey
from jupyter_rapha.protocol.receipt import envelope_digest, sha256_hex, sign_receipt
from jupyter_rapha.verify import verify_document
from jupyter_rapha.widget import ReceiptWidget, explorer_url
from tests.receipts.receipt_factory import WEIGHTS, predicate

KEY = PrivateKey.generate()
TX = "0x" + "5a" * 32


def receipt(chain_id: int = 137, pending: bool = False) -> dict:
    document = sign_receipt(predicate(chain_id=chain_id), sha256_hex(WEIGHTS), KEY)
    digest = envelope_digest(document["envelope"])
    tree = batch_tree([digest, "00" * 32, "11" * 32])
    document["anchor"] = pending_anchor(digest) if pending else batch_anchor(
        tree, 0, chain_id=chain_id, tx_hash=TX, block_number=12)
    return document


def widget(document: dict) -> ReceiptWidget:
    return ReceiptWidget(document, verify_document(document, KEY.public, offline=True))


@pytest.mark.parametrize("chain_id, link", [(137, "https://polygonscan.com/tx/" + TX),
                                            (80002, "https://amoy.polygonscan.com/tx/" + TX), (1337, "")])
def test_explorer_link_for_known_chains_only(chain_id, link):
    shown = widget(receipt(chain_id))
    assert explorer_url(chain_id, TX) == link
    assert (f"href='{link}'" in shown._repr_html_()) == bool(link)
    assert ("polygonscan" in shown.text()) == bool(link) and (not link or link in shown.text())


def test_everything_a_reader_looks_for():
    shown = widget(receipt())
    html, text = shown._repr_html_(), shown.text()
    assert shown.verified
    for needle in ("j" * 32, "synthetic-cxr v1", "40", "2.00 GBP (0.05 per record)",
                   "spec", "attestation", "unsafe", "absent", "leaf 0 of 3", "block 12", "inclusion"):
        assert needle in html, needle
    assert "<svg class='rapha-loss'" in html and "<polyline" in html and "<script" not in html
    assert html.count("&#10003;") >= 4  # a mark per passing check
    # offline, with no quote in this receipt: never the green headline, the warnings named
    assert "&#9888; verified, with warnings: attestation, anchor not checked" in html
    assert "loss: 0.9 → 0.38 over 5 steps" in html
    assert "Rapha receipt: verified" in text and "█" in text and "0.9 -> 0.38" in text
    assert "copy</button>" in html and ("c0de" * 16) in html.split("copy</button>")[0]


def test_pending_anchor_is_shown_as_pending_not_failed():
    shown = widget(receipt(pending=True))
    assert shown.pending and not shown.verified
    assert "anchor pending" in shown._repr_html_() and "&#8987;" in shown._repr_html_()
    assert shown.text().startswith("Rapha receipt: signature verified, anchor pending") and "PENDING" in shown.text()


def test_hostile_values_get_no_button_and_no_link():
    document = receipt()
    document["anchor"]["tx_hash"] = "0x'); alert(1); ('"
    html = ReceiptWidget(document, None)._repr_html_()
    assert "alert(1)" not in html.replace("&#x27;", "'").split("title=")[0]
    assert "writeText('0x&#x27;" not in html and "polygonscan" not in html


NOTEBOOK_CODE = """
import json
from jupyter_rapha.protocol.keys import load_public_key
from jupyter_rapha.verify import verify_document
from jupyter_rapha.widget import ReceiptWidget
document = json.load(open({receipt!r}))
ReceiptWidget(document, verify_document(document, load_public_key({key!r}), offline=True))
"""


@pytest.mark.slow
def test_widget_in_a_notebook_executed_by_nbclient_and_exported_static(tmp_path):
    path = tmp_path / "receipt.json"
    path.write_text(json.dumps(receipt()))
    notebook = nbformat.v4.new_notebook()
    notebook.cells.append(nbformat.v4.new_code_cell(NOTEBOOK_CODE.format(receipt=str(path), key=KEY.public.to_text())))
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    NotebookClient(notebook, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    output = notebook.cells[0].outputs[0]
    assert output["output_type"] == "execute_result"
    assert "rapha-receipt" in output["data"]["text/html"] and "Rapha receipt: verified" in output["data"]["text/plain"]
    static, _ = HTMLExporter().from_notebook_node(notebook)
    assert "class='rapha-receipt'" in static or 'class="rapha-receipt"' in static
    assert "rapha-loss" in static and "polygonscan.com/tx/" + TX in static
    (tmp_path / "receipt.html").write_text(static)


def test_the_released_loss_is_drawn_per_epoch_with_labelled_axes():
    """One value per epoch the job asked for: x is "epoch"; otherwise "step" (one per log call)."""
    import xml.etree.ElementTree as ET

    def labels(epochs):
        document = predicate()
        document["job"]["params"] = {"epochs": epochs}
        signed = sign_receipt(document, sha256_hex(WEIGHTS), KEY)
        html = widget(signed)._repr_html_()
        svg = html[html.index("<svg class='rapha-loss'"):]
        root = ET.fromstring(svg[:svg.index("</svg>") + 6])
        return {e.get("class"): e.text for e in root.iter("{http://www.w3.org/2000/svg}text")
                if e.get("class") in ("x-label", "y-label")}

    assert labels(5) == {"x-label": "epoch", "y-label": "loss"}
    assert labels(2) == {"x-label": "step", "y-label": "loss"}
