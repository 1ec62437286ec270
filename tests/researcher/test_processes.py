"""``--processes N`` (``rapha run`` and ``%%rapha_train``): carried in the signed spec,
and a count the spec would refuse is refused here, before the cell leaves."""

from __future__ import annotations

import pytest

from jupyter_rapha.cli import main
from jupyter_rapha.client import make_jobspec
from jupyter_rapha.keystore import create_key
from jupyter_rapha.protocol.errors import BadInput
from jupyter_rapha.routing.submission import parse_submission
from jupyter_rapha.training import TrainRequest, submission_for
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


@pytest.mark.parametrize("count", ["0", "65", "-2"])
def test_a_bad_process_count_is_refused_before_the_cell_leaves(edge, tmp_path, capsys, count):
    before = len(edge.jobs)
    assert run(edge, tmp_path, "--processes", count) == 1
    assert "--processes must be a whole number from 1 to 64" in capsys.readouterr().err
    assert len(edge.jobs) == before


def test_the_process_count_travels_in_the_signed_spec(edge, tmp_path):
    before = len(edge.jobs)
    run(edge, tmp_path, "--processes", "2")  # how the job ends does not matter here: what was sent does
    assert len(edge.jobs) == before + 1
    assert list(edge.jobs.values())[-1]["spec"].processes == 2


def test_the_extension_path_carries_and_checks_the_count():
    request = TrainRequest(code="rapha.save({})\n", dataset="d", budget=4, processes=3)
    body = submission_for(request).to_dict()
    assert body["processes"] == 3 and parse_submission(body).processes == 3
    assert "processes" not in submission_for(TrainRequest(code="x", dataset="d", budget=4)).to_dict()
    for bad in (0, True, "2"):
        with pytest.raises(BadInput, match="processes must be a whole number from 1 to 64"):
            parse_submission({**body, "processes": bad})
    spec = make_jobspec("x", "d", ["image"], 4, 60, {}, "a" * 32, processes=3)
    assert spec.processes == 3 and spec.to_dict()["processes"] == 3
