"""The packages, tests, benchmarks and examples pass ruff, with the rules chosen in pyproject."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ["jupyter_rapha", "edge_kernel", "tests", "benchmarks", "examples"]


def ruff(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_ruff_finds_nothing():
    done = ruff(*FOLDERS)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_the_configured_rules_are_in_force(tmp_path):
    sloppy = tmp_path / "sloppy.py"
    sloppy.write_text("import os\n\n\ndef pairs(a, b):\n    return list(zip(a, b))  # type: ignore\n")
    done = ruff("--config", str(ROOT / "pyproject.toml"), "--output-format", "concise", str(sloppy), cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    missing = [code for code in ("F401", "B905", "PGH003") if code not in done.stdout]
    assert not missing, done.stdout
