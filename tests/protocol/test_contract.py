"""The one contract for what leaves: every checker uses the same metric-name rule and the
same limits, and the job states are one enum everywhere."""

from __future__ import annotations

import pytest

from edge_kernel import store
from edge_kernel.release.metrics import check_metrics
from edge_kernel.sandbox import runner
from jupyter_rapha import client
from jupyter_rapha import progress
from jupyter_rapha.protocol.contract import (ACTIVE_STATES, CANCELLABLE_STATES, METRIC_NAME_RULE, OUTPUT_LIMITS,
                                             TERMINAL_STATES, JobState, OutputLimits, is_metric_name,
                                             metric_name_refusal)
from jupyter_rapha.protocol.errors import BadInput, ReleaseDenied
from jupyter_rapha.protocol.jobspec import OutputPolicy, parse_jobspec
from tests.protocol.test_jobspec import spec_dict

NAME_56 = "validation_loss_of_the_held_back_fold_after_warmup_abcde"  # passed two of the four old rules
REFUSED_NAMES = ["", "1loss", "val.loss", "val-loss", "bad name", "loss\n", "a" * 49, NAME_56, "lösung", None, 3]


def test_a_56_character_name_is_what_the_old_rules_disagreed_on():
    assert len(NAME_56) == 56 and NAME_56.isidentifier()


@pytest.mark.parametrize("name", ["loss", "a", "A_1", "a" * 48])
def test_plain_names_up_to_48_characters_pass(name):
    assert is_metric_name(name) and metric_name_refusal(name) is None


@pytest.mark.parametrize("name", REFUSED_NAMES)
def test_every_other_name_is_refused_with_the_one_message(name):
    assert not is_metric_name(name)
    refusal = metric_name_refusal(name)
    assert refusal is not None and refusal.endswith(METRIC_NAME_RULE)


def test_a_refused_name_is_quoted_shortened():
    refusal = metric_name_refusal("x" * 10_000)
    assert refusal is not None and len(refusal) < 300


@pytest.mark.parametrize("name", REFUSED_NAMES[:-2])
def test_the_job_spec_refuses_what_the_release_check_refuses(name):
    with pytest.raises(BadInput) as info:
        parse_jobspec(spec_dict(output_policy={"metric_names": [name]}))
    assert METRIC_NAME_RULE in info.value.diagnostics()
    with pytest.raises(ReleaseDenied):
        check_metrics({name: [1.0]}, OutputPolicy(metric_names=(name,)))


def test_the_job_spec_refuses_more_declared_names_than_may_leave():
    names = [f"m{i}" for i in range(OUTPUT_LIMITS.metric_names + 1)]
    with pytest.raises(BadInput):
        parse_jobspec(spec_dict(output_policy={"metric_names": names}))
    parse_jobspec(spec_dict(output_policy={"metric_names": names[:-1]}))


def test_the_job_runtime_refuses_the_name_before_the_budget_is_spent(tmp_path):
    pytest.importorskip("torch")
    from edge_kernel.inside.runtime import Rapha

    rapha = Rapha(None, {}, {}, tmp_path)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=METRIC_NAME_RULE):
        rapha.log(**{NAME_56: 1.0})
    rapha.log(**{"a" * 48: 1.0})


def test_limits_are_data_with_safe_defaults():
    assert OutputPolicy().max_metric_points == OUTPUT_LIMITS.default_metric_points
    assert OutputPolicy().max_weights_bytes == OUTPUT_LIMITS.default_weights_bytes
    with pytest.raises(BadInput):
        parse_jobspec(spec_dict(output_policy={"max_metric_points": OUTPUT_LIMITS.metric_points + 1}))
    for bad in ({"metrics_bytes": 0}, {"metric_names": True}, {"default_metric_points": 10, "metric_points": 5}):
        with pytest.raises(ValueError):
            OutputLimits(**bad)
    assert not hasattr(runner, "MAX_METRICS_BYTES")  # one limit, read from the contract


def test_job_states_are_the_wire_words():
    assert [s.value for s in JobState] == ["submitted", "awaiting_approval", "running", "held", "completed",
                                           "refused", "denied", "failed", "cancelled"]
    assert TERMINAL_STATES == {"completed", "refused", "denied", "failed", "cancelled"}
    assert ACTIVE_STATES == {"submitted", "awaiting_approval", "running", "held"}
    assert CANCELLABLE_STATES == {"submitted", "awaiting_approval", "running"}
    assert JobState.HELD not in TERMINAL_STATES and JobState.HELD not in CANCELLABLE_STATES


def test_every_surface_reads_the_states_from_the_contract():
    assert set(store.STATES) == set(JobState) and set(store.TERMINAL) == TERMINAL_STATES
    assert client.FINAL_STATES == TERMINAL_STATES and progress.FINAL == TERMINAL_STATES
    assert set(progress.STATE_TEXT) == set(JobState)


def test_a_refused_release_is_a_release_refusal_for_the_researcher():
    error = client.final_error({"job_id": "j", "state": "refused", "reasons": ["copies: a record in the weights"]})
    assert isinstance(error, ReleaseDenied) and error.reasons == ["copies: a record in the weights"]
    assert client.final_error({"job_id": "j", "state": "completed"}) is None


def test_a_released_metrics_file_of_the_most_points_fits_what_a_verifier_reads():
    import json

    longest_point = len(json.dumps([-1.2345678901234567e-308, 0.0])) - len(json.dumps([0.0]))  # one more point
    longest_names = OUTPUT_LIMITS.metric_names * len(json.dumps({"a" * 48: []}))
    assert longest_point * OUTPUT_LIMITS.metric_points + longest_names < OUTPUT_LIMITS.released_metrics_bytes
