"""DESIGN.md section 3's import rules, enforced: the trust boundary is the folder tree.

- jupyter_rapha.protocol imports neither side (and no Jupyter, torch or I/O libraries);
- edge_kernel imports only jupyter_rapha.protocol from jupyter_rapha;
- the rest of jupyter_rapha never imports edge_kernel (it talks to edges over HTTP);
- edge_kernel.inside (the code beside the researcher's, in the sandbox) imports only the
  wire, the protocol, the standard library and numpy/torch/safetensors; nothing outside it
  imports it, and only the sandbox launcher names it, as the module the job process runs;
- the wire (edge_kernel.wire) imports only the protocol, stdlib and numpy, and every user
  of the wire takes it from there (the broker included), so both ends read one definition;
- jupyter_rapha.extension is server-process code: only the package's entry point (which
  Jupyter calls to find the extension) imports it; the kernel, ``rapha run`` and the routing
  proxy they share never load it;
- the host side (all of edge_kernel but inside/) never imports torch: regopy loaded before
  torch aborts the process (docs/internals.md), and the edge parses weights itself. The one
  exception is the disclosure check process (``release/check_main``), a process of its own
  that loads the job's exported program: the modules only it runs (CHECK_PROCESS) may
  import torch, they never import the policy engine, and no edge-process module imports them;
- the same for the DP trainer's process (``edge_kernel/privacy/`` and its main,
  ``edge_kernel/trainer/``, torch and Opacus; it loads programs through the check process's
  safe loader): none of it imports the policy engine, and nothing outside it imports it but
  its torch-free ``errors`` (the error type the edge may catch) and the job process, which
  may take ``privacy/validate`` (the fix of a model at export, a convenience the trainer
  never relies on);
- neither package has an import circle.

Which imports count: every ``import`` anywhere in a module, function-local ones included,
for the boundary rules and for circles alike. A function-local import is deferred, not
absent: the module still needs the other one to work, and deferring an import to dodge a
circle hides the circle from the interpreter but not from a reader (``data/source.py``
importing every source inside ``open_source`` was one). Imports under ``if TYPE_CHECKING:``
never run, so they count for neither; the boundary rules still read them for inside/,
whose names a reader should be able to trust.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("edge_kernel", "jupyter_rapha")
PROTOCOL_FORBIDDEN = ("edge_kernel", "jupyter_rapha.extension", "jupyter_rapha.magic", "jupyter_rapha.client",
                      "torch", "IPython", "jupyter_server", "tornado", "requests", "web3", "sqlite3")
INSIDE = "edge_kernel.inside"
WIRE = "edge_kernel.wire"
CHECK_MAIN = "edge_kernel.release.check_main"
# Run only in the disclosure check process, which never loads regopy: torch is allowed there.
CHECK_PROCESS = ("edge_kernel.release.program", "edge_kernel.release.membership")
# The DP trainer's own process (edge_kernel/privacy/, edge_kernel/trainer/), which never loads
# regopy either: torch and Opacus are allowed there. Its errors module imports neither, so the
# edge may name it.
TRAINER_PROCESS = ("edge_kernel.privacy", "edge_kernel.trainer")
TRAINER_SHARED = ("edge_kernel.privacy", "edge_kernel.privacy.errors")
INSIDE_PRIVACY = "edge_kernel.privacy.validate"
POLICY_ENGINE = ("regopy", "edge_kernel.gates.policy", "edge_kernel.release.policy")
PROTOCOL = "jupyter_rapha.protocol"
INSIDE_LIBRARIES = ("numpy", "torch", "safetensors", "opacus")  # opacus: fixing a model at export
WIRE_LIBRARIES = ("numpy",)
# The one place host-side code may name the inside: the command line the job process runs.
LAUNCHER = Path("edge_kernel/sandbox/runner.py")
JOB_MODULE = "edge_kernel.inside.job_main"
# A distributed job's command: the launcher inside that starts one job_main per rank.
RANKS_MODULE = "edge_kernel.inside.ranks"
EXTENSION = "jupyter_rapha.extension"
ENTRY_POINT = Path("jupyter_rapha/__init__.py")  # _jupyter_server_extension_points


# --- reading imports ---------------------------------------------------------------------

def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_of(path: Path, root: Path) -> str:
    name = module_name(path, root)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_nodes(tree: ast.AST, *, type_checking: bool) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, function-local ones included; those under ``if
    TYPE_CHECKING:`` only when ``type_checking``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, ast.If) and _is_type_checking(node.test) and not type_checking:
            for child in node.orelse:
                visit(child)
            return
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def imported_names(node: ast.Import | ast.ImportFrom, package: str) -> list[str]:
    """Dotted names an import statement loads: ``from a import b`` gives ``a.b`` (a
    submodule, or a name in ``a``; callers resolve which against the modules they know)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        parts = package.split(".")
        base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    return [f"{base}.{alias.name}" if alias.name != "*" else base for alias in node.names]


def imports(path: Path, root: Path = ROOT, *, type_checking: bool = True) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text("utf-8"))
    package = _package_of(path, root)
    return [(node.lineno, name) for node in import_nodes(tree, type_checking=type_checking)
            for name in imported_names(node, package)]


def within(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def modules(folder: str, root: Path = ROOT) -> list[Path]:
    return sorted(p for p in (root / folder).rglob("*.py") if "labextension" not in p.parts)


def _ids(path: Path) -> str:
    return str(path.relative_to(ROOT))


# --- the boundary rules, as functions over a tree (so they can be shown to catch a breach) ---

def inside_breaches(root: Path) -> list[tuple[str, int, str]]:
    """Imports in inside/ of anything but inside/, the wire, the protocol, stdlib and the
    few libraries the runtime needs."""
    allowed_first_party = (INSIDE, WIRE, PROTOCOL, INSIDE_PRIVACY)
    return [(str(path.relative_to(root)), line, name)
            for path in modules("edge_kernel/inside", root) for line, name in imports(path, root)
            if not within(name, *allowed_first_party, *INSIDE_LIBRARIES)
            and name.partition(".")[0] not in sys.stdlib_module_names]


def wire_breaches(root: Path) -> list[tuple[str, int, str]]:
    return [(str(path.relative_to(root)), line, name)
            for path in modules("edge_kernel/wire", root) for line, name in imports(path, root)
            if not within(name, WIRE, PROTOCOL, *WIRE_LIBRARIES)
            and name.partition(".")[0] not in sys.stdlib_module_names]


def outside_modules(root: Path) -> list[Path]:
    return [p for package in PACKAGES for p in modules(package, root)
            if not p.relative_to(root).parts[:2] == ("edge_kernel", "inside")]


def imports_of_inside(root: Path) -> list[tuple[str, int, str]]:
    return [(str(path.relative_to(root)), line, name)
            for path in outside_modules(root) for line, name in imports(path, root) if within(name, INSIDE)]


def _code_strings(tree: ast.AST) -> list[ast.Constant]:
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [node for node in ast.walk(tree) if isinstance(node, ast.Constant)
            and isinstance(node.value, str) and id(node) not in docstrings]


def names_of_inside(root: Path) -> list[tuple[str, int, str]]:
    """String constants naming the inside outside it (an ``import_module`` in disguise),
    except the launcher's job module."""
    found = []
    for path in outside_modules(root):
        for node in _code_strings(ast.parse(path.read_text("utf-8"))):
            allowed = path.relative_to(root) == LAUNCHER and node.value in (JOB_MODULE, RANKS_MODULE)
            if INSIDE in node.value and not allowed:
                found.append((str(path.relative_to(root)), node.lineno, node.value))
    return found


def wire_names(root: Path) -> set[str]:
    """Top-level names the wire defines."""
    names = set()
    for path in modules("edge_kernel/wire", root):
        for node in ast.parse(path.read_text("utf-8")).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Assign):
                names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def wire_taken_elsewhere(root: Path) -> list[tuple[str, int, str]]:
    """Wire names imported from anywhere but the wire (a re-export, or a second copy)."""
    defined = wire_names(root)
    found = []
    for path in modules("edge_kernel", root):
        package = _package_of(path, root)
        for node in import_nodes(ast.parse(path.read_text("utf-8")), type_checking=True):
            if not isinstance(node, ast.ImportFrom):
                continue
            source = imported_names(node, package)[0].rpartition(".")[0]
            for alias in node.names:
                if alias.name in defined and not within(source, WIRE):
                    found.append((str(path.relative_to(root)), node.lineno, f"{source}.{alias.name}"))
    return found


def host_side_torch(root: Path) -> list[tuple[str, int, str]]:
    return [(str(path.relative_to(root)), line, name)
            for path in modules("edge_kernel", root) if "inside" not in path.relative_to(root).parts
            and not within(module_name(path, root), *CHECK_PROCESS)
            and not (within(module_name(path, root), *TRAINER_PROCESS)
                     and module_name(path, root) not in TRAINER_SHARED)
            for line, name in imports(path, root) if within(name, "torch", "opacus")]


def check_process_breaches(root: Path) -> list[tuple[str, int, str]]:
    """The check process's own modules importing the policy engine, or an edge-process
    module importing them (which would load torch beside regopy)."""
    found = []
    for path in modules("edge_kernel", root):
        name = module_name(path, root)
        # processes of their own, without regopy: the check process, the trainer (which loads
        # programs through the safe loader) and the job process
        own = within(name, *CHECK_PROCESS, CHECK_MAIN, *TRAINER_PROCESS, INSIDE)
        for line, imported in imports(path, root):
            if (own and within(imported, *POLICY_ENGINE)) or (
                    not own and within(imported, *CHECK_PROCESS)):
                found.append((str(path.relative_to(root)), line, imported))
    return found


def trainer_process_breaches(root: Path) -> list[tuple[str, int, str]]:
    """The trainer's modules importing the policy engine, or a module outside the trainer
    importing any of them but the torch-free errors (which would load torch beside regopy)."""
    found = []
    for path in modules("edge_kernel", root):
        name = module_name(path, root)
        own = within(name, *TRAINER_PROCESS)
        for line, imported in imports(path, root):
            inside_fix = within(name, INSIDE) and within(imported, INSIDE_PRIVACY)
            if (own and within(imported, *POLICY_ENGINE)) or (
                    not own and within(imported, *TRAINER_PROCESS) and not _names_shared(imported)
                    and not inside_fix):
                found.append((str(path.relative_to(root)), line, imported))
    return found


def _names_shared(imported: str) -> bool:
    return imported in TRAINER_SHARED or imported.rpartition(".")[0] == "edge_kernel.privacy.errors"


def imports_of_the_extension(root: Path) -> list[tuple[str, int, str]]:
    return [(str(path.relative_to(root)), line, name)
            for path in modules("jupyter_rapha", root)
            if path.relative_to(root).parts[:2] != ("jupyter_rapha", "extension") and path != root / ENTRY_POINT
            for line, name in imports(path, root) if within(name, EXTENSION)]


# --- the module graph and its circles ------------------------------------------------------

def module_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """First-party module -> the first-party modules it imports (function-local imports
    included, TYPE_CHECKING ones not). ``from pkg import name`` is an edge to the submodule
    ``pkg.name`` when there is one, else to ``pkg``. The implicit import of a module's own
    parent packages is no edge: a package's ``__init__`` re-exporting its submodules is
    the ordinary pattern, not a circle."""
    paths = {module_name(p, root): p for package in packages for p in modules(package, root)}
    graph: dict[str, set[str]] = {name: set() for name in paths}
    for name, path in paths.items():
        for _, target in imports(path, root, type_checking=False):
            while target and target not in paths:
                target = target.rpartition(".")[0]
            if target and target != name:
                graph[name].add(target)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            step = next(edges, None)
            if step is not None:
                if step not in index:
                    index[step] = low[step] = len(index)
                    stack.append(step)
                    on_stack.add(step)
                    work.append((step, iter(sorted(graph[step]))))
                elif step in on_stack:
                    low[node] = min(low[node], index[step])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


# --- the rules on this tree ----------------------------------------------------------------

@pytest.mark.parametrize("path", modules("jupyter_rapha/protocol"), ids=_ids)
def test_protocol_imports_neither_side(path):
    bad = [(line, name) for line, name in imports(path)
           if any(within(name, f) for f in PROTOCOL_FORBIDDEN)
           or (name.startswith("jupyter_rapha") and not within(name, PROTOCOL))]
    assert bad == []


@pytest.mark.parametrize("path", modules("edge_kernel"), ids=_ids)
def test_edge_imports_only_the_protocol_from_the_researcher_side(path):
    bad = [(line, name) for line, name in imports(path)
           if name.startswith("jupyter_rapha") and not within(name, PROTOCOL)
           and name not in ("jupyter_rapha", "jupyter_rapha.__version__")]  # the package, for __version__
    assert bad == []


@pytest.mark.parametrize("path", [p for p in modules("jupyter_rapha") if "protocol" not in p.parts], ids=_ids)
def test_researcher_side_never_imports_the_edge(path):
    assert [(line, name) for line, name in imports(path) if name.startswith("edge_kernel")] == []


def test_inside_imports_only_the_wire_the_protocol_and_its_libraries():
    assert modules("edge_kernel/inside"), "edge_kernel/inside is gone: update the rule, do not drop it"
    assert inside_breaches(ROOT) == []


def test_the_wire_imports_only_the_protocol_and_numpy():
    assert wire_breaches(ROOT) == []


def test_nothing_outside_the_inside_imports_it():
    assert imports_of_inside(ROOT) == []


def test_only_the_launcher_names_the_inside_and_only_as_the_job_module():
    assert names_of_inside(ROOT) == []
    launcher = [node.value for node in _code_strings(ast.parse((ROOT / LAUNCHER).read_text("utf-8")))]
    assert JOB_MODULE in launcher  # the rule above would pass vacuously if the launcher moved


def test_the_broker_and_everyone_else_take_the_wire_from_the_wire():
    broker = [name for _, name in imports(ROOT / "edge_kernel/data/broker.py")]
    assert any(within(name, WIRE) for name in broker)
    assert not any(within(name, "edge_kernel.sandbox", INSIDE) for name in broker)
    assert wire_taken_elsewhere(ROOT) == []


def test_the_sandbox_package_is_host_side_supervision_only():
    # Nothing in sandbox/ runs beside the researcher's code: the inside imports none of it
    # (rule above), none of it is a module to run, and it never needs torch.
    assert [p for p in modules("edge_kernel/sandbox") if "__main__" in p.read_text("utf-8")] == []
    assert host_side_torch(ROOT) == []


def test_torch_stays_in_the_check_process():
    assert check_process_breaches(ROOT) == []


def test_torch_stays_in_the_trainer_process():
    assert modules("edge_kernel/privacy"), "edge_kernel/privacy is gone: update the rule, do not drop it"
    assert trainer_process_breaches(ROOT) == []


def test_trainer_process_breaches_are_caught(tmp_path):
    root = _tree(tmp_path, {"edge_kernel/privacy/dpsgd.py": "import torch\nfrom ..gates import policy\n",
                            "edge_kernel/privacy/errors.py": "import torch\n",
                            "edge_kernel/jobs.py": "from .privacy.errors import PrivacyError\n"
                                                   "def f():\n    from .privacy import dpsgd\n"})
    assert host_side_torch(root) == [("edge_kernel/privacy/errors.py", 1, "torch")]
    assert sorted(trainer_process_breaches(root)) == [
        ("edge_kernel/jobs.py", 3, "edge_kernel.privacy.dpsgd"),
        ("edge_kernel/privacy/dpsgd.py", 2, "edge_kernel.gates.policy")]


def test_check_process_breaches_are_caught(tmp_path):
    root = _tree(tmp_path, {"edge_kernel/release/membership.py": "import torch\nfrom ..gates import policy\n",
                            "edge_kernel/jobs.py": "def f():\n    from .release import membership\n"})
    assert host_side_torch(root) == []
    assert sorted(check_process_breaches(root)) == [
        ("edge_kernel/jobs.py", 2, "edge_kernel.release.membership"),
        ("edge_kernel/release/membership.py", 2, "edge_kernel.gates.policy")]


def test_only_the_entry_point_imports_the_server_extension():
    assert imports_of_the_extension(ROOT) == []
    assert any(within(name, EXTENSION) for _, name in imports(ROOT / ENTRY_POINT))


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_circle(package):
    graph = module_graph(ROOT, (package,))
    assert len(graph) > 10
    assert circles(graph) == []


# --- the rules catch what they are for -----------------------------------------------------

def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for package in PACKAGES:
        (tmp_path / package).mkdir(exist_ok=True)
    return tmp_path


def test_an_inside_module_importing_host_code_is_caught(tmp_path):
    root = _tree(tmp_path, {
        "edge_kernel/inside/runtime.py": "import os, torch\nfrom ..wire.channel import Channel\n"
                                         "from jupyter_rapha.protocol.errors import X\n"
                                         "def f():\n    from ..settings import Settings\n",
        "edge_kernel/inside/job_main.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                          "    from edge_kernel.store import JobStore\nimport requests\n",
    })
    assert sorted(name for _, _, name in inside_breaches(root)) == [
        "edge_kernel.settings.Settings", "edge_kernel.store.JobStore", "requests"]


def test_host_code_importing_or_naming_the_inside_is_caught(tmp_path):
    root = _tree(tmp_path, {
        "edge_kernel/inside/runtime.py": "",
        "edge_kernel/service.py": "def f():\n    from .inside import runtime\n",
        "edge_kernel/sandbox/runner.py": f"CMD = ['-m', {JOB_MODULE!r}]\n",
        "edge_kernel/jobs.py": "import importlib\nM = importlib.import_module('edge_kernel.inside.runtime')\n",
        "jupyter_rapha/local.py": "from edge_kernel.inside.runtime import Rapha\n",
    })
    assert sorted(path for path, _, _ in imports_of_inside(root)) == ["edge_kernel/service.py",
                                                                      "jupyter_rapha/local.py"]
    assert names_of_inside(root) == [("edge_kernel/jobs.py", 2, "edge_kernel.inside.runtime")]


def test_a_second_copy_or_a_re_export_of_the_wire_is_caught(tmp_path):
    root = _tree(tmp_path, {
        "edge_kernel/wire/channel.py": "class Channel: ...\nSHM_ALIGN = 64\n",
        "edge_kernel/sandbox/channel.py": "from ..wire.channel import Channel\n",
        "edge_kernel/data/broker.py": "from ..sandbox.channel import Channel\nfrom ..wire.channel import SHM_ALIGN\n",
    })
    assert wire_taken_elsewhere(root) == [("edge_kernel/data/broker.py", 1, "edge_kernel.sandbox.channel.Channel")]


def test_kernel_code_importing_the_server_extension_is_caught(tmp_path):
    root = _tree(tmp_path, {"jupyter_rapha/__init__.py": "def f():\n    from .extension import points\n",
                            "jupyter_rapha/extension/app.py": "from .handlers import handlers\n",
                            "jupyter_rapha/magic.py": "def f():\n    from .extension.app import RaphaExtension\n"})
    assert imports_of_the_extension(root) == [("jupyter_rapha/magic.py", 2,
                                               "jupyter_rapha.extension.app.RaphaExtension")]


def test_host_side_torch_is_caught(tmp_path):
    root = _tree(tmp_path, {"edge_kernel/inside/runtime.py": "import torch\n",
                            "edge_kernel/release/weights.py": "def f():\n    import torch.nn\n"})
    assert host_side_torch(root) == [("edge_kernel/release/weights.py", 2, "torch.nn")]


def test_a_circle_through_a_function_local_import_is_found(tmp_path):
    root = _tree(tmp_path, {
        "edge_kernel/__init__.py": "",
        "edge_kernel/data/__init__.py": "from .source import Source\n",  # re-export: no circle
        "edge_kernel/data/source.py": "def open_source():\n    from .csv_table import CsvSource\n",
        "edge_kernel/data/csv_table.py": "from .source import Skip\n",
        "edge_kernel/audit.py": "from .audit_head import AuditHead\n",
        "edge_kernel/audit_head.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                     "    from .audit import AuditLog\n",
        "edge_kernel/a.py": "from . import b\n",
        "edge_kernel/b.py": "from edge_kernel import c\n",
        "edge_kernel/c.py": "import edge_kernel.a as a\n",
    })
    assert sorted(circles(module_graph(root, ("edge_kernel",)))) == [
        ["edge_kernel.a", "edge_kernel.b", "edge_kernel.c"],
        ["edge_kernel.data.csv_table", "edge_kernel.data.source"],
    ]
