"""The side panel's copy of the contract (labextension/src/contract.ts) is the one the
generator writes from jupyter_rapha/protocol/contract.py, and the panel reads its states
from it rather than spelling them itself."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from jupyter_rapha.protocol.contract import METRIC_NAME_RULE, TERMINAL_STATES, JobState

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "labextension" / "scripts" / "gen_contract.py"
SRC = ROOT / "labextension" / "src"


def generator():
    spec = importlib.util.spec_from_file_location("gen_contract", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generated_typescript_is_up_to_date():
    assert (SRC / "contract.ts").read_text("utf-8") == generator().render(), \
        "labextension/src/contract.ts is stale: run python labextension/scripts/gen_contract.py"


def test_the_check_mode_fails_on_a_stale_copy(tmp_path, monkeypatch):
    module = generator()
    stale = tmp_path / "contract.ts"
    stale.write_text(module.render().replace("'held', ", ""))
    monkeypatch.setattr(module, "TARGET", stale)
    monkeypatch.setattr(module, "ROOT", tmp_path)
    assert module.main(["--check"]) == 1
    assert module.main([]) == 0 and module.main(["--check"]) == 0


def test_the_copy_holds_every_state_and_the_rule():
    text = (SRC / "contract.ts").read_text("utf-8")
    terminal = re.search(r"TERMINAL_STATES: readonly string\[\] = \[(.*)\];", text).group(1)
    assert set(re.findall(r"'(\w+)'", terminal)) == TERMINAL_STATES
    assert all(f"'{state.value}'" in text for state in JobState) and METRIC_NAME_RULE in text


def test_the_panel_spells_no_state_list_of_its_own():
    model = (SRC / "model.ts").read_text("utf-8")
    assert "from './contract'" in model
    assert not re.search(r"\[\s*'completed'\s*,", model)  # FINAL_STATES comes from the contract
