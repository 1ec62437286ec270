"""Messages a new researcher meets when something is not set up yet: each says what is
wrong and what to do, in words about their situation (not someone else's)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from edge_kernel.attestation.backends import backend_in_force
from edge_kernel.catalog import attestation_offer, signed_catalog
from edge_kernel.settings import Settings
from jupyter_rapha.cli import main
from jupyter_rapha.client import error_from_response
from jupyter_rapha.dispatch import attestation_line
from jupyter_rapha.routing.catalogs import CatalogRefused, verify_catalog
from jupyter_rapha.routing.proxy import EdgeProxy, Site
from jupyter_rapha.routing.submission import Submission
from jupyter_rapha.keystore import create_key
from jupyter_rapha.protocol.errors import UnknownKey
from jupyter_rapha.protocol.keys import PrivateKey
from tests.researcher.fake_edge import FakeEdge


@pytest.fixture(scope="module")
def edge():
    with FakeEdge([PrivateKey.generate().public]) as running:  # a key that is not ours
        yield running


def test_errors_from_the_jupyter_server_name_it_once(edge):
    error = error_from_response(500, b'{"error": {"message": "boom"}}', "the Jupyter server")
    assert error.message == "the Jupyter server failed: boom"
    assert error_from_response(502, b"", "the Jupyter server").message == "the Jupyter server answered HTTP 502"
    assert error_from_response(500, b"", f"edge {edge.url}").message == f"edge {edge.url} answered HTTP 500"


def test_rapha_run_with_an_unregistered_key_says_to_send_it(edge, tmp_path, capsys):
    key_path = tmp_path / "me.pem"
    key = create_key(key_path)
    (tmp_path / "cell.py").write_text("rapha.save({})\n")
    code = main(["run", str(tmp_path / "cell.py"), "--edge", edge.url, "--dataset", "synthetic-cxr", "--budget", "8",
                 "--key", str(key_path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1
    assert f"does not know your key {key.key_id}" in err and "rapha keygen --show" in err, err
    assert "'synthetic-cxr'" in err and "not trusted" not in err


def test_a_named_site_that_does_not_know_the_key(edge):
    info_key = edge.key.public
    proxy = EdgeProxy([Site("north", edge.url, info_key)], PrivateKey.generate())
    with pytest.raises(UnknownKey) as caught:
        proxy.route(Submission(dataset="synthetic-cxr", code="x = 1", budget=4, site="north"))
    assert caught.value.message.startswith("edge north does not know your key")
    assert "rapha keygen --show" in caught.value.diagnostics()


def test_no_usable_edge_names_the_dataset_and_each_edge_asked(tmp_path):
    mine = PrivateKey.generate()
    with FakeEdge([mine.public]) as good, FakeEdge([mine.public]) as other:
        proxy = EdgeProxy([Site("north", good.url, good.key.public),
                           Site("south", other.url, PrivateKey.generate().public)], mine)  # south: wrong pin
        with pytest.raises(CatalogRefused) as caught:
            proxy.route(Submission(dataset="lure", code="x = 1", budget=4))
    text = caught.value.diagnostics()
    assert "dataset 'lure'" in text and "asked north, south" in text
    assert "north: its catalog has no 'lure'" in text
    assert "south: edge south is not trusted right now: the catalog of edge south is not signed" in text


@pytest.mark.parametrize("choice, demo, expected", [("auto", True, "unsafe_software"), ("auto", False, ""),
                                                    ("tdx", True, ""), ("unsafe_software", False, "")])
def test_the_catalog_names_the_backend_in_force(tmp_path, choice, demo, expected):
    assert backend_in_force(choice, demo=demo, tsm_root=tmp_path / "no-tsm", gramine_root=tmp_path / "no-sgx") \
        == expected


def test_no_tee_and_no_demo_is_said_as_such(tmp_path):
    settings = Settings(config_dir=tmp_path, edge_id="north", demo=False)
    assert settings.attestation.backend == "auto"
    key = PrivateKey.generate()
    edge = SimpleNamespace(settings=settings, key=key, datasets=SimpleNamespace(all=dict))
    catalog = verify_catalog(signed_catalog(edge), key.public, "north")
    if catalog["attestation"]["backend"] in ("tdx", "sgx"):
        pytest.skip("this machine has a TEE")
    assert catalog["attestation"] == attestation_offer("")
    line = attestation_line({"edge_id": "north", "attestation": catalog["attestation"]})
    assert line == "edge north cannot attest: no TEE on this edge and not in demo mode: every job is refused at " \
                   "attestation"
    assert "auto" not in line
