"""The membership check's whole path on the edge side, with a real job: records held back
by the broker, the program exported at rapha.save and carried out by the runner, both
record sets kept in provenance and reloaded through the dataset's source, written and
read as the check process does, and figured."""

from __future__ import annotations

import dataclasses

from edge_kernel.data.holdback import Holdback
from edge_kernel.data.provenance import record_sets, save_provenance
from edge_kernel.data.reload import PSEUDONYM_KEY_FILE, reload_records
from edge_kernel.release.check_main import membership_check, read_records
from edge_kernel.release.check_runner import write_records
from edge_kernel.sandbox.runner import run_job
from edge_kernel.settings import Settings
from tests.edge.conftest_data import HMAC_KEY, SYNTH_RECORDS, make_spec

CELL = '''
import torch
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 32, 64), torch.nn.ReLU(),
                            torch.nn.Linear(64, 2))
optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
for epoch in range(rapha.epochs):
    for batch in rapha.loader(batch_size=16):
        loss = torch.nn.functional.cross_entropy(model(batch["image"]), batch["finding"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
rapha.save(model)
'''


def test_a_real_job_is_figured_on_its_own_and_its_held_back_records(synth_folder, synth_entry, tmp_path):
    settings = Settings(config_dir=tmp_path, edge_id="test-edge")
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / PSEUDONYM_KEY_FILE).write_text(HMAC_KEY.hex())
    spec = dataclasses.replace(make_spec(CELL, params={"epochs": 5}), dataset=synth_entry.name)
    outcome = run_job(spec, synth_entry, synth_folder, list(spec.fields), HMAC_KEY, tmp_path / "job" / "work",
                      settings, holdback=Holdback(0.25, 8))
    assert outcome.status == "completed", (outcome.error, outcome.fault)
    save_provenance(tmp_path / "job", outcome.meter)

    sets = record_sets(tmp_path / "job")
    used = reload_records(synth_entry, sets.used, spec, settings)
    held_back = reload_records(synth_entry, sets.held_back, spec, settings)
    check_dir = tmp_path / "checks"
    check_dir.mkdir()
    write_records(check_dir / "used.npz", used)
    write_records(check_dir / "held_back.npz", held_back)
    (check_dir / "weights.safetensors").write_bytes(outcome.weights)
    (check_dir / "program.pt2").write_bytes(outcome.program)
    schema = {name: synth_entry.schema()[name] for name in spec.fields}  # as release/records.py gives it

    figures = membership_check(check_dir, read_records(check_dir / "used.npz"),
                               read_records(check_dir / "held_back.npz"), schema)
    assert figures["status"] == "checked", figures
    assert (figures["records_used"], figures["holdback_size"]) == (SYNTH_RECORDS * 3 // 4, SYNTH_RECORDS // 4)
    assert 0.5 <= figures["auc"] <= 1.0 and 0.0 <= figures["tpr_at_1pct_fpr"] <= 1.0
