"""Shared fixtures. Tests import torch before anything that may load regopy (see docs/internals.md)."""

from __future__ import annotations

import os
import shutil

import pytest

try:  # noqa: SIM105 - order of native library loading matters, see docs/internals.md
    import torch  # noqa: F401
except ImportError:  # pragma: no cover - torch is a test dependency
    pass


# Jupyter server fixtures (jp_fetch, jp_serve, jp_server_config) for tests/extension; the
# synthetic DICOM folder and edge settings fixtures the data and edge tests share.
pytest_plugins = ["pytest_jupyter.jupyter_server", "tests.edge.conftest_data"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_root = pytest.mark.skip(reason="needs root (namespaces, seccomp, nftables)")
    skip_orthanc = pytest.mark.skip(reason="needs the Debian packages orthanc and orthanc-dicomweb")
    skip_browser = pytest.mark.skip(reason="needs the Debian package chromium")
    for item in items:
        if "needs_browser" in item.keywords and not (shutil.which("chromium") or shutil.which("chromium-browser")):
            item.add_marker(skip_browser)
        if "needs_root" in item.keywords and os.geteuid() != 0:
            item.add_marker(skip_root)
        if "needs_orthanc" in item.keywords and not shutil.which("Orthanc"):
            item.add_marker(skip_orthanc)
        if "needs_gpu" in item.keywords and not _cuda_available():
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


@pytest.fixture
def demo_edge(tmp_path):
    """A running demo edge with one registered researcher; yields (edge, researcher key)."""
    from tests.harness import init_edge, start_edge

    key = init_edge(tmp_path / "edge")
    edge = start_edge(tmp_path / "edge")
    try:
        yield edge, key
    finally:
        edge.stop()
