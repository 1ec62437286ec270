"""Job progress as a researcher reads it (tqdm / W&B style): labelled bars with numbers,
the last metrics, elapsed and ETA, a loss chart with axes, states in words; fed with an
event sequence recorded from a real edge, then once live against a demo edge."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest

from jupyter_rapha.progress import JobProgress, ProgressLine, ProgressWidget, clock

JOB = "0b9f" + "0" * 28
# Recorded from a demo edge: 3 epochs over a 48-record cohort, batch size 4 (12 batches an
# epoch), a fresh rapha.loader() each epoch, rapha.log(loss=...) each epoch.
RECORDED = [
    {"seq": 1, "ts": "2026-12-02T17:02:32.660282Z", "kind": "state", "data": {"state": "submitted"}},
    {"seq": 2, "ts": "2026-12-02T17:02:35.292635Z", "kind": "state", "data": {"state": "running"}},
    {"seq": 3, "ts": "2026-12-02T17:02:36.412000Z", "kind": "progress",
     "data": {"records_used": 0, "batches": 0, "epochs": 0, "cohort_size": 48}},
    {"seq": 4, "ts": "2026-12-02T17:02:37.101000Z", "kind": "progress",
     "data": {"records_used": 8, "batches": 2, "epochs": 1, "cohort_size": 48}},
    {"seq": 5, "ts": "2026-12-02T17:02:37.622000Z", "kind": "progress",
     "data": {"records_used": 32, "batches": 8, "epochs": 1, "cohort_size": 48}},
    {"seq": 6, "ts": "2026-12-02T17:02:38.143000Z", "kind": "progress",
     "data": {"records_used": 48, "batches": 12, "epochs": 1, "cohort_size": 48}},
    {"seq": 7, "ts": "2026-12-02T17:02:38.664000Z", "kind": "progress",
     "data": {"records_used": 48, "batches": 23, "epochs": 2, "cohort_size": 48}},
    {"seq": 8, "ts": "2026-12-02T17:02:39.185000Z", "kind": "progress",
     "data": {"records_used": 48, "batches": 32, "epochs": 3, "cohort_size": 48}},
    {"seq": 9, "ts": "2026-12-02T17:02:41.020000Z", "kind": "metrics", "data": {"loss": 0.2816780209541321}},
    {"seq": 10, "ts": "2026-12-02T17:02:41.031000Z", "kind": "state",
     "data": {"state": "completed", "records_used": 48, "batches": 36, "epochs": 3, "cohort_size": 48}},
]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def fed(upto: int, epochs: int = 3) -> JobProgress:
    model = JobProgress(JOB, "north", epochs)
    for event in RECORDED[:upto]:
        model.update(event)
    return model


def test_bars_have_labels_and_numbers_while_it_runs():
    model = fed(7)  # epoch 2 has begun
    assert [bar.text() for bar in model.bars()] == ["epoch 2/3", "records 48/48", "batches 23/36"]
    now = at("2026-12-02T17:02:38.664000Z")
    assert model.elapsed(now) == pytest.approx(3.37, abs=0.01)
    # (1 epoch + 11 of its 12 batches) of 3: 63.9 % done in 3.37 s
    assert model.eta(now) == pytest.approx(3.37 * (1 - 23 / 36) / (23 / 36), abs=0.01)
    line = model.line(now)
    assert line == ("job 0b9f0000 at north | running | epoch 2/3 | records 48/48 | batches 23/36"
                    " | 0:03 elapsed, ETA 0:02")


def test_at_completion_the_bars_show_their_final_values_and_the_last_loss():
    model = fed(len(RECORDED))
    assert model.final and model.state_text() == "completed"
    assert [bar.text() for bar in model.bars()] == ["epoch 3/3", "records 48/48", "batches 36/36"]
    assert all(bar.fraction == 1.0 for bar in model.bars())
    assert model.metrics == {"loss": pytest.approx(0.28168, abs=1e-5)}
    assert model.eta() == 0.0 and model.elapsed() == pytest.approx(5.74, abs=0.01)  # frozen at the end
    assert model.line().endswith("| loss=0.2817 | 0:06 elapsed")


def test_epoch_one_eta_comes_from_records_and_an_unknown_end_from_nothing():
    model = fed(5)
    assert model.fraction() == pytest.approx(32 / 48 / 3)
    assert fed(2).eta() is None and fed(2).bars()[0].text() == "epoch 0/3"
    reattached = fed(7, epochs=0)  # %rapha_attach does not know how many were asked
    assert [bar.text() for bar in reattached.bars()] == ["epoch 2", "records 48/48", "batches 23"]
    assert reattached.eta() is None


@pytest.mark.parametrize("state,words", [("submitted", "queued at the edge"), ("denied", "denied"),
                                         ("failed", "failed"), ("cancelled", "cancelled")])
def test_states_are_shown_as_what_they_are(state, words):
    model = fed(3)
    model.update({"seq": 11, "ts": "2026-12-02T17:02:40Z", "kind": "state", "data": {"state": state}})
    assert model.state_text() == words and f"| {words} |" in model.line()
    if state != "submitted":
        assert model.final and model.eta() is None


def test_an_edge_that_stops_answering_is_not_shown_running():
    model = fed(7)
    model.lost("cannot reach the edge at http://127.0.0.1:1: connection refused")
    assert model.state_text() == "edge unreachable (last seen: running)"
    assert model.eta() is None and "ETA ?" in model.line()


def test_the_text_view_prints_each_step_once_and_the_final_values():
    stream = io.StringIO()
    view = ProgressLine(JOB, "north", 3, stream=stream)
    for event in RECORDED:
        view(event)
    view.finish({"loss": [0.61, 0.42, 0.2816780209541321]})
    lines = stream.getvalue().splitlines()
    assert [line.split(" | ")[1] for line in lines[:-1]] == ["queued at the edge"] + ["running"] * 5 + ["completed"]
    assert sum("epoch 2/3" in line for line in lines) == 1  # one line per epoch, not per update
    assert lines[-2].startswith("rapha: job 0b9f0000 at north | completed | epoch 3/3 | records 48/48 | batches 36/36")
    assert lines[-1] == "rapha: loss █▄▁  0.61 -> 0.2817 over 3 epochs"  # the released curve, in text


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_line_is_rewritten_in_place():
    stream = TTY()
    view = ProgressLine(JOB, "", 3, stream=stream, prefix="rapha run")
    for event in RECORDED:
        view(event)
    text = stream.getvalue()
    assert text.count("\r\033[K") >= 8 and text.endswith("\n") and text.count("\n") == 1
    assert text.rsplit("\r\033[K", 1)[1].startswith("rapha run: job 0b9f0000 | completed | epoch 3/3")


def tick_labels(svg: str) -> dict[str, list[str]]:
    root = ET.fromstring(svg[:svg.index("</svg>") + 6])
    found: dict[str, list[str]] = {}
    for element in root.iter("{http://www.w3.org/2000/svg}text"):
        found.setdefault(element.get("class", ""), []).append(element.text or "")
    return found


class FakeHandle:
    def __init__(self) -> None:
        self.updates = 0

    def update(self, view) -> None:
        self.updates += 1
        self.bundle = view._repr_mimebundle_()


def test_the_widget_shows_numbers_final_values_chart_axes_and_a_readable_text_form():
    handle = FakeHandle()
    shown = []
    widget = ProgressWidget(JOB, "north", 3, display=lambda view, display_id: shown.append(view) or handle)
    for event in RECORDED[:7]:
        widget(event)
    assert {label: number.value for label, (_, number) in widget.rows.items()} == \
        {"epoch": "2/3", "records": "48/48", "batches": "23/36"}
    assert widget.rows["epoch"][0].value == pytest.approx(2 / 3) and "running" in widget.header.value
    assert "loss is released after the output checks" in widget.chart.value and "<svg" not in widget.chart.value
    for event in RECORDED[7:]:
        widget(event)
    widget.finish({"loss": [0.61, 0.42, 0.2816780209541321]})
    assert {label: number.value for label, (_, number) in widget.rows.items()} == \
        {"epoch": "3/3", "records": "48/48", "batches": "36/36"}
    assert all(bar.value == 1.0 and bar.bar_style == "success" for bar, _ in widget.rows.values())
    assert "completed" in widget.header.value and "loss=0.2817" in widget.footer.value
    labels = tick_labels(widget.chart.value)
    assert labels["x-label"] == ["epoch"] and labels["y-label"] == ["loss"]  # one value per epoch asked
    assert labels["x-tick"] == ["1", "2", "3"] and len(labels["y-tick"]) >= 3
    # what a headless run (nbclient) saves as the display's text: the final line, readable
    assert shown == [widget] and handle.updates == 1
    assert handle.bundle["text/plain"].startswith("rapha: job 0b9f0000 at north | completed | epoch 3/3")
    assert "application/vnd.jupyter.widget-view+json" in handle.bundle


def test_the_widget_marks_a_cancelled_job_as_cancelled():
    widget = ProgressWidget(JOB, "", 3, display=lambda view, display_id: FakeHandle())
    for event in RECORDED[:6]:
        widget(event)
    widget({"seq": 7, "ts": "2026-12-02T17:02:39Z", "kind": "state",
            "data": {"state": "cancelled", "records_used": 48, "batches": 12, "epochs": 1, "cohort_size": 48}})
    widget.finish()
    assert "cancelled" in widget.header.value and "failed" not in widget.header.value
    assert {bar.bar_style for bar, _ in widget.rows.values()} == {"warning"}
    assert widget.rows["epoch"][1].value == "1/3"


def test_clock_reads_like_tqdm():
    assert [clock(s) for s in (0, 7.4, 750, 3723, None)] == ["0:00", "0:07", "12:30", "1:02:03", "?"]


def test_timestamps_from_the_edge_are_utc():
    model = fed(2)
    assert model.started == datetime(2026, 12, 2, 17, 2, 35, 292635, tzinfo=UTC)


def test_the_chart_fills_from_released_values_only():
    # Before release the events hold states and counters, never a metric value: nothing to draw.
    running = fed(8)
    assert running.curve() is None and running.metrics == {} and "loss" not in running.line()
    # finished, outputs held at the edge for the release checks: still nothing, and not final
    running.update({"seq": 9, "ts": "2026-12-02T17:02:40Z", "kind": "state", "data": {"state": "held"}})
    assert running.curve() is None and not running.final and running.state_text().startswith("ran; outputs held")
    assert running.eta() is None and "ETA" not in running.line()  # no guess at how long a decision takes
    # At release the released series is drawn whole: per epoch when it holds one value per
    # epoch asked (3 here), else per logged step.
    running.set_series({"loss": [0.61, 0.42, 0.28]})
    assert running.curve() == ("loss", [(1.0, 0.61), (2.0, 0.42), (3.0, 0.28)]) and running.x_label == "epoch"
    running.set_series({"loss": [0.7, 0.61, 0.5, 0.42, 0.3, 0.28]})
    assert running.x_label == "step"


def test_a_job_awaiting_approval_says_so_with_its_count():
    model = fed(2)
    model.update({"seq": 11, "ts": "2026-12-02T17:02:40Z", "kind": "state", "data": {"state": "awaiting_approval"}})
    assert model.state_text() == "awaiting approval by the hospital's data stewards before it runs"
    assert not model.final
    model.update({"seq": 12, "ts": "2026-12-02T17:02:41Z", "kind": "state",
                  "data": {"state": "awaiting_approval", "approvals": 1, "approvals_needed": 2}})
    assert model.state_text() == "awaiting approval before it runs (1/2 data steward approvals)"


# A DP job (shaped as a demo edge reports it): the trainer's Poisson lots over a 48-record
# cohort, 2 epochs of fit_private (the cell's --epochs is 1), 6 steps an epoch; the policy's
# budget while it runs, and what the trainer spent once the receipt released it.
PRIVATE = [
    {"seq": 1, "ts": "2026-12-02T17:02:35.000000Z", "kind": "state", "data": {"state": "running"}},
    {"seq": 2, "ts": "2026-12-02T17:02:36.000000Z", "kind": "progress",
     "data": {"records_used": 30, "batches": 4, "epochs": 1, "cohort_size": 48, "epochs_total": 2, "steps": 4,
              "steps_total": 12, "epsilon_target": 8.0, "delta": 0.001}},
    {"seq": 3, "ts": "2026-12-02T17:02:38.000000Z", "kind": "progress",
     "data": {"records_used": 47, "batches": 9, "epochs": 2, "cohort_size": 48, "epochs_total": 2, "steps": 9,
              "steps_total": 12, "epsilon_target": 8.0, "delta": 0.001}},
    {"seq": 4, "ts": "2026-12-02T17:02:40.000000Z", "kind": "state",
     "data": {"state": "completed", "records_used": 48, "batches": 12, "epochs": 2, "cohort_size": 48,
              "epochs_total": 2, "steps": 12, "steps_total": 12, "epsilon_target": 8.0, "epsilon_spent": 7.99,
              "delta": 0.001}},
]


def test_a_dp_job_shows_the_trainers_epochs_and_steps_and_its_budget():
    model = JobProgress(JOB, "north", 1)
    for event in PRIVATE[:3]:
        model.update(event)
    assert [bar.text() for bar in model.bars()] == ["epoch 2/2", "records 47/48", "steps 9/12"]
    assert model.fraction() == pytest.approx(9 / 12)
    assert "epsilon budget 8 (delta 0.001)" in model.line()
    model.update(PRIVATE[3])
    assert [bar.text() for bar in model.bars()][-1] == "steps 12/12"
    assert "epsilon 7.99 spent of 8 (delta 0.001)" in model.line()


def test_the_widget_labels_a_dp_jobs_third_bar_steps():
    widget = ProgressWidget(JOB, "north", 1, display=lambda view, display_id: FakeHandle())
    for event in PRIVATE:
        widget(event)
    bar, number = list(widget.rows.values())[2]
    assert bar.description == "steps" and number.value == "12/12"
    assert "epsilon 7.99 spent of 8" in widget.footer.value
