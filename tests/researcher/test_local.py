"""The --local runtime: synthetic records from a schema, the same rapha surface, budgets."""

from __future__ import annotations

import math

import pytest
import torch

from jupyter_rapha.local import make_runtime, run_local, synthetic_records
from jupyter_rapha.protocol.errors import BadInput, RaphaError
from jupyter_rapha.result import load_state_dict

SCHEMA = {"image": {"dtype": "float32", "shape": [1, 32, 32], "kind": "feature"},
          "finding": {"dtype": "int64", "shape": [], "kind": "label"},
          "age": {"dtype": "uint8", "shape": [1]}}


def test_records_follow_the_schema_and_the_seed():
    first, again, other = (synthetic_records(SCHEMA, 10, seed) for seed in (1, 1, 2))
    assert first["image"].shape == (10, 1, 32, 32) and first["image"].dtype == torch.float32
    assert first["finding"].shape == (10,) and first["finding"].dtype == torch.int64
    assert set(first["finding"].tolist()) <= {0, 1} and first["age"].dtype == torch.uint8
    assert torch.equal(first["image"], again["image"]) and not torch.equal(first["image"], other["image"])


def test_cohort_is_the_budget_and_epochs_do_not_count_twice():
    runtime = make_runtime(SCHEMA, ["image", "finding"], 20, {}, 3)
    loader = runtime.loader(batch_size=8, shuffle=True)
    assert len(loader) == math.ceil(20 / 8)
    sizes = [len(batch["finding"]) for _ in range(runtime.epochs) for batch in loader]
    assert sizes == [8, 8, 4] * 3 and runtime.records_used == 20
    assert set(runtime.schema) == {"image", "finding"}


def test_cohort_is_capped_by_the_synthetic_size():
    assert make_runtime(SCHEMA, None, 10_000, {}, 1, synthetic_size=50).cohort_size == 50


def test_shuffle_changes_order_per_pass_reproducibly():
    runtime = make_runtime(SCHEMA, ["finding"], 32, {}, 2)
    loader = runtime.loader(batch_size=32, shuffle=True, seed=7)
    first, second = (next(iter(loader))["finding"] for _ in range(2))
    again = next(iter(make_runtime(SCHEMA, ["finding"], 32, {}, 2).loader(batch_size=32, shuffle=True, seed=7)))
    assert torch.equal(first, again["finding"])
    assert sorted(first.tolist()) == sorted(second.tolist())


def test_run_local_trains_in_the_namespace_and_restores_it():
    code = ("import torch\nmodel = torch.nn.Linear(1, 2)\nrapha.log(loss=torch.tensor(0.5), step=1)\n"
            "rapha.save(model)\nseen_params = rapha.params\n")
    namespace = {"rapha": "mine"}
    outcome = run_local(code, namespace, make_runtime(SCHEMA, ["age"], 5, {"lr": 0.1}, 1))
    assert namespace["rapha"] == "mine" and isinstance(namespace["model"], torch.nn.Module)
    assert namespace["seen_params"] == {"lr": 0.1} and outcome.metrics == {"loss": [0.5], "step": [1.0]}
    assert set(load_state_dict(outcome.weights)) == {"weight", "bias"}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "high", True, torch.ones(3)])
def test_log_refuses_what_the_edge_would_refuse(value):
    runtime = make_runtime(SCHEMA, ["age"], 5, {}, 1)
    with pytest.raises(BadInput):
        runtime.log(loss=value)


def test_save_is_required_and_checked():
    with pytest.raises(RaphaError, match="rapha.save"):
        run_local("x = 1\n", {}, make_runtime(SCHEMA, ["age"], 5, {}, 1))
    runtime = make_runtime(SCHEMA, ["age"], 5, {}, 1)
    with pytest.raises(BadInput):
        runtime.save({"w": [1, 2]})
    with pytest.raises(BadInput):
        runtime.save({})


def test_cell_errors_come_back_with_their_line_and_message():
    from jupyter_rapha.local import CellFailed

    with pytest.raises(CellFailed) as caught:
        run_local("a = 1\nb = a / 0\n", {}, make_runtime(SCHEMA, ["age"], 5, {}, 1))
    assert (caught.value.error_type, caught.value.line, caught.value.detail) == \
        ("ZeroDivisionError", 2, "division by zero")
    assert isinstance(caught.value.__cause__, ZeroDivisionError)  # the original, for a debugger
    with pytest.raises(CellFailed) as caught:
        run_local("a = 1\nfor x in range(3):\n  print(x\n", {}, make_runtime(SCHEMA, ["age"], 5, {}, 1))
    assert (caught.value.error_type, caught.value.line) == ("SyntaxError", 3)


def test_bad_schemas_and_fields():
    with pytest.raises(BadInput, match="no field"):
        make_runtime(SCHEMA, ["pixels"], 5, {}, 1)
    with pytest.raises(BadInput):
        make_runtime({}, None, 5, {}, 1)
    with pytest.raises(BadInput):
        make_runtime({"x": {"dtype": "complex64", "shape": []}}, None, 5, {}, 1)
    with pytest.raises(BadInput):
        make_runtime(SCHEMA, None, 0, {}, 1)


def test_garbage_weights_are_refused():
    from jupyter_rapha.protocol.errors import ReleaseDenied
    with pytest.raises(ReleaseDenied):
        load_state_dict(b"\x80\x04not safetensors")


# --- the edge's metric-name rule, met before the cell runs ------------------------------

LONG_NAME = "validation_loss_of_the_held_back_fold_after_warmup_abcde"  # 56 characters
NAMED_CELL = f"import torch\nx = 1\nrapha.log({LONG_NAME}=0.5)\nrapha.save(torch.nn.Linear(1, 1))\n"


def test_a_metric_name_the_edge_refuses_stops_the_dry_run_before_it_runs():
    from jupyter_rapha.local import MetricNamesRefused
    from jupyter_rapha.protocol.contract import metric_name_refusal

    namespace: dict = {}
    with pytest.raises(MetricNamesRefused) as caught:
        run_local(NAMED_CELL, namespace, make_runtime(SCHEMA, ["age"], 5, {}, 1), first_line=2)
    assert caught.value.message == f"line 4: {metric_name_refusal(LONG_NAME)}"  # the editor's line
    assert "x" not in namespace  # nothing of the cell ran


def test_a_name_built_at_run_time_is_refused_by_the_same_rule():
    from jupyter_rapha.local import CellFailed
    from jupyter_rapha.protocol.contract import METRIC_NAME_RULE

    with pytest.raises(CellFailed) as caught:
        run_local(f"rapha.log(**{{'{LONG_NAME}': 0.5}})\n", {}, make_runtime(SCHEMA, ["age"], 5, {}, 1))
    assert caught.value.line == 1 and METRIC_NAME_RULE in caught.value.detail


def test_the_loader_shuffles_by_default_like_the_edge():
    runtime = make_runtime(SCHEMA, ["finding"], 64, {}, 1)
    assert runtime.loader().shuffle is True
    assert make_runtime(SCHEMA, ["finding"], 64, {}, 1).loader(shuffle=False).shuffle is False
