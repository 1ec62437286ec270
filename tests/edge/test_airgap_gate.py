"""The air-gap gate and the job launcher: a sealed self-check is required before a job
runs, the job's view hides the edge's own files, and a missing binary denies (S1, S4)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from edge_kernel.gates.airgap import AirgapGate
from edge_kernel.gates.pipeline import GateContext
from edge_kernel.sandbox.launch import exposed_paths, hidden_paths, wrap_command
from edge_kernel.settings import SandboxSettings, load_settings
from jupyter_rapha.protocol.errors import SandboxFault
from jupyter_rapha.protocol.jobspec import parse_jobspec
from tests.harness import init_edge
from tests.protocol.test_jobspec import spec_dict

AIRGAP = Path(__file__).resolve().parents[2] / "rust" / "airgap" / "target" / "release" / "rapha-airgap"


@pytest.fixture
def settings(tmp_path):
    init_edge(tmp_path / "edge", records=4)
    return load_settings(tmp_path / "edge")


def context(settings):
    return GateContext(parse_jobspec(spec_dict()), "r" * 64, None, None, settings)


def test_hidden_paths_cover_config_data_and_host_secrets(settings):
    hidden = hidden_paths(settings)
    assert settings.config_dir in hidden
    assert (settings.config_dir / "data" / "synthetic-cxr").resolve() in hidden
    assert Path("/run").resolve() in hidden and Path("/root") in hidden


def test_exposing_code_that_contains_a_hidden_path_is_refused(tmp_path):
    import edge_kernel
    code = Path(edge_kernel.__file__).resolve().parent
    with pytest.raises(SandboxFault):
        exposed_paths([code.parent, code / "gates"])


def test_missing_binary_denies(settings):
    broken = replace(settings, sandbox=SandboxSettings(airgap_binary="/nonexistent/rapha-airgap"))
    result = AirgapGate().check(context(broken))
    assert result.outcome == "deny" and result.evidence["sealed"] is False
    with pytest.raises(SandboxFault):
        wrap_command(["/bin/true"], settings.state_dir, parse_jobspec(spec_dict()), (), broken)


def test_unsafe_no_airgap_is_labelled_never_passed(settings):
    unsafe = replace(settings, sandbox=SandboxSettings(unsafe_no_airgap=True))
    result = AirgapGate().check(context(unsafe))
    assert result.outcome == "unsafe" and result.evidence == {"sealed": False, "unsafe": "unsafe_no_airgap"}


@pytest.mark.needs_root
@pytest.mark.skipif(not AIRGAP.exists(), reason="rapha-airgap is not built (make airgap)")
def test_self_check_passes_with_a_sealed_record(settings):
    result = AirgapGate().check(context(settings))
    assert result.outcome == "pass", result.reasons
    assert result.evidence["sealed"] is True and len(result.evidence["probe_sha256"]) == 64
    probes = result.evidence["probe"]["probes"]
    assert probes and all(p["blocked"] for p in probes.values())
    assert result.evidence["probe"]["interfaces"] == ["lo"]


@pytest.mark.needs_root
@pytest.mark.skipif(not AIRGAP.exists(), reason="rapha-airgap is not built (make airgap)")
def test_job_command_runs_as_nobody_in_the_sandbox(settings, tmp_path):
    import subprocess
    import sys
    workdir = settings.jobs_dir / ("a" * 32) / "work"
    workdir.mkdir(parents=True)
    keys = repr(str(settings.keys_dir))
    probe = ("import os, pathlib; print(os.getuid()); "
             f"print(pathlib.Path({keys}).exists() and any(pathlib.Path({keys}).iterdir()))")
    cmd = wrap_command([sys.executable, "-c", probe], workdir, parse_jobspec(spec_dict()), (), settings)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["65534", "False"]
    assert os.stat(workdir).st_uid == 65534


def test_every_file_based_dataset_and_opt_out_list_is_hidden(settings, tmp_path):
    from edge_kernel.data.registry import DatasetRegistry, parse_dataset
    registry = DatasetRegistry(settings.config_dir)
    table = tmp_path / "ehr.csv"
    table.write_text("patient,age\n")
    opt_out = tmp_path / "opt-out.txt"
    opt_out.write_text("")
    base = registry.get("synthetic-cxr").to_dict()
    registry.add(parse_dataset({**base, "name": "ehr", "source": "csv", "location": str(table),
                                "opt_out": str(opt_out)}))
    hidden = hidden_paths(settings)
    assert table.resolve() in hidden and opt_out.resolve() in hidden
