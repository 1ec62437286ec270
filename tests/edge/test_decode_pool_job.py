"""run_job with the broker's decoder pool and disk cache: a job sees the same records
and meter with 0 or 2 decoders, and the next job on the dataset reads the disk cache
(counted by the runner's log line, not by timing)."""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from pathlib import Path

import pytest

from edge_kernel.sandbox.runner import run_job
from edge_kernel.settings import DataSettings, Settings
from tests.edge.conftest_data import HMAC_KEY, SYNTH_RECORDS, make_spec

pytestmark = pytest.mark.slow

SUM_CELL = '''
import torch
loader = rapha.loader(batch_size=8, shuffle=True, seed=2)
for epoch in range(2):
    total, squares, seen = 0.0, 0.0, 0
    for batch in loader:
        image = batch["image"].double()
        total += float(image.sum()) + float(batch["finding"].sum())
        squares += float((image * image).sum())
        seen += len(batch["finding"])
    rapha.log(total=total, squares=squares, seen=seen)
'''
COUNTS = re.compile(r"(\d+) records decoded, (\d+) read from the disk cache")


def _job(entry, folder: Path, settings: Settings, workdir: Path, caplog: pytest.LogCaptureFixture):
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="edge_kernel.sandbox.runner"):
        outcome = run_job(make_spec(SUM_CELL), entry, folder, ["image", "finding"], HMAC_KEY, workdir, settings)
    assert (outcome.status, outcome.error, outcome.fault) == ("completed", None, None)
    (counts,) = [COUNTS.search(r.getMessage()) for r in caplog.records if COUNTS.search(r.getMessage())]
    assert counts is not None
    return outcome, (int(counts[1]), int(counts[2]))


def test_the_pool_and_the_cache_change_nothing_the_job_sees(synth_folder, synth_entry, tmp_path, caplog):
    alone = Settings(config_dir=tmp_path / "alone", edge_id="e", data=DataSettings(decode_workers=0,
                                                                                    cache_max_mib=0))
    pooled = replace(alone, config_dir=tmp_path / "pooled", data=DataSettings(decode_workers=2))
    plain, counts = _job(synth_entry, synth_folder, alone, tmp_path / "a", caplog)
    assert counts == (SYNTH_RECORDS, 0)  # the broker thread decodes each record once, in memory after
    first, counts = _job(synth_entry, synth_folder, pooled, tmp_path / "b", caplog)
    assert counts == (SYNTH_RECORDS, 0)
    second, counts = _job(synth_entry, synth_folder, pooled, tmp_path / "c", caplog)
    assert counts == (0, SYNTH_RECORDS)  # the next job: every record from the disk cache
    for outcome in (first, second):
        assert outcome.meter.records_used == plain.meter.records_used == SYNTH_RECORDS
        assert outcome.meter.pseudonyms_hex == plain.meter.pseudonyms_hex
        assert outcome.meter.records_root_hex == plain.meter.records_root_hex
        assert outcome.metrics["seen"] == plain.metrics["seen"] == [SYNTH_RECORDS] * 2
        for name in ("total", "squares"):
            assert outcome.metrics[name] == pytest.approx(plain.metrics[name], rel=1e-12)
    assert list((tmp_path / "pooled" / "state" / "cache").iterdir())
    assert not (tmp_path / "alone" / "state" / "cache" / "records").exists()
