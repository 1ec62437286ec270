"""edge.toml's [data] table: the decoder pool's size and the disk cache's bound,
validated like every other key (type, range, typo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge_kernel.settings import DataSettings, _settings
from jupyter_rapha.protocol.errors import BadInput


def _data(tmp_path: Path, table: dict | None) -> DataSettings:
    document: dict = {"edge": {"id": "e"}}
    if table is not None:
        document["data"] = table
    return _settings(tmp_path, document).data


def test_the_defaults_leave_the_job_a_core_and_keep_16_gib(tmp_path: Path) -> None:
    data = _data(tmp_path, None)
    assert data == _data(tmp_path, {}) == DataSettings()
    assert data.decode_workers is None and data.workers() == max(1, (os.cpu_count() or 1) - 1)
    assert data.cache_max_mib == 16384
    assert _settings(tmp_path, {"edge": {"id": "e"}}).cache_dir == tmp_path / "state" / "cache"


def test_set_values_are_taken(tmp_path: Path) -> None:
    assert _data(tmp_path, {"decode_workers": 0}).workers() == 0
    assert _data(tmp_path, {"decode_workers": 7, "cache_max_mib": 0}) == DataSettings(7, 0)


@pytest.mark.parametrize(("table", "words"), [
    ({"decode_workers": "2"}, "data.decode_workers in edge.toml must be a whole number"),
    ({"decode_workers": True}, "data.decode_workers in edge.toml must be a whole number"),
    ({"decode_workers": -1}, "data.decode_workers must be from 0 to 256"),
    ({"decode_workers": 1000}, "data.decode_workers must be from 0 to 256"),
    ({"cache_max_mib": 1.5}, "data.cache_max_mib in edge.toml must be a whole number"),
    ({"cache_max_mib": -1}, "data.cache_max_mib must be 0 (no disk cache) or more"),
    ({"decode_worker": 2}, "unknown key data.decode_worker in edge.toml; did you mean decode_workers?"),
])
def test_a_bad_value_stops_the_start_naming_the_key(tmp_path: Path, table: dict, words: str) -> None:
    with pytest.raises(BadInput) as raised:
        _data(tmp_path, table)
    assert words in raised.value.diagnostics()
