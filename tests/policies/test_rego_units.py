"""Runs every Rego unit test in policies/ (rules named test_* in *_test.rego files).

Each test rule must evaluate to true; undefined (the usual Rego test failure) or an
engine error fails the pytest case that names it.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

if importlib.util.find_spec("torch"):  # torch must load before regopy in one process
    import torch  # noqa: F401

POLICY_DIR = Path(__file__).resolve().parents[2] / "policies"
_TEST_RULE = re.compile(r"^(test_\w+)\b", re.MULTILINE)
_PACKAGE = re.compile(r"^package\s+([\w.]+)", re.MULTILINE)


def _test_rules() -> list[tuple[str, str, str]]:
    rules = []
    for path in sorted(POLICY_DIR.glob("*_test.rego")):
        text = path.read_text("utf-8")
        package = _PACKAGE.search(text)
        assert package, f"{path.name} has no package line"
        rules += [(path.name, package.group(1), name) for name in _TEST_RULE.findall(text)]
    return rules


@pytest.fixture(scope="module")
def interpreter():
    from regopy import Interpreter

    rego = Interpreter()
    for path in sorted(POLICY_DIR.glob("*.rego")):
        rego.add_module(path.name, path.read_text("utf-8"))
    rego.add_data_json((POLICY_DIR / "data.json").read_text("utf-8"))
    return rego


def test_every_policy_file_has_unit_tests():
    policies = {p.stem for p in POLICY_DIR.glob("*.rego") if not p.name.endswith("_test.rego")}
    tested = {p.stem.removesuffix("_test") for p in POLICY_DIR.glob("*_test.rego")}
    assert policies - {"decision"} <= tested, f"untested policy files: {policies - tested}"
    assert len(_test_rules()) >= 40


@pytest.mark.parametrize(("file", "package", "rule"), _test_rules(), ids=lambda v: str(v))
def test_rego_unit(interpreter, file, package, rule):
    output = interpreter.query(f"data.{package}.{rule}")
    assert output.ok(), f"{file}: {rule} did not evaluate"  # never str() a failed output
    values = output.results[0].expressions if output.results else []
    assert values == [True], f"{file}: {rule} is {values or 'undefined'}"
