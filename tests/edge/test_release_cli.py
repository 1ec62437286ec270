"""``rapha-edge release``: output checkers release held jobs, against a real edge.

The fast tests at the top need no running edge: registering checkers, and mistakes the
command refuses before it asks the edge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_kernel.cli import main as edge_cli
from jupyter_rapha.protocol.keys import PrivateKey


@pytest.fixture
def config(tmp_path: Path) -> Path:
    root = tmp_path / "edge"
    assert edge_cli(["init", str(root)]) == 0
    return root


def registry(root: Path) -> dict:
    return json.loads((root / "researchers.json").read_text())


def test_a_checker_is_registered_with_the_output_checker_role(config, capsys):
    key = PrivateKey.generate()
    assert edge_cli(["researchers", "add", "ada", key.public.to_text(), "--role", "output-checker",
                     "--config", str(config)]) == 0
    assert registry(config)["researchers"][0]["roles"] == ["output-checker"]
    capsys.readouterr()
    assert edge_cli(["researchers", "list", "--config", str(config)]) == 0
    assert "roles=output-checker" in capsys.readouterr().out


@pytest.mark.parametrize("role", ["output_checker", "outputchecker", "Output-Checker", "output-checkers"])
def test_a_typo_of_the_checker_role_is_refused_and_nothing_written(config, capsys, role):
    assert edge_cli(["researchers", "add", "ada", PrivateKey.generate().public.to_text(), "--role", role,
                     "--config", str(config)]) == 1
    assert "did you mean output-checker" in capsys.readouterr().err
    assert not (config / "researchers.json").exists()


def test_other_roles_are_the_policys_and_pass(config):
    assert edge_cli(["researchers", "add", "ada", PrivateKey.generate().public.to_text(), "--role", "clinician",
                     "--role", "auditor", "--config", str(config)]) == 0


@pytest.fixture
def checker_key(tmp_path: Path) -> Path:
    path = tmp_path / "ada.pem"
    path.write_bytes(PrivateKey.generate().to_pem())
    return path


@pytest.mark.parametrize(("key", "reason", "words"), [
    ("missing.pem", "fine", "--key missing.pem: no such file"),
    (None, "", "a decision needs a reason"),
    (None, "ok\x1b[2J", "control or direction character"),
])
def test_local_mistakes_are_refused_before_the_edge_is_asked(config, checker_key, capsys, key, reason, words):
    assert edge_cli(["release", "approve", "ab" * 16, "--as", "ada", "--key", key or str(checker_key),
                     "--reason", reason, "--config", str(config)]) == 1
    assert words in capsys.readouterr().err


def test_without_a_running_edge_the_commands_say_so(config, checker_key, capsys):
    assert edge_cli(["release", "list", "--config", str(config)]) == 1
    assert "no edge is running for this config directory" in capsys.readouterr().err
    assert edge_cli(["release", "reject", "ab" * 16, "--as", "ada", "--key", str(checker_key), "--reason", "no",
                     "--config", str(config)]) == 1
    assert "start it with 'rapha-edge serve'" in capsys.readouterr().err


def test_approve_needs_as_key_and_reason(config, capsys):
    with pytest.raises(SystemExit) as stopped:
        edge_cli(["release", "approve", "ab" * 16, "--config", str(config)])
    assert stopped.value.code == 2
    assert "--as" in capsys.readouterr().err
