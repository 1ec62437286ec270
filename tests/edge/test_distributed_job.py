"""A job of several processes under one sandbox (``--processes``): real ranks, a real
gloo group on the job's own loopback, one real broker serving each rank its shard.

Two ranks per job, small cells: each job costs three Python processes that import torch.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import fields, replace

import pytest
import torch
from safetensors.torch import load

from edge_kernel.sandbox.runner import run_job
from tests.edge.conftest_data import HMAC_KEY, SYNTH_RECORDS, make_spec
from tests.processes import descendants, survivors

pytestmark = pytest.mark.slow

needs_root = pytest.mark.needs_root  # the air-gap builds namespaces

DDP_CELL = '''
import hashlib
import torch
import torch.distributed as dist

assert dist.is_initialized() and dist.get_backend() == "gloo"
assert (dist.get_rank(), dist.get_world_size()) == (rapha.rank, rapha.world_size)
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 5, stride=2), torch.nn.ReLU(),
                            torch.nn.Flatten(), torch.nn.Linear(4 * 14 * 14, 2))
ddp = torch.nn.parallel.DistributedDataParallel(model)
optimizer = torch.optim.SGD(ddp.parameters(), lr=0.05)
loader = rapha.loader(batch_size=8, shuffle=True, seed=rapha.rank)
seen = set()
for epoch in range(rapha.epochs):
    for batch in loader:
        loss = torch.nn.functional.cross_entropy(ddp(batch["image"]), batch["finding"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seen.update(hashlib.sha256(image.numpy().tobytes()).hexdigest() for image in batch["image"])
shards = [None] * rapha.world_size
dist.all_gather_object(shards, sorted(seen))
flat = torch.cat([p.detach().flatten() for p in model.parameters()])
spread = flat.clone()
dist.all_reduce(spread, op=dist.ReduceOp.MAX)
rapha.log(unique_seen=len(set().union(*shards)), overlap=len(set(shards[0]) & set(shards[1])),
          per_rank=len(seen), same_weights=float(torch.equal(spread, flat)), batches=len(loader))
if rapha.rank == 1:
    rapha.log(from_rank_one=1.0)  # only rank 0's outputs are the job's
rapha.save(model)
'''

FAILING_CELL = '''
import torch.distributed as dist

if rapha.rank == 1:
    raise ValueError("rank one fails")
dist.barrier()  # rank 0 waits here for a peer that is gone
rapha.log(reached=1.0)
'''


def _run(code, synth_entry, synth_folder, tmp_path, settings, **spec_options):
    spec = make_spec(code, **spec_options)
    spec = type(spec)(**{**spec.__dict__, "processes": 2})
    return run_job(spec, synth_entry, synth_folder, list(spec.fields), HMAC_KEY, tmp_path / "job", settings)


@needs_root
def test_two_ranks_train_with_gloo_on_disjoint_shards_counted_once(synth_folder, synth_entry, settings, tmp_path):
    outcome = _run(DDP_CELL, synth_entry, synth_folder, tmp_path, settings, params={"epochs": 2})
    assert (outcome.status, outcome.error, outcome.fault, outcome.exit_code) == ("completed", None, None, 0)
    half = SYNTH_RECORDS // 2
    # Each rank saw its own half, the halves never overlap, and the meter counted each
    # record once across ranks and epochs.
    assert outcome.metrics["per_rank"] == [half] and outcome.metrics["overlap"] == [0]
    assert outcome.metrics["unique_seen"] == [SYNTH_RECORDS] and outcome.metrics["batches"] == [half // 8]
    assert outcome.meter.records_used == len(outcome.meter.pseudonyms_hex) == SYNTH_RECORDS
    assert outcome.metrics["same_weights"] == [1.0]  # the gradients were all-reduced
    assert "from_rank_one" not in outcome.metrics
    weights = load(outcome.weights)
    assert set(weights) == {"0.weight", "0.bias", "3.weight", "3.bias"}
    assert all(torch.isfinite(t).all() for t in weights.values())


@needs_root
def test_a_failing_rank_ends_the_job_with_its_error_and_nothing_left_behind(synth_folder, synth_entry, settings,
                                                                           tmp_path):
    result: list = []
    job = threading.Thread(target=lambda: result.append(
        _run(FAILING_CELL, synth_entry, synth_folder, tmp_path, settings, max_seconds=60)))
    job.start()
    seen: set = set()
    while job.is_alive():  # every process below this one while the job runs: sandbox, launcher, ranks
        seen |= descendants(os.getpid())
        time.sleep(0.05)
    outcome = result[0]
    assert len(seen) >= 5 and survivors(seen) == set()  # warden, init, launcher and both ranks, all gone
    assert outcome.status == "failed" and outcome.exit_code == 1  # failed, not timed out: rank 0 was stopped
    assert outcome.error is not None and (outcome.error["type"], outcome.error["line"]) == ("ValueError", 5)
    assert "reached" not in outcome.metrics


NCCL_CELL = '''
import torch
import torch.distributed as dist

assert dist.get_backend() == "nccl"
value = torch.full((4,), float(rapha.rank + 1), device="cuda")
dist.all_reduce(value)
rapha.log(reduced=float(value[0]))
'''


@needs_root
@pytest.mark.needs_gpu
def test_two_ranks_meet_with_nccl(synth_folder, synth_entry, settings, tmp_path):
    # The sandbox sees a GPU only where the edge grants it one (sandbox.gpus).
    if "gpus" not in {f.name for f in fields(settings.sandbox)}:
        pytest.skip("this edge has no GPU passthrough setting (sandbox.gpus)")
    settings = replace(settings, sandbox=replace(settings.sandbox, gpus="all"))
    outcome = _run(NCCL_CELL, synth_entry, synth_folder, tmp_path, settings)
    assert (outcome.status, outcome.error, outcome.fault) == ("completed", None, None)
    assert outcome.metrics["reduced"] == [3.0]
