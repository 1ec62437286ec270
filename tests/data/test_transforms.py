"""The transform vocabulary in the schema: validated when a dataset is parsed (``datasets
add``, edge start), with messages that name the step and the parameter; stored and shown
canonically; its digest in the receipt and checked by ``rapha verify``."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from edge_kernel.cli import main as edge_cli
from edge_kernel.config_files import ConfigFault
from edge_kernel.data.registry import DatasetRegistry, parse_dataset
from edge_kernel.data.transforms import parse_transforms, receipt_entry
from edge_kernel.release.receipts import dataset_entry
from jupyter_rapha.protocol.canonical import canonical_json
from jupyter_rapha.protocol.errors import BadInput
from jupyter_rapha.protocol.keys import PrivateKey
from jupyter_rapha.protocol.receipt import preprocessing_digest, sign_receipt, verify_receipt
from tests.receipts.receipt_factory import predicate as base_predicate

CT_STEPS = ["modality_lut", {"op": "window", "center": 40, "width": 400},
            {"op": "resize", "interpolation": "linear"}, {"op": "intensity", "clip": [0, 1], "scale_to": [-1, 1]}]


def entry(transforms, *, source="dicom-folder", dtype="float32", shape=(1, 32, 32), kind="feature"):
    return {"name": "ct", "source": source, "location": "x",
            "fields": {"image": {"dtype": dtype, "shape": list(shape), "kind": kind, "transforms": transforms}}}


def refused(transforms, **kwargs) -> str:
    with pytest.raises(BadInput) as info:
        parse_dataset(entry(transforms, **kwargs))
    return info.value.diagnostics()


@pytest.mark.parametrize("transforms,words", [
    (["sharpen"], ["transform 1", "unknown transform 'sharpen'", "modality_lut, window, resize"]),
    (["modality_lut", {"op": "window", "center": "40", "width": 400}],
     ["transform 2 (window)", "parameter 'center'", "finite number", 'the string "40"']),
    ([{"op": "resize", "interpolation": 2}], ["transform 1 (resize)", "parameter 'interpolation'", "nearest"]),
    ([{"op": "resize", "interpolation": "bicubic"}], ["parameter 'interpolation'", 'not the string "bicubic"']),
    ([{"op": "resize"}], ["(resize)", "'interpolation' is required"]),
    ([{"op": "resize", "interpolation": "area", "size": [3, 3]}], ["unknown parameter 'size'", "takes interpolation"]),
    (["modality_lut", {"op": "window", "center": 40}], ["(window)", "both 'center' and 'width'"]),
    (["modality_lut", {"op": "window", "center": 40, "width": True}], ["parameter 'width'", "not true"]),
    (["modality_lut", {"op": "window", "center": 40, "width": -3}], ["parameter 'width'", "greater than 0", "not -3"]),
    (["modality_lut", {"op": "window", "center": 40, "width": 0.5}], ["'width' must be at least 1"]),
    (["modality_lut", {"op": "window", "function": "cubic"}], ["parameter 'function'", "linear_exact"]),
    ([{"op": "window", "center": 40, "width": 400}], ["'window' needs 'modality_lut' before it"]),
    ([{"op": "intensity"}], ["(intensity)", "'clip', 'scale_to'"]),
    ([{"op": "intensity", "clip": [5, 1]}], ["parameter 'clip'", "low below high"]),
    ([{"op": "intensity", "clip": [0, float("nan")]}], ["parameter 'clip'", "two finite numbers"]),
    ([{"op": "intensity", "scale_to": "0-1"}], ["parameter 'scale_to'", "[low, high]"]),
    ([{"op": "resize", "interpolation": "area"}, "modality_lut"], ["'modality_lut' must be the first"]),
    (["invert_monochrome1", "invert_monochrome1"], ["listed 2 times"]),
    ([{"interpolation": "area"}], ["transform 1", "'op'"]),
    ([], ["at least one step", "leave it out"]),
    ("modality_lut", ["at least one step"]),
])
def test_bad_transforms_are_refused_naming_the_step_and_parameter(transforms, words):
    message = refused(transforms)
    assert message.startswith("dataset ct: field image: ")
    for word in words:
        assert word in message, (word, message)


@pytest.mark.parametrize("kwargs,words", [
    ({"source": "csv"}, ["DICOM images", "not csv"]),
    ({"dtype": "uint8"}, ["float32 or float64", "not uint8"]),
    ({"shape": (1024,)}, ["at least [rows, columns]"]),
    ({"kind": "label"}, ["image field, not a label"]),
])
def test_transforms_on_a_field_they_cannot_apply_to_are_refused(kwargs, words):
    message = refused(["modality_lut"], **kwargs)
    for word in words:
        assert word in message


def test_steps_are_stored_canonically_and_read_back(tmp_path):
    dataset = parse_dataset(entry(CT_STEPS))
    steps = dataset.schema()["image"]["transforms"]
    assert steps == [{"op": "modality_lut"}, {"op": "window", "center": 40.0, "width": 400.0},
                     {"op": "resize", "interpolation": "bilinear"},  # the alias, resolved
                     {"op": "intensity", "clip": [0.0, 1.0], "scale_to": [-1.0, 1.0]}]
    registry = DatasetRegistry(tmp_path)
    registry.add(dataset)
    assert registry.get("ct") == dataset
    default = parse_dataset({"name": "xr", "location": "x",
                             "fields": {"image": {"dtype": "float32", "shape": [1, 8, 8]}}})
    assert "transforms" not in default.schema()["image"]  # a default field reads as before


def test_a_bad_transform_stops_the_edge_from_loading_its_registry(tmp_path):
    registry = DatasetRegistry(tmp_path)
    registry.add(parse_dataset(entry(CT_STEPS)))
    doc = json.loads(registry.path.read_text())
    doc["datasets"][0]["fields"]["image"]["transforms"][2]["interpolation"] = "lanczos"
    registry.path.write_text(json.dumps(doc))
    with pytest.raises(ConfigFault) as info:
        registry.all()  # what Edge() calls at start
    assert "transform 3 (resize): parameter 'interpolation'" in info.value.admin_diagnostics()
    assert "lanczos" not in info.value.diagnostics()  # the researcher's side gets the generic message


def test_datasets_add_refuses_a_bad_schema_and_writes_nothing(tmp_path, capsys):
    assert edge_cli(["init", str(tmp_path)]) == 0
    (tmp_path / "data").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    registry_before = (tmp_path / "datasets.json").read_bytes() if (tmp_path / "datasets.json").exists() else None
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"fields": {"image": {"dtype": "float32", "shape": [1, 32, 32],
                                                       "transforms": [{"op": "resize", "interpolation": 7}]}}}))
    code = edge_cli(["datasets", "add", "cxr", "--path", "data", "--schema", str(schema), "--config", str(tmp_path)])
    assert code == 1
    assert "field image: transform 1 (resize): parameter 'interpolation' must be one of" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "schema.json"])
    assert registry_before == ((tmp_path / "datasets.json").read_bytes() if registry_before is not None else None)
    schema.write_text(json.dumps({"fields": {"image": {"dtype": "float32", "shape": [1, 32, 32],
                                                       "transforms": ["frobnicate"]}}}))
    assert edge_cli(["datasets", "add", "cxr", "--path", "data", "--schema", str(schema),
                     "--config", str(tmp_path)]) == 1
    assert "unknown transform 'frobnicate'" in capsys.readouterr().err


# ---- the receipt --------------------------------------------------------------------------

def meter(preprocessing):
    return SimpleNamespace(records_used=3, records_root_hex="ab" * 32, cohort_size=3, skipped={},
                           preprocessing=preprocessing)


def test_the_receipt_names_the_steps_and_their_canonical_digest():
    dataset = parse_dataset(entry(CT_STEPS))
    found = receipt_entry(dataset.fields)
    expected_steps = dataset.schema()["image"]["transforms"]
    assert found["fields"] == {"image": expected_steps}
    import hashlib
    assert found["sha256"] == hashlib.sha256(canonical_json({"image": expected_steps})).hexdigest()
    spec = SimpleNamespace(fields=["image"])
    section = dataset_entry(spec, dataset, meter(found))
    assert section["preprocessing"] == found
    default = parse_dataset({"name": "xr", "location": "x",
                             "fields": {"image": {"dtype": "float32", "shape": [1, 8, 8]}}})
    assert receipt_entry(default.fields) is None
    assert "preprocessing" not in dataset_entry(spec, default, meter(None))


def signed(preprocessing, key):
    predicate = base_predicate()
    predicate["dataset"] = dict(predicate["dataset"], preprocessing=preprocessing)
    return sign_receipt(predicate, predicate["outputs"]["weights"]["sha256"], key)


def test_verify_shows_the_preprocessing_and_checks_its_digest():
    key = PrivateKey.generate()
    steps = {"image": [{"op": "modality_lut"}, {"op": "resize", "interpolation": "area"}]}
    result = verify_receipt(signed({"sha256": preprocessing_digest(steps), "fields": steps}, key), key.public)
    check = next(c for c in result.checks if c.name == "preprocessing")
    assert check.status == "pass" and "image: modality_lut, resize" in check.detail
    wrong = verify_receipt(signed({"sha256": "00" * 32, "fields": steps}, key), key.public)
    assert next(c for c in wrong.checks if c.name == "preprocessing").status == "fail"
    assert not wrong.ok(allow_skipped=True)


def test_a_receipt_without_preprocessing_gets_no_line():
    key = PrivateKey.generate()
    predicate = base_predicate()
    document = sign_receipt(predicate, predicate["outputs"]["weights"]["sha256"], key)
    assert "preprocessing" not in [c.name for c in verify_receipt(document, key.public).checks]


def test_parse_transforms_is_callable_alone():
    steps = parse_transforms(["modality_lut", "window"], "dataset x: field image")
    assert [s.describe() for s in steps] == ["modality_lut", "window(header)"]
