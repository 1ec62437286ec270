"""The hospital administrator's side of ``rapha-edge``: each mistake is refused when it is
made, with a message that says what to fix, and a refused command writes nothing."""

from __future__ import annotations

import json
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from edge_kernel.cli import main as edge_cli
from edge_kernel.data.synth import make_synthetic_dataset
from jupyter_rapha.protocol.keys import PrivateKey
from jupyter_rapha.protocol.request import sign_request
from tests.data.test_tabular import CSV, _csv_entry, _fhir_entry, _write_export
from tests.edge.conftest_data import header_values, leaked

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "examples" / "schema-cxr.json"


@pytest.fixture
def edge_dir(tmp_path: Path) -> Path:
    root = tmp_path / "edge"
    assert edge_cli(["init", str(root)]) == 0
    make_synthetic_dataset(root / "data" / "cxr", 30, seed=3)
    return root


def add(root: Path, *extra: str, name: str = "cxr", path: str = "data/cxr", schema: Path = SCHEMA) -> int:
    return edge_cli(["datasets", "add", name, "--path", path, "--schema", str(schema), *extra, "--config", str(root)])


def registry_bytes(root: Path) -> bytes | None:
    path = root / "datasets.json"
    return path.read_bytes() if path.exists() else None


# -- datasets add -----------------------------------------------------------------------

@pytest.mark.parametrize(("args", "words"), [
    (("--price", "abc"), "price per record must be a decimal of 0 or more"),
    (("--price", "-1"), "price per record must be a decimal"),
    (("--price", "NaN"), "price per record must be a decimal"),
    (("--opt-out", "optout.txt"), "--opt-out optout.txt: no such file"),
    (("--path", "data/cx"), "--path data/cx: no such folder"),
    (("--source", "csv"), "no such file"),
    (("--source", "dicomweb"), "needs the PACS's http(s) base URL"),
])
def test_a_mistaken_add_is_refused_and_writes_nothing(edge_dir, capsys, args, words):
    before = registry_bytes(edge_dir)
    options = list(args)
    path = "data/cxr"
    if "--path" in options:
        path = options.pop(options.index("--path") + 1)
        options.remove("--path")
    assert add(edge_dir, *options, path=path) == 1
    assert words in capsys.readouterr().err
    assert registry_bytes(edge_dir) == before


def test_a_price_with_more_decimals_than_the_settlement_token_is_refused_at_add(edge_dir, capsys):
    config = edge_dir / "edge.toml"
    config.write_text(config.read_text().replace("# token_decimals = 18", "token_decimals = 2"))
    assert add(edge_dir, "--price", "0.005") == 1
    err = capsys.readouterr().err
    assert "dataset cxr: --price 0.005 has 3 decimal places; the settlement token has 2" in err
    assert "use at most 2 decimal places" in err
    assert registry_bytes(edge_dir) is None
    assert add(edge_dir, "--price", "0.50") == 0  # trailing zeros are not places the token lacks


def test_a_relative_path_from_the_wrong_directory_says_how_to_fix_it(edge_dir, tmp_path, capsys, monkeypatch):
    make_synthetic_dataset(tmp_path / "elsewhere", 4, seed=1)
    monkeypatch.chdir(tmp_path)
    assert add(edge_dir, path="elsewhere") == 1
    err = capsys.readouterr().err
    assert "read from the config directory" in err and str(tmp_path / "elsewhere") in err
    assert add(edge_dir, path=str(tmp_path / "elsewhere")) == 0


def test_an_empty_folder_is_refused(edge_dir, capsys):
    (edge_dir / "empty").mkdir()
    assert add(edge_dir, path="empty") == 1
    assert "the source holds no records" in capsys.readouterr().err
    assert registry_bytes(edge_dir) is None


def test_a_schema_that_fits_no_record_is_refused_with_the_reasons(edge_dir, tmp_path, capsys):
    schema = json.loads(SCHEMA.read_text())
    schema["fields"]["image"]["shape"] = [1, 64, 64]
    (tmp_path / "wrong.json").write_text(json.dumps(schema))
    assert add(edge_dir, schema=tmp_path / "wrong.json") == 1
    err = capsys.readouterr().err
    assert "none of the records read is usable" in err and "30 image size differs from the schema" in err
    assert leaked(err.encode(), header_values(edge_dir / "data" / "cxr"), text=True) == []
    assert registry_bytes(edge_dir) is None


@pytest.mark.parametrize(("text", "words"), [
    ("{not json", "is not valid JSON"),
    ("[]", "must hold a JSON object"),
    ('{"field": {}}', "unknown key 'field'; did you mean 'fields'?"),
    ('{"fields": {"image": {"dtype": "float16", "shape": [1]}}}', "needs a dtype"),
])
def test_a_broken_schema_file_is_refused(edge_dir, tmp_path, capsys, text, words):
    (tmp_path / "schema.json").write_text(text)
    assert add(edge_dir, schema=tmp_path / "schema.json") == 1
    assert words in capsys.readouterr().err
    assert add(edge_dir, schema=tmp_path / "missing.json") == 1
    assert "no such file" in capsys.readouterr().err
    assert registry_bytes(edge_dir) is None


def test_an_add_reports_what_the_sample_found_without_identifiers(edge_dir, capsys):
    import pydicom

    files = sorted((edge_dir / "data" / "cxr").glob("*.dcm"))
    opted_out = str(pydicom.dcmread(files[0]).PatientID)
    (edge_dir / "optout.txt").write_text(f"# national opt-out export\n{opted_out}\n")
    (edge_dir / "data" / "cxr" / "README.txt").write_text("not an image")
    assert add(edge_dir, "--opt-out", "optout.txt", "--price", "0.05") == 0
    out = capsys.readouterr().out
    assert "opt-out list optout.txt: 1 patient id(s)" in out
    opted = sum(1 for f in files if str(pydicom.dcmread(f, stop_before_pixels=True).PatientID) == opted_out)
    patients = len({str(pydicom.dcmread(f, stop_before_pixels=True).PatientID) for f in files}) - 1
    assert f"all 31 record(s) of the source: {30 - opted} usable from {patients} patient(s), {opted} opted out" in out
    assert "skipped: 1 not a DICOM file" in out
    assert leaked(out.encode(), header_values(edge_dir / "data" / "cxr"), text=True) == []
    assert json.loads((edge_dir / "datasets.json").read_text())["datasets"][0]["price_per_record"] == "0.05"


def test_the_sample_reads_only_as_many_records_as_asked(edge_dir, capsys):
    assert add(edge_dir, "--sample", "10") == 0
    assert "read a sample of 10 record(s)" in capsys.readouterr().out


def test_a_second_dataset_of_the_same_name_needs_replace(edge_dir, capsys):
    assert add(edge_dir) == 0
    before = registry_bytes(edge_dir)
    assert add(edge_dir, "--price", "0.10") == 1
    assert "already registered" in capsys.readouterr().err and registry_bytes(edge_dir) == before
    assert add(edge_dir, "--price", "0.10", "--replace") == 0
    assert "dataset cxr replaced" in capsys.readouterr().out
    assert [d["price_per_record"] for d in json.loads(registry_bytes(edge_dir))["datasets"]] == ["0.10"]


def test_datasets_remove(edge_dir, capsys):
    assert add(edge_dir) == 0 and add(edge_dir, name="cxr2") == 0
    assert edge_cli(["datasets", "remove", "nope", "--config", str(edge_dir)]) == 1
    assert "registered: cxr, cxr2" in capsys.readouterr().err
    assert edge_cli(["datasets", "remove", "cxr", "--config", str(edge_dir)]) == 0
    assert "policies/data.json" in capsys.readouterr().out
    assert [d["name"] for d in json.loads(registry_bytes(edge_dir))["datasets"]] == ["cxr2"]


def test_a_csv_source_is_sampled(edge_dir, capsys):
    (edge_dir / "labs.csv").write_text(CSV)
    schema = _schema_of(_csv_entry(edge_dir / "labs.csv"))
    (edge_dir / "labs.json").write_text(json.dumps(schema))
    assert add(edge_dir, "--source", "csv", name="labs", path="labs.csv", schema=edge_dir / "labs.json") == 0
    out = capsys.readouterr().out
    assert "3 usable from 3 patient(s)" in out and "1 missing patient id" in out and "1 value not a number" in out
    assert "DOE" not in out and "MRN" not in out
    (edge_dir / "bad.csv").write_text("mrn,age\nMRN1,71\n")
    assert add(edge_dir, "--source", "csv", name="bad", path="bad.csv", schema=edge_dir / "labs.json") == 1
    assert "lacks a declared column" in capsys.readouterr().err


def test_a_fhir_export_is_sampled(edge_dir, capsys):
    _write_export(edge_dir / "export")
    (edge_dir / "ehr.json").write_text(json.dumps(_schema_of(_fhir_entry(edge_dir / "export"))))
    assert add(edge_dir, "--source", "fhir-ndjson", name="ehr", path="export", schema=edge_dir / "ehr.json") == 0
    out = capsys.readouterr().out
    assert "11 usable from 11 patient(s)" in out and "1 value missing" in out and "SMITHFIELD" not in out
    (edge_dir / "nothing").mkdir()
    assert add(edge_dir, "--source", "fhir-ndjson", name="none", path="nothing", schema=edge_dir / "ehr.json") == 1
    assert "the source holds no records" in capsys.readouterr().err


def test_an_unreachable_pacs_is_refused(edge_dir, capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    assert add(edge_dir, "--source", "dicomweb", "--study", "1.2.3", name="pacs",
               path=f"http://127.0.0.1:{port}/dicom-web") == 1
    assert "the PACS could not be reached" in capsys.readouterr().err
    assert registry_bytes(edge_dir) is None


@pytest.mark.needs_orthanc
def test_a_dicomweb_source_is_sampled(edge_dir, tmp_path, capsys):
    import pydicom

    from tests.data.orthanc import start_orthanc

    orthanc = start_orthanc(tmp_path / "orthanc")
    try:
        files = sorted((edge_dir / "data" / "cxr").glob("*.dcm"))[:6]
        for path in files:
            orthanc.upload(path)
        studies = sorted({str(pydicom.dcmread(f, stop_before_pixels=True).StudyInstanceUID) for f in files})
        scope = [arg for study in studies for arg in ("--study", study)]
        assert add(edge_dir, "--source", "dicomweb", *scope, name="pacs", path=orthanc.dicomweb) == 0
        out = capsys.readouterr().out
        assert "all 6 record(s) of the source: 6 usable" in out
        assert leaked(out.encode(), header_values(edge_dir / "data" / "cxr") - set(studies), text=True) == []
        assert add(edge_dir, "--source", "dicomweb", "--study", "1.2.3.4", name="nothing", path=orthanc.dicomweb) == 1
        assert "the source holds no records" in capsys.readouterr().err
    finally:
        orthanc.stop()


def _schema_of(entry) -> dict:
    data = entry.to_dict()
    return {key: data[key] for key in ("fields", "labels", "features", "options")}


# -- researchers --------------------------------------------------------------------------

def researchers(root: Path) -> list[str]:
    return [r["name"] for r in json.loads((root / "researchers.json").read_text())["researchers"]]


def test_a_key_or_name_registered_again_is_refused_unless_replaced(edge_dir, capsys):
    alice, bob = PrivateKey.generate().public.to_text(), PrivateKey.generate().public.to_text()
    config = ["--config", str(edge_dir)]
    assert edge_cli(["researchers", "add", "alice", alice, *config]) == 0
    assert edge_cli(["researchers", "add", "bob", bob, *config]) == 0
    assert edge_cli(["researchers", "add", "alice-laptop", alice, *config]) == 1
    assert "already registered as 'alice'" in capsys.readouterr().err
    assert edge_cli(["researchers", "add", "bob", PrivateKey.generate().public.to_text(), *config]) == 1
    assert "a researcher named 'bob' is already registered" in capsys.readouterr().err
    assert researchers(edge_dir) == ["alice", "bob"]
    assert edge_cli(["researchers", "add", "alice-laptop", alice, "--replace", *config]) == 0
    assert "replaced alice" in capsys.readouterr().out
    assert researchers(edge_dir) == ["bob", "alice-laptop"]


def test_researchers_remove(edge_dir, capsys):
    config = ["--config", str(edge_dir)]
    assert edge_cli(["researchers", "add", "alice", PrivateKey.generate().public.to_text(), *config]) == 0
    (edge_dir / "researchers.json").chmod(0o640)
    assert edge_cli(["researchers", "remove", "bob", *config]) == 1
    assert "no researcher named 'bob' is registered (registered: alice)" in capsys.readouterr().err
    assert edge_cli(["researchers", "remove", "alice", *config]) == 0
    assert researchers(edge_dir) == []
    assert stat.S_IMODE((edge_dir / "researchers.json").stat().st_mode) == 0o640  # the write kept the mode
    assert not [p.name for p in edge_dir.iterdir() if p.name.endswith(".partial")]


def test_commands_refuse_a_directory_that_is_not_an_edge(tmp_path, capsys):
    key = PrivateKey.generate().public.to_text()
    assert edge_cli(["researchers", "add", "alice", key, "--config", str(tmp_path)]) == 1
    assert "no edge.toml" in capsys.readouterr().err and not (tmp_path / "researchers.json").exists()


# -- edge.toml ---------------------------------------------------------------------------

@pytest.mark.parametrize(("edit", "words"), [
    (("min_confirmations = 1", "min_confirmatons = 12"),
     "unknown key chain.min_confirmatons in edge.toml; did you mean min_confirmations?"),
    (("[attestation]", "[attestaton]"), "unknown table [attestaton] in edge.toml; did you mean [attestation]?"),
    (("min_confirmations = 1", 'min_confirmations = "12"'),
     "chain.min_confirmations in edge.toml must be a whole number, not a string"),
    (("[edge]", "demo = true\n[edge]"),
     "unknown key demo outside any table in edge.toml; did you mean demo under [edge]?"),
    (('rpc_url = ""', 'rpc_ulr = "http://x"'), "unknown key chain.rpc_ulr in edge.toml; did you mean rpc_url?"),
])
def test_a_settings_typo_stops_every_command_that_loads_settings(edge_dir, capsys, edit, words):
    toml = edge_dir / "edge.toml"
    assert edit[0] in toml.read_text()
    toml.write_text(toml.read_text().replace(edit[0], edit[1], 1))
    for command in (["status"], ["jobs", "list"], ["audit", "verify"], ["datasets", "remove", "x"]):
        assert edge_cli([*command, "--config", str(edge_dir)]) == 1, command
        assert words in capsys.readouterr().err, command


@pytest.mark.parametrize("demo", [False, True])
def test_defaults_are_written_once_so_a_new_edge_toml_means_what_empty_tables_mean(tmp_path, demo):
    # The settings' dataclasses hold each default; init's edge.toml and the reader take theirs
    # from there. A default changed in one place only would make these two differ.
    import tomllib

    from edge_kernel.settings import _settings, load_settings

    root = tmp_path / "edge"
    assert edge_cli(["init", str(root), "--port", "8599", *(["--demo"] if demo else [])]) == 0
    written = tomllib.loads((root / "edge.toml").read_text())
    assert written["chain"]["min_confirmations"] == 1 and written["edge"]["currency"] == "GBP"
    bare = {"edge": {"id": written["edge"]["id"], "demo": demo}, "server": {"port": 8599},
            "attestation": {"backend": written["attestation"]["backend"]}}
    assert load_settings(root) == _settings(root.resolve(), bare)


def test_the_old_keep_job_files_key_is_refused_naming_the_new_one(edge_dir, capsys):
    toml = edge_dir / "edge.toml"
    toml.write_text(toml.read_text().replace("[sandbox]\n", "[sandbox]\nkeep_job_files = true\n"))
    assert edge_cli(["status", "--config", str(edge_dir), "--no-probe"]) == 1
    assert "sandbox.keep_job_files in edge.toml is now sandbox.unsafe_keep_job_files" in capsys.readouterr().err


def test_keeping_job_files_is_an_unsafe_setting_in_status_and_the_receipt(edge_dir, capsys):
    from edge_kernel.settings import load_settings

    toml = edge_dir / "edge.toml"
    toml.write_text(toml.read_text().replace("[sandbox]\n", "[sandbox]\nunsafe_keep_job_files = true\n"))
    assert edge_cli(["status", "--json", "--no-probe", "--config", str(edge_dir)]) == 0
    assert json.loads(capsys.readouterr().out)["unsafe"] == ["sandbox.unsafe_keep_job_files = true"]
    # settings.unsafe is the list each receipt's edge.unsafe is written from (and the catalog's)
    assert load_settings(edge_dir).unsafe == ("unsafe_keep_job_files",)


def test_serve_stops_at_a_settings_typo(edge_dir):
    toml = edge_dir / "edge.toml"
    toml.write_text(toml.read_text().replace("min_confirmations = 1", "min_confirmatons = 12"))
    done = _serve(edge_dir)
    assert done.returncode == 1 and "did you mean min_confirmations?" in done.stderr


# -- serve --------------------------------------------------------------------------------

def _serve(root: Path, *extra: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_kernel.cli", "serve", "--config", str(root), *extra],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_serve_refuses_a_port_that_is_not_one(edge_dir, port):
    done = _serve(edge_dir, "--port", port)
    assert done.returncode == 2 and "give 1 to 65535, or 0 for any free port" in done.stderr


def test_an_address_in_use_names_host_and_port(edge_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _serve(edge_dir, "--port", str(port), "--host", "127.0.0.1")
    assert done.returncode == 1
    assert f"127.0.0.1:{port} is already in use" in done.stderr and "--port" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_malformed_researcher_registry_stops_the_start_naming_the_file(edge_dir):
    (edge_dir / "researchers.json").write_text('{"researchers": [{"name": "alice"}]}')
    done = _serve(edge_dir)
    assert done.returncode == 1 and str(edge_dir / "researchers.json") in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_a_registry_broken_while_serving_is_a_generic_500_for_the_researcher(demo_edge):
    edge, key = demo_edge
    path = edge.config / "researchers.json"
    good = path.read_text()
    for broken in ('{"researchers": [{"name": "alice"}]}', "{oops"):
        path.write_text(broken)
        now = int(time.time())
        answer = requests.get(edge.url + "/v1/datasets", timeout=10,
                              headers={"Authorization": sign_request(key, "GET", "/v1/datasets", b"", now)})
        assert answer.status_code == 500, answer.text
        assert str(edge.config) not in answer.text and "researchers.json" not in answer.text
        assert "configuration" in answer.json()["error"]["message"]
    deadline = time.monotonic() + 10
    while str(path) not in edge.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert f"{path} is malformed" in edge.log()  # the cause is in the edge's own log
    path.write_text(good)
    now = int(time.time())
    answer = requests.get(edge.url + "/v1/datasets", timeout=10,
                          headers={"Authorization": sign_request(key, "GET", "/v1/datasets", b"", now)})
    assert answer.status_code == 200


# -- status and init -----------------------------------------------------------------------

def test_init_prints_the_next_steps(tmp_path, capsys):
    assert edge_cli(["init", str(tmp_path / "edge")]) == 0
    out = capsys.readouterr().out
    for step in ("rapha-edge datasets add", "rapha-edge researchers add", "policies/data.json",
                 "rapha-edge serve", "rapha-edge status", "without a restart"):
        assert step in out, step


def test_status_prints_what_a_researcher_needs(edge_dir, capsys):
    from edge_kernel.settings import load_settings

    assert add(edge_dir) == 0
    capsys.readouterr()
    assert edge_cli(["status", "--config", str(edge_dir), "--no-probe"]) == 0
    out = capsys.readouterr().out
    edge_key = PrivateKey.from_pem((edge_dir / "keys" / "edge_ed25519.pem").read_bytes()).public.to_text()
    settings = load_settings(edge_dir)
    assert f"public key: {edge_key}" in out and f"http://127.0.0.1:{settings.port}" in out
    line = next(text.strip() for text in out.splitlines() if text.strip().startswith("c.RaphaExtension.edges"))
    edges = json.loads(line.split("=", 1)[1])
    assert edges == [{"name": "edge", "url": f"http://127.0.0.1:{settings.port}", "public_key": edge_key}]
    assert "cxr (v1, dicom-folder): NOT GRANTED" in out
    assert "synthetic-cxr: granted in policies/data.json but not registered" in out
    assert "only this machine can reach the edge" in out
    assert "unsafe settings in force: none" in out
    assert "backend auto" in out


def test_status_json_lists_grants_unsafe_settings_and_tee(edge_dir, capsys):
    assert add(edge_dir) == 0
    data = json.loads((edge_dir / "policies" / "data.json").read_text())
    data["hospital"]["datasets"]["cxr"] = {"researchers": ["alice"], "roles": [], "purposes": ["research"],
                                           "fields": ["image"]}
    (edge_dir / "policies" / "data.json").write_text(json.dumps(data))
    toml = edge_dir / "edge.toml"
    toml.write_text(toml.read_text().replace("[sandbox]\n", "[sandbox]\nunsafe_no_airgap = true\n"))
    capsys.readouterr()
    assert edge_cli(["status", "--json", "--no-probe", "--config", str(edge_dir)]) == 0
    status = json.loads(capsys.readouterr().out)
    cxr = next(d for d in status["datasets"] if d["name"] == "cxr")
    assert cxr["granted"] and cxr["researchers"] == ["alice"] and cxr["fields"] == ["image"]
    assert status["unsafe"] == ["sandbox.unsafe_no_airgap = true"]
    tee = status["tee"]
    if tee["hardware"]:
        assert tee["backend"] in ("tdx", "sgx")
    else:  # not demo mode, no TEE: jobs would be refused, and status says so
        assert tee["backend"] is None and "every job is refused" in tee["problem"]


@pytest.mark.slow
def test_status_probes_the_running_edge(demo_edge, capsys):
    edge, _ = demo_edge
    port = edge.url.rsplit(":", 1)[1]
    toml = edge.config / "edge.toml"
    toml.write_text(toml.read_text().replace("port = 8470", f"port = {port}"))
    assert edge_cli(["status", "--json", "--config", str(edge.config)]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["running"]["running"] and status["running"]["same_key"]
    assert status["tee"]["backend"] == "unsafe_software" and status["demo"]
    assert 'attestation.backend = "unsafe_software"' in status["unsafe"]
    for key in ("accepting_jobs", "problems"):  # printed when the edge reports them
        info = requests.get(edge.url + "/v1/edge", timeout=10).json()
        assert (key in status["running"]) == (key in info)
    assert edge_cli(["status", "--config", str(edge.config)]) == 0
    assert f"running: yes, at http://127.0.0.1:{port}/v1/edge" in capsys.readouterr().out


@pytest.mark.parametrize(("name", "text"), [
    ("datasets.json", "{oops"), ("datasets.json", '{"datasets": {}}'), ("datasets.json", "[]"),
    ("datasets.json", '{"datasets": [{"name": "cxr", "fields": {"image": {"dtype": "float32"}}, '
                      '"price_per_record": "abc"}]}'),
    ("researchers.json", '{"researchers": [{"name": "alice", "public_key": "ed25519:nope"}]}'),
])
def test_a_broken_registry_is_a_config_fault_that_keeps_its_path_from_the_caller(tmp_path, caplog, name, text):
    from edge_kernel.config_files import ConfigFault
    from edge_kernel.data.registry import DatasetRegistry
    from edge_kernel.researchers import ResearcherRegistry
    from edge_kernel.service import error_status

    (tmp_path / name).write_text(text)
    registry = DatasetRegistry(tmp_path) if name == "datasets.json" else ResearcherRegistry(tmp_path)
    with pytest.raises(ConfigFault) as caught:
        registry.all()
    assert str(tmp_path / name) in caught.value.admin_diagnostics()  # for the administrator
    status, body = error_status(caught.value)
    assert status == 500 and str(tmp_path) not in json.dumps(body) and name not in json.dumps(body)
    assert f"{tmp_path / name} is malformed" in caplog.text  # and for the edge log


def test_a_negative_sample_is_a_usage_error(edge_dir, capsys):
    with pytest.raises(SystemExit) as caught:
        add(edge_dir, "--sample", "-1")
    assert caught.value.code == 2 and "'-1' is not a count" in capsys.readouterr().err
