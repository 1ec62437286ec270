"""DESIGN.md section 3's import rules, enforced: the trust boundary is the folder tree.

- jupyter_rapha.protocol imports neither side (and no Jupyter, torch or I/O libraries);
- edge_kernel imports only jupyter_rapha.protocol from jupyter_rapha;
- the rest of jupyter_rapha never imports edge_kernel (it talks to edges over HTTP)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL_FORBIDDEN = ("edge_kernel", "jupyter_rapha.extension", "jupyter_rapha.magic", "jupyter_rapha.client",
                      "torch", "IPython", "jupyter_server", "tornado", "requests", "web3", "sqlite3")


def imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text("utf-8"))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node.lineno, name))
    return found


def modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("path", modules("jupyter_rapha/protocol"), ids=lambda p: str(p.relative_to(ROOT)))
def test_protocol_imports_neither_side(path):
    bad = [(line, name) for line, name in imports(path)
           if any(name == f or name.startswith(f + ".") for f in PROTOCOL_FORBIDDEN)
           or (name.startswith("jupyter_rapha") and not name.startswith("jupyter_rapha.protocol"))]
    assert bad == []


@pytest.mark.parametrize("path", modules("edge_kernel"), ids=lambda p: str(p.relative_to(ROOT)))
def test_edge_imports_only_the_protocol_from_the_researcher_side(path):
    bad = [(line, name) for line, name in imports(path)
           if name.startswith("jupyter_rapha") and not name.startswith("jupyter_rapha.protocol")
           and name != "jupyter_rapha"]  # the package itself, for __version__
    assert bad == []


@pytest.mark.parametrize("path", [p for p in modules("jupyter_rapha") if "protocol" not in p.parts],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_researcher_side_never_imports_the_edge(path):
    assert [(line, name) for line, name in imports(path) if name.startswith("edge_kernel")] == []
