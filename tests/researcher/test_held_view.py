"""What the researcher sees of a held job: "held: checks running", "held for review",
the checks' figures as they come, and a refused job's reasons; a job held for review is
neither final nor a failure, and nothing is fetched for it."""

from __future__ import annotations

import pytest

from jupyter_rapha.client import JobHeld, final_error, held_for_review, require_finished
from jupyter_rapha.progress import JobProgress, ProgressLine
from jupyter_rapha.magic import error_lines
from jupyter_rapha.protocol.errors import BadInput, ReleaseDenied
from jupyter_rapha.training import collect

JOB = "ab" * 16


def event(seq, kind, **data):
    return {"seq": seq, "ts": f"2026-01-01T00:00:{seq:02d}Z", "kind": kind, "data": data}


HELD_EVENTS = [
    event(1, "state", state="running"),
    event(2, "progress", records_used=48, batches=12, epochs=1, cohort_size=48),
    event(3, "state", state="held", records_used=48, checks_total=3, checks_done=0),
    event(4, "progress", records_used=48, checks_total=3, checks_done=1, parameters_per_record=20.83),
    event(5, "progress", records_used=48, checks_total=3, checks_done=2, parameters_per_record=20.83,
          copies_records_matched=0, copies_max_correlation=0.21),
]


def model(events):
    progress = JobProgress(JOB, epochs=1)
    for e in events:
        progress.update(e)
    return progress


def test_checks_running_then_their_figures_as_they_come():
    progress = model(HELD_EVENTS[:3])
    assert progress.state_text() == "ran; outputs held: checks running (0/3)" and not progress.final
    progress = model(HELD_EVENTS)
    assert progress.state_text() == "ran; outputs held: checks running (2/3)"
    line = progress.line()
    assert "record copies 0 (max r 0.21)" in line and "20.83 params/record" in line, line


def test_held_for_review_says_how_many_approvals():
    review = event(6, "progress", checks_total=3, checks_done=3, mia_auc=0.52, mia_checkable=1,
                   review_needed=1, approvals=0, approvals_needed=2)
    progress = model([*HELD_EVENTS, review])
    assert progress.state_text() == "ran; outputs held for review (0/2 approvals)"
    assert "MIA AUC 0.52" in progress.line()


def test_the_text_view_writes_a_line_when_a_figure_comes(capsys):
    class Stream:
        lines: list[str] = []

        def write(self, text):
            self.lines.append(text)

        def flush(self):
            pass

    stream = Stream()
    view = ProgressLine(JOB, epochs=1, stream=stream)
    for e in HELD_EVENTS:
        view(e)
    text = "".join(stream.lines)
    assert "checks running (1/3)" in text and "checks running (2/3)" in text


def status(state, **progress):
    return {"job_id": JOB, "state": state, "reasons": [], "gates": [], "progress": progress}


def test_held_for_review_is_a_wait_not_a_failure():
    waiting = status("held", review_needed=1, approvals=1, approvals_needed=2)
    assert held_for_review(waiting) and not held_for_review(status("held", checks_done=1))
    error = final_error(waiting)
    assert isinstance(error, JobHeld) and "1 of 2 approvals" in error.message
    assert "rapha fetch" in error.diagnostics()
    with pytest.raises(JobHeld):
        require_finished(waiting, BadInput("not yet"))
    with pytest.raises(BadInput):
        require_finished(status("held", checks_done=1), BadInput("not yet"))


def test_a_refused_job_tells_the_reason_in_the_notebook():
    refused = {**status("refused"), "reasons": ["release: an output checker refused the release: identifiable"]}
    error = final_error(refused)
    assert isinstance(error, ReleaseDenied)
    assert error_lines(error) == [
        f"rapha: job {JOB} ran, but the edge refused to release its outputs",
        "  - release: an output checker refused the release: identifiable"]


class HeldGateway:
    """The extension's gateway for a job that ends held for review: its event stream
    would stay open for days, and nothing may be fetched."""

    def __init__(self):
        self.fetched = []

    def follow(self, job_id, after):
        yield from HELD_EVENTS
        yield event(6, "progress", checks_total=3, checks_done=3, review_needed=1, approvals=0, approvals_needed=1)
        raise AssertionError("collect kept following a job held for review")

    def status(self, job_id):
        return status("held", review_needed=1, approvals=0, approvals_needed=1)

    def output(self, job_id, what):
        self.fetched.append(what)


def test_collect_stops_at_review_and_fetches_nothing():
    gateway, seen = HeldGateway(), []
    with pytest.raises(JobHeld):
        collect(gateway, JOB, seen.append)
    assert gateway.fetched == [] and len(seen) == 6


def test_awaiting_approval_is_a_wait_not_a_failure():
    from jupyter_rapha.client import JobAwaitingApproval, waits_for_people

    waiting = status("awaiting_approval", approvals=1, approvals_needed=2)
    assert waits_for_people(waiting) and not held_for_review(waiting)
    error = final_error(waiting)
    assert isinstance(error, JobAwaitingApproval) and isinstance(error, JobHeld)
    assert "data stewards to approve it before it runs (1 of 2 approvals)" in error.message
    assert "rapha fetch" in error.diagnostics()
    with pytest.raises(JobAwaitingApproval):
        require_finished(waiting, BadInput("not yet"))


class WaitingGateway(HeldGateway):
    def follow(self, job_id, after):
        yield event(1, "state", state="awaiting_approval", approvals=0, approvals_needed=1)
        raise AssertionError("collect kept following a job awaiting approval")

    def status(self, job_id):
        return status("awaiting_approval", approvals=0, approvals_needed=1)


def test_collect_stops_at_awaiting_approval_and_fetches_nothing():
    from jupyter_rapha.client import JobAwaitingApproval

    gateway, seen = WaitingGateway(), []
    with pytest.raises(JobAwaitingApproval):
        collect(gateway, JOB, seen.append)
    assert gateway.fetched == [] and len(seen) == 1
