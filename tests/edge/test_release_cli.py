"""``rapha-edge release``: output checkers release held jobs, against a real edge: a
``review`` dataset holds a job until one checker approves, ``two_person`` needs two
distinct checkers, the job's own researcher cannot approve, a reject's reason reaches the
researcher, a restarted edge keeps the job held and the decisions made, and every refused
attempt changes nothing.

The fast tests at the top need no running edge: registering checkers, and mistakes the
command refuses before it asks the edge."""

from __future__ import annotations

import base64
import json
import sqlite3
import time
from pathlib import Path

import pytest

from edge_kernel.cli import main as edge_cli
from edge_kernel.settings import load_settings
from jupyter_rapha.client import EdgeClient, make_jobspec
from jupyter_rapha.protocol.errors import NotFound
from jupyter_rapha.protocol.keys import PrivateKey
from tests.harness import init_edge, start_edge


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


def test_status_says_when_a_datasets_release_mode_lacks_checkers(tmp_path, capsys):
    root = tmp_path / "demo"
    assert edge_cli(["init", str(root), "--demo"]) == 0
    data_path = root / "policies" / "data.json"
    data = json.loads(data_path.read_text())
    data["hospital"]["release"]["datasets"]["synthetic-cxr"] = {"mode": "two_person"}
    data_path.write_text(json.dumps(data))
    capsys.readouterr()
    assert edge_cli(["status", "--no-probe", "--config", str(root)]) == 0
    out = capsys.readouterr().out
    assert "release: modes synthetic-cxr two_person" in out and "output checkers: none" in out
    assert "synthetic-cxr: release mode two_person needs 2 output checker(s), 0 registered" in out
    for name in ("ada", "ben"):
        assert edge_cli(["researchers", "add", name, PrivateKey.generate().public.to_text(), "--role",
                         "output-checker", "--config", str(root)]) == 0
    capsys.readouterr()
    assert edge_cli(["status", "--no-probe", "--json", "--config", str(root)]) == 0
    release = json.loads(capsys.readouterr().out)["release"]
    assert release == {"checkers": ["ada", "ben"], "modes": {"synthetic-cxr": "two_person"}, "problems": []}


@pytest.mark.parametrize("depth", [1, 12])
def test_the_admin_socket_binds_and_answers_also_under_a_long_config_path(tmp_path, depth):
    # sockaddr_un holds 108 bytes: a deep config directory is reached through /proc/self/fd
    import os
    import socket
    import stat
    import threading

    from edge_kernel.admin import _reachable, admin_socket_path, bind_admin_socket

    state = tmp_path.joinpath(*(["a-rather-long-directory-name"] * depth))
    state.mkdir(parents=True)
    path = admin_socket_path(state)
    assert (len(os.fsencode(path)) > 108) == (depth > 1)
    server = bind_admin_socket(path)
    server.setblocking(True)
    try:
        assert stat.S_ISSOCK(path.stat().st_mode) and stat.S_IMODE(path.stat().st_mode) == 0o600

        def answer() -> None:
            conn, _ = server.accept()
            with conn:
                conn.sendall(conn.recv(16).upper())

        thread = threading.Thread(target=answer)
        thread.start()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client, _reachable(path) as name:
            client.connect(name)
            client.sendall(b"ping")
            assert client.recv(16) == b"PING"
        thread.join(10)
    finally:
        server.close()


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


# -- against a real edge -------------------------------------------------------------------

# An ordinary cell: it reads a few records and trains a small model.
CELL = """
import torch
model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 32, 2))
optimiser = torch.optim.SGD(model.parameters(), lr=0.01)
for batch in rapha.loader(batch_size=4, shuffle=True, seed=1):
    loss = torch.nn.functional.cross_entropy(model(batch["image"]), batch["finding"])
    optimiser.zero_grad(); loss.backward(); optimiser.step()
    rapha.log(loss=float(loss))
rapha.save(model)
"""


class Site:
    """A demo edge with a researcher (alice, who also holds the checker role), two output
    checkers (ada, ben) and a registered non-checker (bob), restartable."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.keys = {"alice": init_edge(root, records=40)}
        self.key_files = {}
        for name, roles in (("alice", None), ("ada", ["output-checker"]), ("ben", ["output-checker"]),
                            ("bob", ["researcher"])):
            key = self.keys.setdefault(name, PrivateKey.generate())
            self.key_files[name] = root.parent / f"{name}.pem"
            self.key_files[name].write_bytes(key.to_pem())
            self.key_files[name].chmod(0o644 if name == "ada" else 0o600)  # ada's is readable by all: warned
            if roles:
                assert edge_cli(["researchers", "add", name, key.public.to_text(), *[f"--role={r}" for r in roles],
                                 "--config", str(root)]) == 0
        assert edge_cli(["researchers", "add", "alice", self.keys["alice"].public.to_text(), "--role", "researcher",
                         "--role", "output-checker", "--replace", "--config", str(root)]) == 0
        self.edge = start_edge(root)

    def restart(self) -> None:
        self.edge.stop()
        self.edge = start_edge(self.root)

    def client(self) -> EdgeClient:
        return EdgeClient(self.edge.url, self.keys["alice"])

    def release_mode(self, mode: str) -> None:
        path = self.root / "policies" / "data.json"
        data = json.loads(path.read_text())
        data["hospital"]["release"]["datasets"]["synthetic-cxr"] = {"mode": mode}
        path.write_text(json.dumps(data))

    def held_job(self, mode: str) -> str:
        """Submit the cell on a dataset of release ``mode``; wait until it is held for review."""
        self.release_mode(mode)
        client = self.client()
        spec = make_jobspec(CELL, "synthetic-cxr", ["image", "finding"], 8, 120, {"epochs": 1},
                            self.keys["alice"].key_id)
        job_id = client.submit(spec)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            status = client.status(job_id)
            if status["state"] == "held" and status["progress"].get("review_needed"):
                return job_id
            assert status["state"] in ("submitted", "running", "held"), (status["reasons"], status["gates"])
            time.sleep(0.5)
        raise AssertionError(f"job {job_id} was not held for review: {client.status(job_id)}")

    def release(self, capsys, *args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = edge_cli(["release", *args, "--config", str(self.root)])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    def decide(self, capsys, decision: str, job_id: str, name: str, reason: str = "aggregate model, checks clean",
               key: str | None = None) -> tuple[int, str, str]:
        return self.release(capsys, decision, job_id, "--as", name, "--key", str(self.key_files[key or name]),
                            "--reason", reason)

    def audit_events(self, job_id: str) -> list[str]:
        db = sqlite3.connect(f"file:{load_settings(self.root).db_path}?mode=ro", uri=True)
        try:
            return [row[0] for row in db.execute("SELECT event FROM audit WHERE job_id=? ORDER BY seq", (job_id,))]
        finally:
            db.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    running = Site(tmp_path_factory.mktemp("release") / "edge")
    try:
        yield running
    finally:
        running.edge.stop()


def reviews_in_receipt(site: Site, job_id: str) -> list[dict]:
    envelope = site.client().receipt(job_id)["envelope"]
    return json.loads(base64.b64decode(envelope["payload"]))["predicate"]["disclosure"]["reviews"]


@pytest.mark.slow
def test_a_review_dataset_holds_the_job_until_one_checker_approves(site, capsys):
    job_id = site.held_job("review")
    code, out, _ = site.release(capsys, "list")
    assert code == 0 and job_id in out and "held for review (0 of 1 approvals)" in out
    listed = json.loads(site.release(capsys, "list", "--json")[1])
    assert [(j["job_id"], j["researcher"], j["approvals_needed"]) for j in listed] == [(job_id, "alice", 1)]
    code, out, _ = site.release(capsys, "show", job_id[:10])
    assert code == 0 and "weights: 2 tensors, 2050 parameters" in out
    assert "record_copies: " in out and "records_matched=0" in out and "membership: " in out  # the real checks
    assert "1.weight" not in out  # tensor names are the job's choice: never shown
    with pytest.raises(NotFound):
        site.client().weights(job_id)  # nothing leaves while held

    refused = {"alice": "the job's own researcher cannot decide", "bob": "without the output-checker role",
               "carol": "no one named 'carol'"}
    for name, words in refused.items():
        code, _, err = site.decide(capsys, "approve", job_id, name, key="alice" if name == "carol" else None)
        assert code == 1 and words in err, err
    code, _, err = site.decide(capsys, "approve", job_id, "ada", key="ben")
    assert code == 1 and "not signed by the key registered for ada" in err
    assert site.client().status(job_id)["state"] == "held"
    assert "release.review" not in site.audit_events(job_id)

    code, _, err = site.release(capsys, "approve", job_id, "--as", "ada", "--key", str(site.key_files["ada"]),
                                "--reason", "fine", "--outputs", "0" * 12)
    assert code == 1 and "not the 000000000000 given with --outputs; nothing was signed" in err
    shown = json.loads(site.release(capsys, "show", job_id, "--json")[1])["subject"]["outputs_sha256"]
    code, out, err = site.release(capsys, "approve", job_id[:12], "--as", "ada", "--key",
                                  str(site.key_files["ada"]), "--reason", "aggregate model", "--outputs", shown[:16])
    assert code == 0 and "released to the researcher" in out
    assert "can be read by other users (mode 644)" in err
    assert site.client().status(job_id)["state"] == "completed"
    (review,) = reviews_in_receipt(site, job_id)
    assert review["checker_key_id"] == site.keys["ada"].key_id and review["decision"] == "approve"
    assert review["reason"] == "aggregate model" and len(review["reason_sha256"]) == 64
    assert abs(review["signed_at"] - time.time()) < 600 and len(review["statement_sha256"]) == 64
    events = site.audit_events(job_id)
    assert events.count("release.review_refused") == 4 and events.count("release.review") == 1
    assert events.index("release.review") < events.index("receipt.sign")

    code, _, err = site.decide(capsys, "approve", job_id, "ben")  # nothing left to decide
    assert code == 1 and "completed, not held" in err
    assert site.client().status(job_id)["state"] == "completed"


@pytest.mark.slow
def test_two_person_needs_two_distinct_checkers_and_a_restart_keeps_both(site, capsys):
    job_id = site.held_job("two_person")
    code, out, _ = site.decide(capsys, "approve", job_id, "ada")
    assert code == 0 and "1 of 2 approvals; it stays held until 1 more" in out
    code, _, err = site.decide(capsys, "approve", job_id, "ada", reason="really fine")
    assert code == 1 and "one checker counts once" in err

    site.restart()
    assert site.client().status(job_id)["state"] == "held"
    code, out, _ = site.release(capsys, "show", job_id)
    assert "approve by ada" in out and "1 of 2 approvals" in out

    code, out, err = site.decide(capsys, "approve", job_id, "ben")
    assert code == 0 and "released" in out and "warning" not in err
    assert {r["checker_key_id"] for r in reviews_in_receipt(site, job_id)} == {site.keys["ada"].key_id,
                                                                               site.keys["ben"].key_id}
    assert edge_cli(["audit", "verify", "--config", str(site.root)]) == 0


@pytest.mark.slow
def test_a_reject_refuses_and_its_reason_reaches_the_researcher(site, capsys):
    job_id = site.held_job("review")
    code, out, _ = site.decide(capsys, "reject", job_id, "ben", reason="the weights hold rows of pixel data")
    assert code == 0 and "the release is refused" in out
    status = site.client().status(job_id)
    assert status["state"] == "refused"
    assert any("the weights hold rows of pixel data" in reason for reason in status["reasons"])
    with pytest.raises(NotFound):
        site.client().weights(job_id)
    code, _, err = site.decide(capsys, "approve", job_id, "ada")
    assert code == 1 and "refused, not held" in err
    code, out, _ = site.release(capsys, "show", job_id)
    assert code == 0 and "(refused, not held)" in out and "reject by ben" in out


@pytest.mark.slow
def test_the_admin_socket_answers_bad_requests_with_what_to_fix(site):
    from edge_kernel.admin import AdminClient
    from jupyter_rapha.protocol.errors import RaphaError

    client = AdminClient(load_settings(site.root).state_dir, timeout=30)
    route = f"/admin/v1/release/{'ab' * 16}/decision"
    for body, words in ((b"not json", "decision request is not JSON"), (b"[" * 5_000 + b"]" * 5_000, "nested deeper"),
                        (json.dumps({"checker": "ada"}).encode(), '{"checker": NAME, "statement"'),
                        (json.dumps({"checker": "ada", "statement": []}).encode(), "no job"),
                        (b"x" * 100_000, "larger than")):
        with pytest.raises(RaphaError, match=words):
            client._call("POST", route, body)
    for path, words in (("/admin/v1/nothing", "no admin route"), ("/admin/v1/release/ZZZZZZZZ", "not a job id"),
                        ("/v1/jobs", "no admin route")):  # researcher routes are not on the admin socket
        with pytest.raises(RaphaError, match=words):
            client.get(path)
    assert client.get("/admin/v1/release")["jobs"] == []


@pytest.mark.slow
def test_a_checker_only_key_signs_no_researcher_request(site):
    from jupyter_rapha.protocol.errors import AuthError

    with pytest.raises(AuthError, match="registered as an output checker only"):
        EdgeClient(site.edge.url, site.keys["ada"]).jobs()
    assert EdgeClient(site.edge.url, site.keys["alice"]).jobs() is not None  # researcher and checker: both
