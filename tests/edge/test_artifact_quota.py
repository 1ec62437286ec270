"""Each researcher's uploaded artifacts are held to the edge's ``artifacts.max_stored_mib``
(an upload past it is refused before its body is read, naming the limit) and those no
waiting job names are deleted after ``artifacts.keep_unused_days`` unused."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from edge_kernel.artifacts import ArtifactStore, QuotaExceeded, artifacts_in_use
from edge_kernel.settings import ArtifactSettings, _settings
from jupyter_rapha.protocol.errors import BadInput

MIB = 1024 * 1024
ALICE, BOB = "a" * 16, "b" * 16


def _kept(store: ArtifactStore, key_id: str, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    upload = store.upload(key_id, digest, declared=len(data))
    upload.write(data)
    upload.finish()
    return digest


def test_an_upload_past_the_quota_is_refused_from_its_length_naming_the_limit(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path, max_stored_mib=2, keep_unused_days=30)
    _kept(store, ALICE, b"x" * (MIB + MIB // 2))
    with pytest.raises(QuotaExceeded) as refused:
        store.upload(ALICE, "c" * 64, declared=MIB)
    text = refused.value.diagnostics()
    assert "past the 2 MiB it keeps per researcher (artifacts.max_stored_mib)" in text
    assert "yours take 1.5 MiB now" in text and "after 30 days unused" in text
    assert not list(store.incoming_dir.iterdir())  # refused before anything was written
    assert _kept(store, BOB, b"y" * MIB)  # another researcher's room is their own
    assert store.stored_bytes(ALICE) == MIB + MIB // 2 and store.stored_bytes(BOB) == MIB


def test_the_same_bytes_again_count_once(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path, max_stored_mib=1)
    data = b"z" * (MIB - 10)
    assert _kept(store, ALICE, data) == _kept(store, ALICE, data)
    assert store.stored_bytes(ALICE) == len(data)


def test_a_body_longer_than_it_declared_is_cut_off_at_the_quota(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path, max_stored_mib=1)
    data = b"w" * (MIB + 1)
    upload = store.upload(ALICE, hashlib.sha256(data).hexdigest(), declared=None)
    upload.write(data)
    with pytest.raises(QuotaExceeded, match="artifacts.max_stored_mib"):
        upload.finish()
    assert store.stored_bytes(ALICE) == 0 and not list(store.incoming_dir.iterdir())


def test_unused_artifacts_expire_unless_a_waiting_job_names_them(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path, keep_unused_days=10)
    old, named, recent = (_kept(store, ALICE, bytes([i]) * 100) for i in range(3))
    theirs = _kept(store, BOB, b"b" * 100)
    month_ago = time.time() - 30 * 86400
    for digest, owner in ((old, ALICE), (named, ALICE), (theirs, BOB)):
        os.utime(store.path(owner, digest), (month_ago, month_ago))
    waiting = [SimpleNamespace(spec={"artifacts": [{"name": "backbone", "sha256": named, "bytes": 100}]})]
    in_use = artifacts_in_use(waiting)
    assert store.expired(in_use, ALICE) == [f"{ALICE}/{old}"]  # only the researcher asked about
    expired = store.expired(in_use)
    assert sorted(expired) == sorted([f"{ALICE}/{old}", f"{BOB}/{theirs}"])
    store.remove(expired)
    assert {p.name for p in (tmp_path / ALICE).iterdir()} == {named, recent}
    assert not (tmp_path / BOB / theirs).exists()


def test_staging_for_a_job_starts_the_keep_period_again(tmp_path: Path) -> None:
    from safetensors.torch import save
    import torch

    from jupyter_rapha.protocol.job_inputs import ArtifactEntry

    store = ArtifactStore(tmp_path / "artifacts", keep_unused_days=10)
    data = save({"w": torch.zeros(2)})
    digest = _kept(store, ALICE, data)
    month_ago = time.time() - 30 * 86400
    os.utime(store.path(ALICE, digest), (month_ago, month_ago))
    spec = SimpleNamespace(artifacts=(ArtifactEntry("backbone", digest, len(data)),))
    staged = store.stage(spec, ALICE, tmp_path / "job")  # type: ignore[arg-type]
    assert Path(staged["backbone"]).read_bytes() == data
    assert store.expired(set(), ALICE) == []


def _artifacts(tmp_path: Path, table: dict | None) -> ArtifactSettings:
    document: dict = {"edge": {"id": "e"}}
    if table is not None:
        document["artifacts"] = table
    return _settings(tmp_path, document).artifacts


def test_the_settings_have_safe_defaults_and_are_validated(tmp_path: Path) -> None:
    assert _artifacts(tmp_path, None) == _artifacts(tmp_path, {}) == ArtifactSettings(4096, 30)
    assert _artifacts(tmp_path, {"max_stored_mib": 10, "keep_unused_days": 2}) == ArtifactSettings(10, 2)
    for table, words in (({"max_stored_mib": 0}, "artifacts.max_stored_mib must be 1 or more"),
                         ({"max_stored_mib": "5"}, "artifacts.max_stored_mib in edge.toml must be a whole number"),
                         ({"keep_unused_days": 0}, "artifacts.keep_unused_days must be 1 or more"),
                         ({"max_stored_mb": 5}, "did you mean max_stored_mib")):
        with pytest.raises(BadInput, match=words):
            _artifacts(tmp_path, table)
