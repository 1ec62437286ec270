import pytest

from jupyter_rapha.protocol.errors import BadInput
from jupyter_rapha.protocol.jobspec import code_digest, parse_jobspec


def spec_dict(**overrides):
    code = "rapha.log(loss=1.0)\n"
    data = {"version": 1, "job_id": "a" * 32, "researcher_key_id": "b" * 32, "created": "2026-11-27T10:00:00Z",
            "nonce": "c" * 32, "code": code, "code_sha256": code_digest(code), "dataset": "synthetic-cxr",
            "fields": ["image", "finding"], "budget": {"max_records": 10, "max_seconds": 60},
            "output_policy": {"max_weights_bytes": 1000, "metric_names": ["loss"]}, "params": {"epochs": 2}}
    data.update(overrides)
    return data


def test_round_trip():
    spec = parse_jobspec(spec_dict())
    assert parse_jobspec(spec.to_dict()) == spec
    assert spec.epochs == 2


@pytest.mark.parametrize("overrides,fragment", [
    ({"version": 2}, "version"), ({"job_id": "XYZ"}, "job_id"), ({"code_sha256": "0" * 64}, "code_sha256"),
    ({"budget": {"max_records": 0}}, "max_records"), ({"budget": {"max_records": True}}, "max_records"),
    ({"fields": ["image", "image"]}, "twice"), ({"dataset": "../etc"}, "dataset"), ({"extra": 1}, "unknown keys"),
    ({"params": {"x": [1]}}, "param"), ({"created": "yesterday"}, "created"), ({"code": ""}, "code"),
])
def test_bad_specs_say_what_to_fix(overrides, fragment):
    with pytest.raises(BadInput) as info:
        parse_jobspec(spec_dict(**overrides))
    assert fragment in info.value.diagnostics()


def test_oversized_code_is_refused():
    code = "x = 1\n" * 60_000
    with pytest.raises(BadInput):
        parse_jobspec(spec_dict(code=code, code_sha256=code_digest(code)))


def test_the_cells_first_line_is_carried_and_bounded():
    assert parse_jobspec(spec_dict()).cell_first_line == 1  # a spec without it: a cell file
    spec = parse_jobspec(spec_dict(cell_first_line=2))
    assert spec.cell_first_line == 2 and parse_jobspec(spec.to_dict()) == spec
    for bad in (0, -1, True, "2", 2.0, 10**7):
        with pytest.raises(BadInput, match="cell_first_line"):
            parse_jobspec(spec_dict(cell_first_line=bad))


def test_the_default_first_line_is_left_out_of_the_spec():
    assert "cell_first_line" not in parse_jobspec(spec_dict()).to_dict()
    assert parse_jobspec(spec_dict(cell_first_line=2)).to_dict()["cell_first_line"] == 2
