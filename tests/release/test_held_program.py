"""A held job keeps its exported program beside its outputs, for the membership check,
across a restart; a job whose model did not export has none."""

from __future__ import annotations

from edge_kernel.release.held import PROGRAM_FILE, Held, read_held, write_held


def test_the_program_is_held_with_the_outputs_and_read_back(tmp_path):
    write_held(tmp_path / "held", Held(b"weights", {"loss": [1.0]}, {"p": 1}, b"program bytes"))
    held = read_held(tmp_path / "held")
    assert held is not None and held.program == b"program bytes"
    assert (tmp_path / "held" / PROGRAM_FILE).read_bytes() == b"program bytes"


def test_a_model_that_did_not_export_is_held_without_a_program(tmp_path):
    write_held(tmp_path / "held", Held(b"weights", {}, {"p": 1}))
    held = read_held(tmp_path / "held")
    assert held is not None and held.program is None
    assert not (tmp_path / "held" / PROGRAM_FILE).exists()
