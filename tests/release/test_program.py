"""The exported program is hostile input: an archive that would run the job's code in the
check process (pickles, attribute-walk targets, evaluated shape expressions, guard code,
the legacy format) is refused before torch reads it, and nothing of it runs."""

from __future__ import annotations

import json
import pickle
import zipfile

import pytest
import torch

from edge_kernel.inside.runtime import Rapha
from edge_kernel.release.membership import membership_figures
from edge_kernel.release.program import UnsafeProgram, check_archive, load_program
from edge_kernel.wire.outputs import PROGRAM_FILE

SCHEMA = {"x": {"dtype": "float32", "shape": [4], "kind": "feature"},
          "y": {"dtype": "int64", "shape": [], "kind": "label"}}


@pytest.fixture
def program(tmp_path):
    torch.manual_seed(0)
    Rapha(None, {}, SCHEMA, tmp_path / "out").save(torch.nn.Linear(4, 2))  # type: ignore[arg-type]
    return tmp_path / "out" / PROGRAM_FILE


def _rewrite(source, target, *, edit_model=None, add: dict[str, bytes] | None = None, drop_root=False):
    """A copy of the archive with its model description edited or members added."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as copy:
        root = original.namelist()[0].split("/", 1)[0]
        for info in original.infolist():
            data = original.read(info.filename)
            if edit_model is not None and info.filename == f"{root}/models/model.json":
                model = json.loads(data)
                edit_model(model)
                data = json.dumps(model).encode()
            copy.writestr(info.filename[len(root) + 1:] if drop_root else info.filename, data)
        for name, data in (add or {}).items():
            copy.writestr(f"{root}/{name}", data)
    return target


def test_an_honest_export_loads_and_so_does_an_unchanged_rewrite(program, tmp_path):
    assert load_program(program).state_dict.keys() == {"weight", "bias"}
    load_program(_rewrite(program, tmp_path / "same.pt2"))  # the rewriting alone changes nothing


def _first_node(model):
    return model["graph_module"]["graph"]["nodes"][0]


def _target(value):
    return lambda model: _first_node(model).__setitem__("target", value)


def _expression(value):
    def edit(model):
        first = next(iter(model["graph_module"]["graph"]["tensor_values"].values()))
        first["sizes"][0] = {"as_expr": {"expr_str": value}}
    return edit


class _Marker:
    """Unpickling this creates a file: proof that something ran."""

    def __init__(self, path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("attack", [
    "attribute_walk_target", "math_target", "extension_target", "evaluated_expression",
    "dunder_expression", "guard_code", "guard_code_after_a_size", "guard_code_on_a_new_line",
    "script_object", "opaque_constant", "pickled_weight",
    "extra_member", "legacy_format", "node_name"])
def test_a_hostile_archive_is_refused_before_anything_of_it_runs(program, tmp_path, attack):
    marker = tmp_path / "ran"
    payload = pickle.dumps(_Marker(marker))
    hostile = tmp_path / "hostile.pt2"
    edits = {
        "attribute_walk_target": dict(edit_model=_target("torch.os.system")),
        "math_target": dict(edit_model=_target("math.factorial")),
        "extension_target": dict(edit_model=_target("#custom.op")),
        "evaluated_expression": dict(edit_model=_expression(f"open('{marker}', 'w')")),
        "dunder_expression": dict(edit_model=_expression("Symbol('s0').__class__")),
        "guard_code": dict(edit_model=lambda m: m.__setitem__("guards_code", [f"open('{marker}', 'w')"])),
        "guard_code_after_a_size": dict(edit_model=lambda m: m.__setitem__(
            "guards_code", [f"L['x'].size()[0] == 2 or open('{marker}', 'w')"])),
        "guard_code_on_a_new_line": dict(edit_model=lambda m: m.__setitem__(
            "guards_code", [f"L['x'].size()[0] == 2\nopen('{marker}', 'w')"])),
        "script_object": dict(edit_model=lambda m: m["graph_module"]["graph"].__setitem__(
            "custom_obj_values", {"obj": {"name": "obj", "class_fqn": "x"}})),
        "opaque_constant": dict(add={"data/constants/opaque_obj_0": payload}),
        "extra_member": dict(add={"data/aotinductor/model.so": b"\x7fELF"}),
        "legacy_format": dict(add={"../version": b"1"}),
        "node_name": dict(edit_model=lambda m: _first_node(m)["outputs"][0]["as_tensor"].__setitem__(
            "name", "x; import os")),
    }
    if attack == "pickled_weight":
        with zipfile.ZipFile(program) as original, zipfile.ZipFile(hostile, "w") as copy:
            for info in original.infolist():
                data = original.read(info.filename)
                if info.filename.endswith("model_weights_config.json"):
                    config = json.loads(data)
                    for entry in config["config"].values():
                        entry["use_pickle"] = True
                    data = json.dumps(config).encode()
                if info.filename.endswith("weights/weight_0"):
                    data = payload
                copy.writestr(info, data)
    else:
        _rewrite(program, hostile, **edits[attack])
    with pytest.raises(UnsafeProgram):
        check_archive(hostile)
    figures = membership_figures(hostile, [{"x": torch.zeros(4).numpy(), "y": torch.tensor(0).numpy()}] * 2,
                                 [{"x": torch.ones(4).numpy(), "y": torch.tensor(1).numpy()}] * 2, SCHEMA)
    assert figures["status"] == "not_checkable" and figures["auc"] is None
    assert not marker.exists()


def test_what_is_not_an_archive_is_refused(tmp_path):
    for content in (b"", b"not a zip", pickle.dumps({"weight": 1})):
        path = tmp_path / "program.pt2"
        path.write_bytes(content)
        with pytest.raises(UnsafeProgram):
            load_program(path)


def test_an_archive_without_its_root_folder_is_refused(program, tmp_path):
    with pytest.raises(UnsafeProgram):
        check_archive(_rewrite(program, tmp_path / "flat.pt2", drop_root=True))
