"""Routing across two real edges, the event stream across a reconnect, and refused catalogs."""

from __future__ import annotations

import json

import pytest

from jupyter_rapha.client import EdgeClient
from tests.extension.test_api import GOOD_CELL, call, submit, wait_final

pytestmark = pytest.mark.slow

SLOW_CELL = ("import time, torch\nfor epoch in range(rapha.epochs):\n    for b in rapha.loader(batch_size=2):\n"
             "        time.sleep(0.05)\n    rapha.log(loss=1.0 / (epoch + 1), epoch=epoch)\n"
             "rapha.save({'w': torch.zeros(2)})\n")


async def test_routes_by_catalog_site_and_all(jp_fetch, two_edges, researcher_key):
    [only_north] = await submit(jp_fetch, dataset="cxr-north")
    [only_south] = await submit(jp_fetch, dataset="cxr-south")
    [chosen] = await submit(jp_fetch, dataset="synthetic-cxr", site="south")
    everywhere = await submit(jp_fetch, dataset="synthetic-cxr", sites="all")
    assert (only_north["site"], only_south["site"], chosen["site"]) == ("north", "south", "south")
    assert sorted(j["site"] for j in everywhere) == ["north", "south"]
    assert len({j["job_id"] for j in everywhere}) == 2  # one job per site, each its own spec and nonce

    # Each job really ran at the edge it was routed to, and nowhere else.
    for job in (only_north, only_south, chosen, *everywhere):
        status = await wait_final(jp_fetch, job["job_id"])
        assert status["state"] == "completed", status
        ids = {j["job_id"] for j in EdgeClient(two_edges[job["site"]].url, researcher_key).jobs()}
        other = "north" if job["site"] == "south" else "south"
        assert job["job_id"] in ids
        assert job["job_id"] not in {j["job_id"] for j in EdgeClient(two_edges[other].url, researcher_key).jobs()}

    code, listed = await call(jp_fetch, "GET", "jobs")
    assert code == 200
    sites = {j["job_id"]: j["site"] for j in listed["jobs"]}
    assert all(sites[j["job_id"]] == j["site"] for j in (only_north, only_south, chosen, *everywhere))
    code, receipt = await call(jp_fetch, "GET", f"jobs/{chosen['job_id']}/receipt")
    assert code == 200 and receipt["envelope"]["payloadType"]
    weights = await jp_fetch("rapha", "api", "jobs", chosen["job_id"], "weights")
    assert weights.headers["Content-Type"] == "application/octet-stream" and len(weights.body) > 0
    # The side panel's "verify": the receipt checked by the server against the pinned key.
    code, report = await call(jp_fetch, "GET", f"jobs/{chosen['job_id']}/verify")
    assert code == 200 and report["ok"] and report["site"] == "south", report
    names = [c["name"] for c in report["checks"]]
    assert {"signature", "weights", "anchor"} <= set(names), names
    assert all(c["status"] in ("pass", "warn") for c in report["checks"]), report["checks"]


@pytest.mark.parametrize("rapha_config,expected", [({"routing": "first"}, ["north"]),
                                                    ({"routing": "all"}, ["north", "south"])],
                         indirect=["rapha_config"])
async def test_routing_choice_from_config(jp_fetch, rapha_config, expected):
    jobs = await submit(jp_fetch, dataset="synthetic-cxr", code="x = 1\n")
    assert sorted(j["site"] for j in jobs) == expected


async def read_events(ws, count=None):
    events = []
    while count is None or len(events) < count:
        message = await ws.read_message()
        if message is None:
            break
        events.append(json.loads(message))
    return events


async def test_events_in_order_none_lost_across_reconnect(jp_fetch, jp_ws_fetch, two_edges, researcher_key):
    [job] = await submit(jp_fetch, dataset="cxr-north", code=SLOW_CELL, budget=16, epochs=3)
    ws = await jp_ws_fetch("rapha", "api", "jobs", job["job_id"], "events")
    first = await read_events(ws, count=2)
    ws.close()  # the notebook closes mid-job ...
    ws = await jp_ws_fetch("rapha", "api", "jobs", job["job_id"], "events",
                           params={"after": str(first[-1]["seq"])})  # ... and resumes where it stopped
    rest = await read_events(ws)
    events = first + rest
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "state" and events[0]["data"]["state"] == "submitted"
    assert events[-1] == {**events[-1], "kind": "state", "data": {**events[-1]["data"], "state": "completed"}}
    assert "progress" in kinds and "metrics" in kinds
    records = [e["data"]["records_used"] for e in events if e["kind"] == "progress"]
    assert records == sorted(records) and records[-1] == 16
    # Nothing lost: exactly what the edge logged, and only states, counters and finite numbers.
    logged = EdgeClient(two_edges["north"].url, researcher_key).events(job["job_id"], 0)["events"]
    assert [e["seq"] for e in logged] == [e["seq"] for e in events]
    for event in events:
        assert all(isinstance(v, (int, float)) or k == "state" for k, v in event["data"].items()), event


async def test_events_of_unknown_job_end_with_404(jp_ws_fetch):
    ws = await jp_ws_fetch("rapha", "api", "jobs", "0" * 32, "events")
    [message] = await read_events(ws)
    assert message["kind"] == "error" and message["status"] == 404


@pytest.mark.parametrize("rapha_config", [{"edge_client_class": f"tests.extension.fakes.{client}"}
                                          for client in ("FlippedByteClient", "ForeignSignedClient")], indirect=True)
async def test_tampered_catalog_refused(jp_fetch, rapha_config):
    code, data = await call(jp_fetch, "GET", "datasets")
    assert code == 200 and data["datasets"] == []  # nothing from an untrusted catalog is offered
    assert set(data["refused"]) == {"north", "south"}
    assert all("not signed by its pinned key" in why for why in data["refused"].values())
    code, edges = await call(jp_fetch, "GET", "edges")
    assert all(e["catalog"] == "refused" and not e["healthy"] for e in edges["edges"])
    for body in ({"dataset": "synthetic-cxr"}, {"dataset": "lure"}, {"dataset": "synthetic-cxr", "site": "north"}):
        code, data = await call(jp_fetch, "POST", "jobs", {"code": GOOD_CELL, "budget": 4, **body})
        assert code in (404, 502), data  # no job is sent on the strength of a bad catalog
    code, data = await call(jp_fetch, "POST", "jobs", {"code": GOOD_CELL, "budget": 4, "dataset": "synthetic-cxr",
                                                       "site": "north"})
    assert code == 502 and data["error"]["kind"] == "CatalogRefused"
