"""The site's environment against a real demo edge: its signed catalog lists what the job
interpreter has, `rapha edges` shows it, `rapha run` stops a cell importing a package the
edge lacks before anything is sent, and MONAI (installed at the edge by default) trains a
DenseNet121 inside the sandbox."""

from __future__ import annotations

import base64
import importlib.metadata
import json
import platform

import pytest
import torch  # noqa: F401  (before anything that may load regopy)
from safetensors.torch import load_file

from jupyter_rapha.cli import main
from jupyter_rapha.client import EdgeClient
from jupyter_rapha.keystore import create_key, load_key
from jupyter_rapha.protocol.environment import parse_environment
from jupyter_rapha.protocol.keys import load_public_key
from jupyter_rapha.routing.catalogs import verify_catalog
from tests.harness import init_edge, start_edge

pytestmark = pytest.mark.slow

# torchvision is on the scanner's allowlist, so the scan and the policy let it pass: only
# the environment listing knows this edge does not have it.
MISSING_CELL = """
import torch
import torchvision
model = torch.nn.Linear(32 * 32, 2)
rapha.save(model)
"""

# MONAI's DenseNet121 as published (7M parameters, 28 MB of weights), one step of
# training on the synthetic 32x32 images. The job's cost is MONAI's import, the first
# step and rapha.save's export, which depend on the depth, not the width: a 16/8-wide
# DenseNet121 took nearly as long on the shared machine (115 s against 148 s under load).
MONAI_CELL = """
import torch
from monai.networks.nets import DenseNet121

torch.manual_seed(0)
model = DenseNet121(spatial_dims=2, in_channels=1, out_channels=2)
optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
batch = next(iter(rapha.loader(batch_size=8, shuffle=True)))
loss = torch.nn.functional.cross_entropy(model(batch["image"]), batch["finding"])
optimiser.zero_grad()
loss.backward()
optimiser.step()
rapha.log(loss=loss.item())
rapha.save(model)
"""


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    root = tmp_path_factory.mktemp("site-environment")
    create_key(root / "me.pem")
    init_edge(root / "edge", researcher=load_key(root / "me.pem"))
    running = start_edge(root / "edge")
    try:
        yield running, root
    finally:
        running.stop()


def run(edge, cell_text: str, tmp_path) -> int:
    running, root = edge
    cell = tmp_path / "cell.py"
    cell.write_text(cell_text)
    return main(["run", str(cell), "--edge", running.url, "--dataset", "synthetic-cxr", "--budget", "16",
                 "--key", str(root / "me.pem"), "--out", str(tmp_path / "out")])


def test_the_signed_catalog_lists_the_job_interpreters_environment(edge):
    running, root = edge
    client = EdgeClient(running.url, load_key(root / "me.pem"))
    catalog = verify_catalog(client.catalog(), load_public_key(client.edge_info()["public_key"]), "demo")
    environment = parse_environment(catalog["environment"])
    assert environment.complete and environment.python == platform.python_version()
    for name in ("torch", "numpy", "monai", "pydicom", "safetensors"):
        assert environment.version(name) == importlib.metadata.version(name), name
    assert environment.has("monai") and environment.has("json") and not environment.has("torchvision")


def test_rapha_edges_shows_the_python_version_the_count_and_the_key_packages(edge, capsys):
    running, root = edge
    assert main(["edges", "--edge", running.url, "--key", str(root / "me.pem"), "--packages"]) == 0
    out = capsys.readouterr().out
    count = len({d.metadata["Name"] for d in importlib.metadata.distributions()})
    assert (f"environment: Python {platform.python_version()}, {count} packages: "
            f"torch {torch.__version__}, numpy {importlib.metadata.version('numpy')}, "
            f"monai {importlib.metadata.version('monai')}, pydicom {importlib.metadata.version('pydicom')}") in out
    assert f"\n    monai {importlib.metadata.version('monai')}\n" in out
    assert "attests with unsafe_software (UNSAFE)" in out and "datasets: synthetic-cxr" in out
    assert main(["edges", "--edge", running.url, "--key", str(root / "me.pem"), "--json"]) == 0
    [entry] = json.loads(capsys.readouterr().out)
    assert entry["catalog"] == "verified" and entry["environment"]["packages"]["monai"]


def test_a_cell_importing_what_the_edge_lacks_is_stopped_before_it_is_sent(edge, tmp_path, capsys):
    running, root = edge
    assert run(edge, MISSING_CELL, tmp_path) == 1
    err = capsys.readouterr().err
    assert "preflight stopped the cell" in err
    assert "line 3: edge demo-edge has no module torchvision: remove the import or ask the hospital" in err
    assert EdgeClient(running.url, load_key(root / "me.pem")).jobs() == []


def test_a_monai_densenet121_trains_one_step_inside_the_sandbox(edge, tmp_path, capsys):
    code = run(edge, MONAI_CELL, tmp_path)
    err = capsys.readouterr().err
    assert code in (0, 3), err  # 3: released, its anchor still pending
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert len(metrics["loss"]) == 1 and 0 < metrics["loss"][0] < 10
    weights = load_file(tmp_path / "out" / "weights.safetensors")
    assert "features.conv0.weight" in weights and "class_layers.out.weight" in weights
    assert tuple(weights["class_layers.out.weight"].shape) == (2, 1024)  # the published head
    receipt = json.loads((tmp_path / "out" / "receipt.json").read_text())
    predicate = json.loads(base64.b64decode(receipt["envelope"]["payload"]))["predicate"]
    assert "unsafe_no_airgap" not in predicate["unsafe"]  # it ran sealed: no network, seccomp, read-only
