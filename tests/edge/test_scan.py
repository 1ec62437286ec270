"""The compliance scanner and the scan gate: for each rule a cell that trips it and a
near miss that does not, an ordinary training corpus with no finding, and the report's
shape and digest."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_kernel.gates.pipeline import GateContext
from edge_kernel.gates.scan import ScanGate
from jupyter_rapha.protocol.canonical import canonical_json
from jupyter_rapha.protocol.jobspec import Budget, JobSpec, code_digest
from jupyter_rapha.protocol.scan import SCANNER_VERSION, scan_source

from .scan_corpus import TRAINING_CELLS

# (rule, cell that trips it, near miss that must not trip it)
CASES = [
    ("net-import", "import socket\n", "import json\n"),
    ("net-import", "from urllib.request import urlopen\n", "from pathlib import Path\n"),
    ("net-import", "import requests as rq\n", "import random as rq\n"),
    ("net-import", "import http.client\n", "import hashlib\n"),
    ("escape-import", "import subprocess\n", "import statistics\n"),
    ("escape-import", "from multiprocessing import connection\n", "import torch.multiprocessing\n"),
    ("escape-import", "import ctypes as c\n", "import copy as c\n"),
    ("os-exec", "import os\nos.system('id')\n", "import os\nos.path.join('a', 'b')\n"),
    ("os-exec", "from os import execv as go\n", "from os import getcwd as go\n"),
    ("os-exec", "import os as o\nrun = o.spawnl\n", "import os as o\nrun = o.listdir\n"),
    ("os-exec", "import os\nos.fork()\n", "import os\nos.getpid()\n"),
    ("os-exec", "import os\ngetattr(os, 'system')('id')\n", "import os\ngetattr(os, 'sep')\n"),
    ("dynamic-code", "exec(source)\n", "exec('x = 1')\n"),
    ("dynamic-code", "eval(expr)\n", "eval('1 + 1')\n"),
    ("dynamic-code", "code = compile(text, 'c', 'exec')\n", "import re\npattern = re.compile(text)\n"),
    ("dynamic-code", "mod = __import__(name)\n", "mod = __import__('math')\n"),
    ("dynamic-code", "import importlib\nm = importlib.import_module(n)\n",
     "import importlib\nm = importlib.import_module('math')\n"),
    ("dynamic-code", "run = exec\n", "import torch\nrun = torch.compile\n"),
    ("net-import", "exec('import socket')\n", "exec('import math')\n"),
    ("net-import", "m = __import__('socket')\n", "m = __import__('numpy')\n"),
    ("reach-through", "import torch\ntorch.hub.load('a', 'b')\n", "import torch\ntorch.nn.Linear(2, 2)\n"),
    ("reach-through", "import numpy as np\nnp.ctypeslib.load_library('x', '.')\n",
     "import numpy as np\nnp.linalg.norm([1])\n"),
    ("reach-through", "import os\nos.__dict__['system']('id')\n", "import os\nos.environ.get('HOME')\n"),
    ("reach-through", "import shutil\nshutil.os.getcwd()\n", "import shutil\nshutil.copy('a', 'b')\n"),
    ("reach-through", "import sys\nsys.modules['os']\n", "import sys\nsys.version_info\n"),
    ("reach-through", "from torch import hub\n", "from torch import nn\n"),
    ("reach-through", "x = __builtins__\n", "x = __name__\n"),
    ("pickle-load", "import pickle\npickle.loads(b)\n", "import pickle\npickle.dumps(b)\n"),
    ("pickle-load", "import torch\ntorch.load('m.pt')\n", "import torch\ntorch.load('m.pt', weights_only=True)\n"),
    ("pickle-load", "import numpy as np\nnp.load('a.npy', allow_pickle=True)\n",
     "import numpy as np\nnp.load('a.npy')\n"),
    ("pickle-load", "from pickle import load\nload(fh)\n", "from json import load\nload(fh)\n"),
    ("write-outside-job", "open('/etc/cron.d/x', 'w')\n", "open('/etc/hostname')\n"),
    ("write-outside-job", "open('../x.txt', 'a')\n", "open('x.txt', 'a')\n"),
    ("write-outside-job", "open(f'/tmp/{name}', mode='wb')\n", "open(f'out/{name}', mode='wb')\n"),
    ("write-outside-job", "import shutil\nshutil.copy('a', '/srv/b')\n", "import shutil\nshutil.copy('a', 'b')\n"),
    ("write-outside-job", "import shutil\nshutil.rmtree(target)\n", "import shutil\nshutil.rmtree('scratch')\n"),
    ("write-outside-job", "from pathlib import Path\nPath('/var/x').write_text('y')\n",
     "from pathlib import Path\nPath('var/x').write_text('y')\n"),
    ("write-outside-job", "from pathlib import Path\n(Path('out') / '..' / 'x').write_bytes(b'')\n",
     "from pathlib import Path\n(Path('out') / 'x').write_bytes(b'')\n"),
    ("write-outside-job", "import os\nos.makedirs('/opt/evil')\n", "import os\nos.makedirs('runs/1')\n"),
    ("module-not-allowed", "import pandas\n", "import numpy\n"),
    ("module-not-allowed", "from sklearn import metrics\n", "from torch import optim\n"),
    ("obfuscation", "import os\ngetattr(os, 'sys' + 'tem')('id')\n", "import os\ngetattr(os, 'getcwd')()\n"),
    ("obfuscation", "name = chr(111) + chr(115)\n", "letter = chr(65)\n"),
    ("obfuscation", "name = ''.join(chr(c) for c in codes)\n", "name = ''.join(str(c) for c in codes)\n"),
    ("obfuscation", "f = getattr(model, attr_name)\n", "f = getattr(model, 'forward')\n"),
    ("obfuscation", "fn = globals()[key]\n", "fn = globals()['main']\n"),
    ("obfuscation", "__import__('o' + 's')\n", "__import__('os')\n"),
    ("decode-exec", "import base64\nexec(base64.b64decode(blob))\n", "import base64\ndata = base64.b64decode(blob)\n"),
    ("decode-exec", "import codecs\nsrc = codecs.decode(s, 'rot13')\nexec(src)\n",
     "import codecs\nsrc = codecs.decode(s, 'rot13')\nprint(src)\n"),
    ("decode-exec", "eval(bytes.fromhex(h).decode())\n", "print(bytes.fromhex(h).decode())\n"),
    ("syntax-error", "def f(:\n    pass\n", "def f():\n    pass\n"),
]


def rules(source: str) -> set[str]:
    return scan_source(source).rules()


@pytest.mark.parametrize(("rule", "trips", "near_miss"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_rule_trips_and_near_miss_does_not(rule, trips, near_miss):
    assert rule in rules(trips)
    assert rule not in rules(near_miss)


def test_every_rule_has_a_case():
    from jupyter_rapha.protocol.scan_rules import ADVICE

    assert set(ADVICE) == {case[0] for case in CASES}


@pytest.mark.parametrize("name", sorted(TRAINING_CELLS))
def test_ordinary_training_cells_have_no_finding(name):
    report = scan_source(TRAINING_CELLS[name])
    assert report.findings == (), [f.to_dict() for f in report.findings]


def test_corpus_is_large_enough():
    assert len(TRAINING_CELLS) >= 10


def test_finding_says_where_and_what_to_change():
    report = scan_source("import torch\n\nimport os\nos.system('id')\n")
    [finding] = report.findings
    assert (finding.rule, finding.line, finding.col, finding.severity) == ("os-exec", 4, 0, "high")
    assert "os.system" in finding.message and "cannot start other programs" in finding.message


def test_report_shape_and_stable_digest():
    report = scan_source("import socket\nimport pandas\n")
    doc = report.to_dict()
    assert set(doc) == {"scanner_version", "findings", "counts"}
    assert doc["scanner_version"] == SCANNER_VERSION
    assert doc["counts"] == {"high": 1, "medium": 2, "low": 0}
    assert set(doc["findings"][0]) == {"rule", "line", "col", "severity", "message"}
    assert report.sha256 == scan_source("import socket\nimport pandas\n").sha256
    assert len(canonical_json(doc)) > 0


def test_syntax_error_is_a_high_finding():
    [finding] = scan_source("x = (\n").findings
    assert finding.rule == "syntax-error" and finding.severity == "high"
    assert scan_source("x = 1\0\n").findings[0].rule == "syntax-error"


def test_empty_cell_has_no_finding():
    assert scan_source("").findings == ()


def test_deep_nesting_is_refused_not_crashed():
    report = scan_source("x = " + "(" * 5000 + ")" * 5000 + "\n")
    assert report.high and report.high[0].rule == "syntax-error"


def test_allowlist_is_a_parameter():
    assert "module-not-allowed" not in scan_source("import pandas\n", allowed_modules={"pandas"}).rules()
    assert "module-not-allowed" in scan_source("import torch\n", allowed_modules={"numpy"}).rules()
    assert scan_source("import pandas\n", allowed_modules=None).findings == ()


def test_code_strings_are_scanned_at_the_call_line():
    [net] = [f for f in scan_source("x = 1\nexec('import os\\nos.system(1)')\n").findings]
    assert net.rule == "os-exec" and net.line == 2 and "code string passed to exec" in net.message


# -- the gate -----------------------------------------------------------------------

def ctx_for(code: str, tmp_path: Path) -> GateContext:
    spec = JobSpec(job_id="a" * 32, researcher_key_id="b" * 32, created="2026-01-31T12:00:00Z", nonce="c" * 32,
                   code=code, code_sha256=code_digest(code), dataset="d", fields=("image",), budget=Budget(10))
    return GateContext(spec, "e" * 64, None, None, None)


def test_gate_passes_clean_cell_with_report_as_evidence(tmp_path):
    result = ScanGate().check(ctx_for(TRAINING_CELLS["mlp"], tmp_path))
    assert result.outcome == "pass" and result.evidence == scan_source(TRAINING_CELLS["mlp"]).to_dict()
    assert result.evidence_sha256 == scan_source(TRAINING_CELLS["mlp"]).sha256


def test_gate_denies_high_findings_with_cell_lines(tmp_path):
    result = ScanGate().check(ctx_for("import torch\nimport socket\n", tmp_path))
    assert result.outcome == "deny"
    assert result.reasons == ("cell line 2: imports network module socket: remove the import; jobs run "
                              "without network, read data through rapha.loader()",)


def test_gate_leaves_medium_findings_to_the_policy(tmp_path):
    result = ScanGate().check(ctx_for("import pandas\n", tmp_path))
    assert result.outcome == "pass" and result.evidence["counts"]["medium"] == 1


def test_gate_uses_the_edge_allowlist(tmp_path):
    result = ScanGate(allowed_modules={"torch"}).check(ctx_for("import numpy\n", tmp_path))
    assert result.evidence["findings"][0]["rule"] == "module-not-allowed"
