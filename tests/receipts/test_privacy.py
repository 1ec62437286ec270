"""The receipt's privacy section (predicate 1.4): required for a DP job, refused on a
standard one or an older receipt, checked against the weights (the trainer's digest), and
shown by `rapha verify` and the receipt widget."""

from __future__ import annotations

import pytest
from safetensors.numpy import save

import numpy as np

from jupyter_rapha.protocol.keys import PrivateKey
from jupyter_rapha.protocol.private import state_digest
from jupyter_rapha.protocol.receipt import sha256_hex, sign_receipt, verify_receipt
from jupyter_rapha.widget import ReceiptWidget
from tests.receipts.receipt_factory import METRICS, predicate
from tests.receipts.test_disclosure import DISCLOSURE

WEIGHTS = save({"head.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "head.bias": np.zeros(2, np.float32)})
PRIVACY = {"mechanism": "DP-SGD", "epsilon_target": 8.0, "epsilon_spent": 7.99, "delta": 0.001,
           "noise_multiplier": 1.01, "max_grad_norm": 1.0, "sampling_rate": 0.25, "steps": 32, "steps_planned": 32,
           "epochs": 8, "batch_size": 16, "lr": 2.0, "optimiser": "sgd", "accountant": "opacus.rdp",
           "accountant_version": "1.6.0", "program_sha256": "a" * 64, "parameters_sha256": state_digest(WEIGHTS),
           "loss_released": False}


@pytest.fixture(scope="module")
def edge_key():
    return PrivateKey.generate()


def signed(edge_key, *, mode="dp", version="1.4", **changes):
    base = predicate()
    value = {**base, "job": {**base["job"], "mode": mode}, "receipt_version": version, "disclosure": DISCLOSURE,
             "privacy": PRIVACY, **changes}
    value = {k: v for k, v in value.items() if v is not None}
    return sign_receipt(value, sha256_hex(WEIGHTS), edge_key)


def line(result):
    return next(((c.status, c.detail) for c in result.checks if c.name == "privacy"), None)


def test_a_dp_receipt_shows_its_budget_and_spend(edge_key):
    result = verify_receipt(signed(edge_key), edge_key.public, weights=WEIGHTS)
    status, detail = line(result)
    assert status == "pass"
    for text in ("DP-SGD: epsilon 7.99 spent of 8", "delta 0.001", "noise multiplier 1.01", "32 steps",
                 "accountant opacus.rdp 1.6.0"):
        assert text in detail, (text, detail)


def test_weights_other_than_the_trainers_fail(edge_key):
    other = save({"head.weight": np.ones((2, 3), np.float32), "head.bias": np.zeros(2, np.float32)})
    document = sign_receipt({**predicate(), "job": {**predicate()["job"], "mode": "dp"}, "receipt_version": "1.4",
                             "disclosure": DISCLOSURE, "privacy": PRIVACY}, sha256_hex(other), edge_key)
    assert line(verify_receipt(document, edge_key.public, weights=other)) == (
        "fail", "the weights are not the parameters the edge's DP trainer recorded")


@pytest.mark.parametrize("changes,words", [
    ({"privacy": None}, "no privacy section"),
    ({"privacy": {**PRIVACY, "epsilon_spent": 9.0}}, "more epsilon than its target"),
    ({"privacy": {**PRIVACY, "mechanism": "none"}}, "DP-SGD"),
    ({"privacy": {**PRIVACY, "noise_multiplier": 0}}, "noise or steps"),
    ({"privacy": {**PRIVACY, "parameters_sha256": "x"}}, "sha256"),
])
def test_a_dp_receipt_without_a_sound_section_fails(edge_key, changes, words):
    status, detail = line(verify_receipt(signed(edge_key, **changes), edge_key.public))
    assert status == "fail" and words in detail, detail


def test_a_standard_job_or_an_older_receipt_carrying_one_fails(edge_key):
    assert line(verify_receipt(signed(edge_key, mode="standard"), edge_key.public))[0] == "fail"
    assert line(verify_receipt(signed(edge_key, version="1.3"), edge_key.public))[0] == "fail"
    assert line(verify_receipt(signed(edge_key, mode="standard", privacy=None), edge_key.public)) is None


def test_the_widget_shows_the_privacy_line(edge_key):
    document = signed(edge_key)
    widget = ReceiptWidget(document, verify_receipt(document, edge_key.public, weights=WEIGHTS, metrics=METRICS))
    assert "privacy       DP-SGD: epsilon 7.99 spent of 8" in widget.text()
    assert "<th style='text-align:left;padding-right:1em'>privacy</th><td>DP-SGD" in widget._repr_html_()


def test_the_cell_output_says_what_was_spent_of_the_budget(edge_key):
    from jupyter_rapha.result import TrainResult

    document = signed(edge_key)
    result = TrainResult("j", {}, WEIGHTS, METRICS, document,
                         verify_receipt(document, edge_key.public, weights=WEIGHTS, metrics=METRICS))
    assert result.privacy_line.startswith("privacy: DP-SGD: epsilon 7.99 spent of 8 (delta 0.001)")
    standard = signed(edge_key, mode="standard", privacy=None)
    plain = TrainResult("j", {}, WEIGHTS, METRICS, standard, verify_receipt(standard, edge_key.public))
    assert plain.privacy_line == ""
