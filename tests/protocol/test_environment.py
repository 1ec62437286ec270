"""The site's environment listing (protocol/environment.py): parsing, the imports of code
that travels, what the edge lacks, and where the versions differ."""

from __future__ import annotations

import pytest

from jupyter_rapha.protocol.environment import (
    CodeFile, ImportCheck, canonical_name, check_imports, imported_names, parse_environment, version_differences)
from jupyter_rapha.protocol.errors import BadInput

LISTING = {"python": "3.11.7", "implementation": "cpython", "complete": True,
           "packages": {"torch": "2.13.0+cpu", "numpy": "2.4.6", "monai": "1.6.1", "pydicom": "3.0.2",
                        "PyYAML": "6.0.2"},
           "modules": {"torch": ["torch"], "functorch": ["torch"], "numpy": ["numpy"], "monai": ["monai"],
                       "pydicom": ["pydicom"], "yaml": ["PyYAML"]},
           "stdlib": ["collections", "json", "math", "os", "socket", "__future__"]}


def env(**changes):
    return parse_environment({**LISTING, **changes})


def cell(text: str, first_line: int = 2) -> list[CodeFile]:
    return [CodeFile("<cell>", text, first_line)]


def test_a_listing_reads_back_and_summarises_its_key_packages():
    environment = env()
    assert environment.to_dict() == {**LISTING, "packages": dict(sorted(LISTING["packages"].items())),
                                     "modules": dict(sorted(LISTING["modules"].items())),
                                     "stdlib": sorted(LISTING["stdlib"])}
    assert environment.summary() == ("Python 3.11.7, 5 packages: torch 2.13.0+cpu, numpy 2.4.6, monai 1.6.1, "
                                     "pydicom 3.0.2")
    assert env(complete=False).summary().startswith("Python 3.11.7, 5 packages listed (not all it has): torch")
    assert environment.version("pyyaml") == environment.version("PyYAML") == "6.0.2"
    assert environment.providers("yaml") == ("PyYAML",) and environment.providers("scipy") == ()
    assert canonical_name("jupyter_server") == canonical_name("Jupyter.Server") == "jupyter-server"


@pytest.mark.parametrize(("changes", "words"), [
    ({"python": None}, "no Python version"),
    ({"python": "3.11; rm"}, "no Python version"),
    ({"complete": "yes"}, "whether it is complete"),
    ({"packages": ["torch"]}, "not an object of versions"),
    ({"packages": {"torch": 2}}, "malformed package entry 'torch'"),
    ({"packages": {"../x": "1"}}, "malformed package entry"),
    ({"modules": {"torch": "torch"}}, "malformed module entry 'torch'"),
    ({"modules": {"a.b": ["x"]}}, "malformed module entry"),
    ({"stdlib": "os"}, "stdlib entry is not a list"),
])
def test_a_malformed_listing_is_refused_naming_what(changes, words):
    with pytest.raises(BadInput, match=words.replace("(", r"\(")):
        env(**changes)
    with pytest.raises(BadInput, match="not an object"):
        parse_environment(["python"])


def test_a_listing_without_stdlib_names_takes_this_interpreters():
    assert {"json", "asyncio", "sys"} <= env(stdlib=[]).stdlib


def test_imports_are_found_with_their_lines_top_level_names_and_optionality():
    source = ("import torch.nn as nn, numpy\nfrom monai.networks import nets\nfrom . import helper\n"
              "try:\n    import scipy\nexcept ImportError:\n    scipy = None\n"
              "try:\n    import pandas\nexcept ValueError:\n    pass\n"
              "def f():\n    import yaml\n")
    found = [(i.module, i.line, i.optional) for i in imported_names(source)]
    assert found == [("torch", 1, False), ("numpy", 1, False), ("monai", 2, False), ("scipy", 5, True),
                     ("pandas", 9, False), ("yaml", 13, False)]
    assert imported_names("import (") == []  # does not parse: the scanner says so


def test_an_import_the_edge_lacks_is_named_with_its_line():
    code = "import torch\nimport json\nimport lightgbm\nfrom sklearn.metrics import roc_auc_score\nimport lightgbm\n"
    found = check_imports(cell(code), env(), "edge north")
    assert found.missing == (
        "line 4: edge north has no module lightgbm: remove the import or ask the hospital to install it "
        "(Python 3.11.7 there)",
        "line 5: edge north has no module sklearn: remove the import or ask the hospital to install it "
        "(Python 3.11.7 there)")
    assert found.notes == ()


def test_present_stdlib_runtime_and_travelling_modules_are_not_missing():
    code = "import torch, functorch, numpy, monai, pydicom, yaml, json, math, os\nimport rapha\nimport helpers\n"
    assert check_imports(cell(code), env(), local_modules=frozenset({"helpers"})) == ImportCheck((), ())
    # the scanner's own rules still apply to stdlib modules: present is not allowed
    assert check_imports(cell("import socket\n"), env()) == ImportCheck((), ())


def test_files_that_travel_are_checked_and_named_by_file():
    files = [*cell("import helpers\n"), CodeFile("helpers.py", "import numpy\n\nimport xgboost\n")]
    found = check_imports(files, env(), local_modules=frozenset({"helpers"}))
    assert found.missing[0].startswith("helpers.py line 3: the edge has no module xgboost")


def test_optional_imports_and_a_partial_listing_give_notes_not_refusals():
    found = check_imports(cell("try:\n    import scipy\nexcept ImportError:\n    pass\n"), env())
    assert found.missing == () and "line 3: the edge has no module scipy (the import is inside try" in found.notes[0]
    partial = check_imports(cell("import scipy\n"), env(complete=False))
    assert partial.missing == () and "it lists only some" in partial.notes[0]


def test_version_differences_name_the_distribution_both_versions_and_the_line():
    code = "import torch\nimport numpy as np\nimport yaml\nimport json\nimport torch.nn\n"
    local = {"torch": "2.12.1", "numpy": "2.4.6", "pyyaml": "6.0.1"}
    assert version_differences(cell(code), env(), local, "edge north") == [
        "torch is 2.12.1 here but 2.13.0+cpu at edge north (imported at line 2): the dry run may behave "
        "differently from the job",
        "PyYAML is 6.0.1 here but 6.0.2 at edge north (imported at line 4): the dry run may behave "
        "differently from the job"]
    assert version_differences(cell("import monai\n"), env(), {}) == []  # not installed here: nothing to compare
