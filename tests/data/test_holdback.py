"""The held-back records (membership-inference check): size rules, the policy obligation,
and a real broker that never serves, counts or commits a held-back record."""

from __future__ import annotations

import pytest

from edge_kernel.data.broker import Broker
from edge_kernel.data.dicom_folder import DicomFolderSource
from edge_kernel.data.holdback import Holdback, parse_holdback, split_cohort
from edge_kernel.data.provenance import record_sets, save_provenance
from edge_kernel.data.pseudonym import derive_seed
from edge_kernel.gates.obligations import enforceable
from jupyter_rapha.protocol.errors import PolicyDenied
from jupyter_rapha.protocol.merkle import MerkleTree
from tests.edge.conftest_data import HMAC_KEY, SYNTH_RECORDS
from tests.edge.test_broker import epoch, open_loader, served

HELD_BACK = 16  # of SYNTH_RECORDS (64): a quarter, so the job keeps more than half


# --- how many -------------------------------------------------------------------------

@pytest.mark.parametrize(("cohort", "held_back"), [
    (10_000, 1000),  # the fraction, above the minimum
    (1000, 100),
    (501, 51),  # rounded up: never fewer than the fraction asks for
    (120, 50),  # the minimum, above the fraction (the demo edge)
    (100, 50),  # exactly half is left: still held back
    (99, 0),  # 50 would leave less than half: none, and the figures say 0
    (64, 0),
    (0, 0),
])
def test_the_default_holds_back_a_tenth_and_at_least_fifty(cohort, held_back):
    assert Holdback().size(cohort) == held_back


def test_a_policy_sets_its_own_fraction_and_minimum():
    holdback = parse_holdback({"fraction": 0.25, "minimum": 8})
    assert (holdback.size(64), holdback.size(20), holdback.size(15)) == (16, 8, 0)


@pytest.mark.parametrize("value", [
    {"fraction": 0}, {"fraction": 0.6}, {"fraction": True}, {"fraction": "0.1"}, {"minimum": 0},
    {"minimum": 2.5}, {"minimum": False}, {"fraction": 0.1, "minimum": 50, "seed": 1}, [0.1, 50], 0.1, "yes",
])
def test_a_malformed_holdback_obligation_denies_the_job(value):
    with pytest.raises(PolicyDenied) as denied:
        enforceable({"holdback": value})
    assert "holdback" in denied.value.reasons[0]


def test_the_obligation_becomes_a_limit_and_its_absence_none():
    assert enforceable({"holdback": {"fraction": 0.1, "minimum": 50}}).holdback == Holdback(0.1, 50)
    assert enforceable({"max_epochs": 3}).holdback is None


# --- which ----------------------------------------------------------------------------

def test_the_split_is_disjoint_complete_and_fixed_by_its_seed():
    records = list(range(200))
    held, rest = split_cohort(records, 40, seed=9)
    assert len(held) == 40 and len(rest) == 160
    assert sorted(held + rest) == records
    assert split_cohort(records, 40, seed=9) == (held, rest)
    assert split_cohort(records, 40, seed=10)[0] != held
    assert split_cohort(records, 0, seed=9) == ([], records)


def test_the_seed_needs_the_hospital_key_so_a_job_cannot_predict_its_holdback():
    records = list(range(200))
    job_id = "a" * 32
    ours = split_cohort(records, 40, derive_seed(HMAC_KEY, "holdback", job_id))[0]
    guessed = split_cohort(records, 40, derive_seed(b"a key the researcher guessed....", "holdback", job_id))[0]
    cohort_seed = split_cohort(records, 40, derive_seed(HMAC_KEY, "cohort", job_id))[0]
    assert ours != guessed and ours != cohort_seed


# --- a real broker --------------------------------------------------------------------

def _broker(folder, entry, held_back=HELD_BACK, max_records=SYNTH_RECORDS) -> Broker:
    source = DicomFolderSource(folder, entry, ["image", "finding"], HMAC_KEY)
    return Broker(source, source.index(), max_records, 3, holdback_size=held_back, holdback_seed=11)


@pytest.fixture(scope="module")
def served_job(synth_folder, synth_entry):
    """A job that reads every record it can, twice, with a budget of the whole dataset."""
    broker = _broker(synth_folder, synth_entry)
    with served(broker) as (channel, _):
        reply = open_loader(channel, batch_size=8)
        batches = epoch(channel, reply["loader"]) + epoch(channel, reply["loader"])
    return broker, reply, batches


def test_held_back_records_are_never_served(served_job, synth_folder, synth_entry):
    broker, reply, batches = served_job
    assert reply["records"] == SYNTH_RECORDS - HELD_BACK  # the job is told only of its cohort
    source = DicomFolderSource(synth_folder, synth_entry, ["image"], HMAC_KEY)
    image_of = {ref.pseudonym: source.load(ref)["image"].tobytes() for ref in source.index().records}
    held_back_images = {image_of[ref.pseudonym] for ref in broker.held_back}
    served_images = {image.tobytes() for batch in batches for image in batch.arrays["image"]}
    assert len(held_back_images) == HELD_BACK and len(served_images) == SYNTH_RECORDS - HELD_BACK
    assert served_images.isdisjoint(held_back_images)


def test_held_back_records_are_not_counted_nor_in_the_merkle_root(served_job):
    broker, _, _ = served_job
    summary = broker.summary()
    used = {bytes.fromhex(p) for p in summary.pseudonyms_hex}
    held_back = {bytes.fromhex(p) for p in summary.held_back_hex}
    assert summary.records_used == len(used) == SYNTH_RECORDS - HELD_BACK  # billed per record used
    assert summary.holdback_size == HELD_BACK and used.isdisjoint(held_back)
    assert summary.records_root_hex == MerkleTree.sorted_unique(sorted(used)).root.hex()
    assert summary.cohort_size == SYNTH_RECORDS - HELD_BACK
    held_back_known = {record for record, _, status in summary.records_known if status == "held back"}
    assert held_back_known == held_back


def test_the_budget_never_reaches_into_the_held_back_records(synth_folder, synth_entry):
    broker = _broker(synth_folder, synth_entry, max_records=SYNTH_RECORDS - HELD_BACK + 5)
    held_back = {ref.pseudonym for ref in broker.held_back}
    assert len(broker.cohort) == SYNTH_RECORDS - HELD_BACK
    assert held_back.isdisjoint(ref.pseudonym for ref in broker.cohort)


def test_without_a_holdback_the_cohort_is_drawn_as_before(synth_folder, synth_entry):
    plain = _broker(synth_folder, synth_entry, held_back=0, max_records=20)
    source = DicomFolderSource(synth_folder, synth_entry, ["image", "finding"], HMAC_KEY)
    before = Broker(source, source.index(), 20, 3)
    assert [r.pseudonym for r in plain.cohort] == [r.pseudonym for r in before.cohort]
    assert plain.summary().held_back_hex == ()


def test_the_held_back_pseudonyms_are_kept_edge_side_with_the_job(served_job, tmp_path):
    broker, _, _ = served_job
    summary = broker.summary()
    save_provenance(tmp_path, summary)
    sets = record_sets(tmp_path)
    assert [p.hex() for p in sets.used] == list(summary.pseudonyms_hex)
    assert [p.hex() for p in sets.held_back] == list(summary.held_back_hex)
    assert len(sets.held_back) == HELD_BACK
