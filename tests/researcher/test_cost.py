"""``rapha run`` says what the budget can cost before the cell leaves, and ``--max-cost``
refuses locally, saying by how much and what to change."""

from __future__ import annotations

import pytest

from jupyter_rapha.cli import main
from jupyter_rapha.keystore import create_key
from tests.researcher.fake_edge import FakeEdge


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    key_path = tmp_path_factory.mktemp("key") / "me.pem"
    with FakeEdge([create_key(key_path).public]) as running:
        running.key_path = key_path
        yield running


def run(edge, tmp_path, *extra):
    (tmp_path / "cell.py").write_text("rapha.save({})\n")
    out = tmp_path / f"out-{len(list(tmp_path.iterdir()))}"
    return main(["run", str(tmp_path / "cell.py"), "--edge", edge.url, "--dataset", "synthetic-cxr",
                 "--budget", "8", "--key", str(edge.key_path), "--out", str(out), *extra])


def test_the_cost_of_the_budget_is_shown_before_the_cell_leaves(edge, tmp_path, capsys):
    before = len(edge.jobs)
    run(edge, tmp_path)  # how the job ends does not matter here: that it was sent does
    err = capsys.readouterr().err
    assert "at most 0.80 GBP (0.10 per record x 8 records; only the records used are charged)" in err
    assert len(edge.jobs) == before + 1


def test_max_cost_refuses_locally_saying_how_much_over(edge, tmp_path, capsys):
    before = len(edge.jobs)
    assert run(edge, tmp_path, "--max-cost", "0.5") == 1
    err = capsys.readouterr().err
    assert "could cost 0.80 GBP" in err and "more than --max-cost 0.5: 0.30 over" in err
    assert "lower --budget to 5 or raise --max-cost; nothing was sent" in err
    assert len(edge.jobs) == before  # stopped before anything was submitted
    run(edge, tmp_path, "--max-cost", "0.80")  # exactly the maximum is allowed: the job is sent
    assert len(edge.jobs) == before + 1


@pytest.mark.parametrize("value", ["abc", "-1", "NaN", "inf"])
def test_a_malformed_max_cost_is_refused(edge, tmp_path, capsys, value):
    assert run(edge, tmp_path, "--max-cost", value) == 1
    assert "--max-cost must be an amount of 0 or more" in capsys.readouterr().err
