"""The preflight's dry run knows DP mode: it reads the mode from the cell as the edge does,
so on a dataset that requires differential privacy a standard cell is refused before it is
sent, with the edge's reason, and a cell that calls rapha.fit_private is not."""

from __future__ import annotations

from jupyter_rapha.preflight import preflight
from tests.researcher.test_preflight import ALICE, JOB, published

SPECIAL = {"name": "synthetic-cxr", "fields": ["finding", "image"], "sensitivity": "special-category",
           "cohort_size": 100, "max_records": 1000, "price": "0"}
STANDARD_CELL = "import torch\nfor batch in rapha.loader(batch_size=8):\n    pass\n"
DP_CELL = ("import torch\nmodel = torch.nn.Linear(2, 2)\n"
           "rapha.fit_private(model, lambda o, b: o.mean(), epochs=1, batch_size=8, lr=0.1, max_grad_norm=1.0)\n")


def test_a_standard_cell_on_special_category_data_is_refused_before_it_is_sent():
    result = preflight(STANDARD_CELL, job=JOB, policy=published(), researcher=ALICE, dataset=SPECIAL)
    assert not result.likely_allowed
    assert any("may only be trained with differential privacy" in line for line in result.explanations)


def test_a_dp_cell_on_special_category_data_passes_the_dry_run():
    result = preflight(DP_CELL, job=JOB, policy=published(), researcher=ALICE, dataset=SPECIAL)
    assert result.likely_allowed, result.explanations


def test_a_standard_cell_on_an_unknown_dataset_is_left_to_the_edge():
    assert preflight(STANDARD_CELL, job=JOB, policy=published(), researcher=ALICE).likely_allowed
