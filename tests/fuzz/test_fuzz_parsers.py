"""The pure parsers an edge runs on what others send: the Authorization header, the job
spec, the weights (safetensors header) and the metrics a job wrote, and bounded JSON
itself. Whatever the input, each returns or raises the project's own error, nothing else."""

from __future__ import annotations

import json
import struct

from hypothesis import given
from hypothesis import strategies as st

from edge_kernel.release.metrics import check_metrics
from edge_kernel.release.weights import check_weights
from jupyter_rapha.protocol import bounded
from jupyter_rapha.protocol.errors import BadInput, RaphaError, ReleaseDenied
from jupyter_rapha.protocol.jobspec import OutputPolicy, code_digest, parse_jobspec
from jupyter_rapha.protocol.keys import PrivateKey
from jupyter_rapha.protocol.request import parse_authorization, sign_request, verify_request
from tests.fuzz.strategies import (DELETE, NASTY_STRINGS, budget, every_mutation, json_bytes, json_values, paths,
                                   replaced)

KEY = PrivateKey.generate()
POLICY = OutputPolicy(max_weights_bytes=1 << 20, metric_names=("loss", "accuracy"), max_metric_points=100)
hostile = json_values | st.just(DELETE)


# -- Authorization ----------------------------------------------------------------------

HEADER = sign_request(KEY, "GET", "/v1/jobs", b"", 1_800_000_000)
field_values = st.sampled_from(NASTY_STRINGS) | st.text(max_size=40)


@st.composite
def headers(draw) -> str:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.text(max_size=200))
    if kind == 1:  # one field of a real header replaced
        name = draw(st.sampled_from(["keyId", "ts", "nonce", "sig"]))
        start = HEADER.index(f'{name}="') + len(name) + 2
        end = HEADER.index('"', start)
        return HEADER[:start] + draw(field_values).replace('"', "") + HEADER[end:]
    if kind == 2:  # a real header cut or grown
        cut = draw(st.integers(0, len(HEADER)))
        return HEADER[:cut] + draw(st.text(max_size=20))
    return HEADER.replace(", ", draw(st.sampled_from([",", " ,", ",,", "\t,", ", x=\"1\", "])))


@budget(100)
@given(headers())
def test_authorization_parsing_raises_only_project_errors(header):
    try:
        auth = parse_authorization(header)
    except RaphaError:
        return
    assert 0 <= auth.timestamp <= 2**40
    try:
        verify_request(auth, KEY.public, "GET", "/v1/jobs", b"", 1_800_000_000)
    except RaphaError:
        pass


# -- JobSpec ----------------------------------------------------------------------------

CODE = "rapha.log(loss=1.0)\n"
SPEC = {"version": 1, "job_id": "a" * 32, "researcher_key_id": "b" * 32, "created": "2026-11-27T10:00:00Z",
        "nonce": "c" * 32, "code": CODE, "code_sha256": code_digest(CODE), "dataset": "synthetic-cxr",
        "fields": ["image", "finding"], "budget": {"max_records": 10, "max_seconds": 60},
        "output_policy": {"max_weights_bytes": 1000, "metric_names": ["loss"], "max_metric_points": 10},
        "params": {"epochs": 2, "lr": 0.1, "name": "x"}}
SPEC_PATHS = [p for p in paths(SPEC) if p]


@budget(100)
@given(st.sampled_from(SPEC_PATHS), hostile)
def test_jobspec_parsing_raises_only_bad_input(path, value):
    try:
        spec = parse_jobspec(replaced(SPEC, path, value))
    except BadInput:
        return
    assert parse_jobspec(spec.to_dict()) == spec  # what parses, round-trips


def test_every_jobspec_node_replaced_by_each_hostile_sample_is_bad_input():
    for _path, _, changed in every_mutation(SPEC):
        try:
            parse_jobspec(changed)
        except BadInput:
            continue


@budget(100)
@given(json_values)
def test_jobspec_of_any_value_raises_only_bad_input(value):
    try:
        parse_jobspec(value)
    except BadInput:
        pass


# -- weights: safetensors header -----------------------------------------------------------

def safetensors(header: object, body: bytes = b"\0" * 8) -> bytes:
    raw = json.dumps(header).encode("utf-8", "surrogatepass")
    return struct.pack("<Q", len(raw)) + raw + body


WEIGHTS_HEADER = {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "__metadata__": {"format": "pt"}}
WEIGHTS_PATHS = [p for p in paths(WEIGHTS_HEADER) if p]


def test_the_unmutated_weights_pass():
    assert check_weights(safetensors(WEIGHTS_HEADER), POLICY).parameters == 2


def test_every_weights_header_node_replaced_by_each_hostile_sample_is_release_denied():
    for path, sample, changed in every_mutation(WEIGHTS_HEADER):
        try:
            check_weights(safetensors(changed), POLICY)
        except ReleaseDenied:
            continue
        assert path[0] == "__metadata__" and (sample is DELETE or sample == {})  # no metadata is allowed


@budget(100)
@given(st.sampled_from(WEIGHTS_PATHS), hostile)
def test_weights_header_checks_raise_only_release_denied(path, value):
    try:
        check_weights(safetensors(replaced(WEIGHTS_HEADER, path, value)), POLICY)
    except ReleaseDenied:
        pass


@budget(100)
@given(st.binary(max_size=64), st.integers(0, 2**64 - 1), json_bytes)
def test_weights_of_any_bytes_raise_only_release_denied(prefix, length, header):
    for data in (prefix, struct.pack("<Q", length) + header, struct.pack("<Q", len(header)) + header):
        try:
            check_weights(data, POLICY)
        except ReleaseDenied:
            pass


# -- metrics --------------------------------------------------------------------------------

METRICS = {"loss": [0.5, 0.25], "accuracy": [1, 0.5]}
METRICS_PATHS = [p for p in paths(METRICS) if p]


def test_every_metrics_node_replaced_by_each_hostile_sample_is_release_denied_or_clean():
    for _, _, changed in every_mutation(METRICS):
        try:
            clean = check_metrics(changed, POLICY)
        except ReleaseDenied:
            continue
        assert all(isinstance(v, float) for series in clean.values() for v in series)


@budget(100)
@given(st.sampled_from(METRICS_PATHS), hostile)
def test_metrics_checks_raise_only_release_denied(path, value):
    changed = replaced(METRICS, path, value)
    for check in (lambda: check_metrics(changed, POLICY),
                  lambda: _metrics_of_bytes(json.dumps(changed).encode("utf-8", "surrogatepass"))):
        try:
            clean = check()
        except ReleaseDenied:
            continue
        assert all(isinstance(v, float) for series in clean.values() for v in series)


@budget(100)
@given(json_bytes)
def test_metrics_of_any_bytes_raise_only_release_denied(raw):
    try:
        _metrics_of_bytes(raw)
    except ReleaseDenied:
        pass


def _metrics_of_bytes(raw: bytes) -> dict:
    # what the edge does with a job's metrics.json: bounded JSON, then the release check
    return check_metrics(bounded.loads(raw, what="metrics file", error=ReleaseDenied), POLICY)


# -- bounded JSON -------------------------------------------------------------------------------

@budget(100)
@given(json_bytes)
def test_bounded_json_raises_only_its_error_and_agrees_with_json(raw):
    try:
        value = bounded.loads(raw)
    except BadInput:
        return
    assert value == json.loads(raw) or value != value  # NaN is the one value unequal to itself
    json.dumps(value).encode("utf-8")  # no lone surrogate survived


@budget(100)
@given(json_values)
def test_bounded_json_accepts_what_json_dumps_writes_within_the_depth(value):
    text = json.dumps(value)
    try:
        parsed = bounded.loads(text)
    except BadInput as exc:
        assert "nested deeper" in exc.message or "surrogate" in exc.message, exc.message
        return
    assert json.dumps(parsed) == text
