"""The parts of a distributed job (``--processes``) that need no sandbox: the spec field,
the edge's limit, the gates' refusals, the policy input, the air-gap command line and the
broker's per-rank shards, served for real over socketpairs."""

from __future__ import annotations

import socket
import threading
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from edge_kernel.data.broker import Broker
from edge_kernel.data.dicom_folder import DicomFolderSource
from edge_kernel.gates.pipeline import GateContext
from edge_kernel.gates.policy import build_policy_input
from edge_kernel.gates.spec import SpecGate
from edge_kernel.sandbox.airgap import airgap_command
from edge_kernel.researchers import Researcher
from edge_kernel.settings import SandboxSettings, Settings, load_settings
from edge_kernel.wire.channel import Channel
from jupyter_rapha.protocol.errors import BadInput, SandboxFault
from jupyter_rapha.protocol.jobspec import parse_jobspec
from jupyter_rapha.protocol.keys import PrivateKey
from tests.edge.conftest_data import HMAC_KEY, SYNTH_RECORDS
from tests.edge.test_broker import epoch, image_keys, open_loader
from tests.harness import init_edge
from tests.protocol.test_jobspec import spec_dict

LIMITS = dict(max_memory_bytes=1 << 30, max_cpu_seconds=10, max_wall_seconds=10, max_processes=64,
              max_file_bytes=1 << 20)


def test_processes_is_part_of_the_signed_spec_and_one_is_left_out():
    assert "processes" not in parse_jobspec(spec_dict()).to_dict()
    spec = parse_jobspec(spec_dict(processes=4))
    assert spec.processes == 4 and spec.to_dict()["processes"] == 4
    assert parse_jobspec(spec.to_dict()) == spec
    for bad in (0, -1, 65, "2", True, 2.0):
        with pytest.raises(BadInput, match="'processes' must be a whole number from 1 to 64"):
            parse_jobspec(spec_dict(processes=bad))


def _with_sandbox_line(original: str, line: str) -> str:
    if "[sandbox]" in original:
        return original.replace("[sandbox]", f"[sandbox]\n{line}", 1)
    return original + f"\n[sandbox]\n{line}\n"


def test_the_edge_limit_defaults_to_one_and_a_bad_one_stops_the_start(tmp_path):
    root = tmp_path / "edge"
    init_edge(root, records=4)
    assert load_settings(root).sandbox.max_processes == 1
    toml = root / "edge.toml"
    original = toml.read_text()
    for bad in ("0", "65", '"4"'):
        toml.write_text(_with_sandbox_line(original, f"max_processes = {bad}"))
        with pytest.raises(BadInput, match="sandbox.max_processes"):
            load_settings(root)
    toml.write_text(_with_sandbox_line(original, "max_processes = 4"))
    assert load_settings(root).sandbox.max_processes == 4


def _context(settings: Settings, **overrides) -> GateContext:
    key = PrivateKey.generate().public
    researcher = Researcher("alice", key.to_text())
    spec = parse_jobspec(spec_dict(researcher_key_id=researcher.key_id, **overrides))
    return GateContext(spec, "r" * 64, researcher, None, settings)


def test_the_spec_gate_refuses_more_processes_than_the_edge_allows_naming_the_setting():
    one = Settings(config_dir=Path("/nonexistent"), edge_id="t")
    result = SpecGate().check(_context(one, processes=2))
    assert result.outcome == "deny"
    assert any("2 processes; this edge allows at most 1 (sandbox.max_processes)" in r for r in result.reasons)
    two = replace(one, sandbox=SandboxSettings(max_processes=2))
    assert not any("processes" in r for r in SpecGate().check(_context(two, processes=2)).reasons)
    assert any("processes" in r for r in SpecGate().check(_context(two, processes=3)).reasons)


def test_a_dp_job_of_several_processes_is_refused():
    code = "rapha.fit_private(model, loss)\n"
    from jupyter_rapha.protocol.jobspec import code_digest
    settings = Settings(config_dir=Path("/nonexistent"), edge_id="t", sandbox=SandboxSettings(max_processes=4))
    ctx = _context(settings, processes=2, code=code, code_sha256=code_digest(code))
    assert any("differentially private job runs as one process" in r for r in SpecGate().check(ctx).reasons)


def test_the_policy_input_always_carries_the_process_count():
    settings = Settings(config_dir=Path("/nonexistent"), edge_id="t")
    assert build_policy_input(_context(settings))["job"]["processes"] == 1
    assert build_policy_input(_context(settings, processes=3))["job"]["processes"] == 3


def test_the_inet_loopback_filter_is_asked_for_only_by_a_distributed_job(tmp_path):
    plain = airgap_command(Path("/bin/rapha-airgap"), ["/bin/true"], workdir=tmp_path, **LIMITS)
    assert "--allow-inet-loopback" not in plain
    distributed = airgap_command(Path("/bin/rapha-airgap"), ["/bin/true"], workdir=tmp_path, **LIMITS,
                                 allow_inet_loopback=True)
    assert distributed.index("--allow-inet-loopback") < distributed.index("--")


@contextmanager
def ranks_served(broker: Broker, world_size: int):
    with ExitStack() as stack:
        channels, threads = [], []
        for rank in range(world_size):
            broker_end, job_end = socket.socketpair()
            thread = threading.Thread(target=broker.serve, args=(broker_end,), kwargs={"rank": rank})
            thread.start()
            threads.append(thread)
            stack.callback(job_end.close)
            channels.append(Channel(job_end, max_payload_bytes=1 << 30))
        yield channels
    for thread in threads:
        thread.join(5)
        assert not thread.is_alive()


def test_each_rank_walks_its_own_shard_and_records_are_counted_once(synth_folder, synth_entry):
    source = DicomFolderSource(synth_folder, synth_entry, ("image", "finding"), HMAC_KEY)
    broker = Broker(source, source.index(), SYNTH_RECORDS - 1, 1, world_size=2)  # 63: shards of 31
    with ranks_served(broker, 2) as (first, second):
        # the same seed on both ranks: disjoint all the same, since each walks its own shard
        replies = [open_loader(channel, batch_size=8, seed=5) for channel in (first, second)]
        assert [(r["records"], r["batches"]) for r in replies] == [(31, 4), (31, 4)]
        shards = [set(image_keys(epoch(channel, 0))) for channel in (first, second)]
        again = [set(image_keys(epoch(channel, 0))) for channel in (first, second)]
    assert len(shards[0]) == len(shards[1]) == 31 and not shards[0] & shards[1]
    assert again == shards  # an epoch reshuffles within the shard, never across
    summary = broker.summary()
    assert summary.records_used == 62 and summary.cohort_size == 63  # the 63rd record is never served
    assert broker.progress()["epochs"] == 2  # passes side by side, not one per rank


def test_a_broker_refuses_an_impossible_number_of_ranks(synth_folder, synth_entry):
    source = DicomFolderSource(synth_folder, synth_entry, ("image",), HMAC_KEY)
    for bad in (0, 65):
        with pytest.raises(SandboxFault):
            Broker(source, source.index(), 8, 1, world_size=bad)
